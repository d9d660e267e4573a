"""Shared hardware layouts: the one definition of what crosses a unit, bus or register
boundary.

* :mod:`~convforge.hw.layouts.program` -- every packed word of the Program, as
  ``amaranth.lib.data`` layouts (descriptor, operand view, weight tiles, requant and
  depthwise parameter words, opcodes, fault codes); pack and unpack them with
  :mod:`convforge.hw.packing`. Its names are re-exported here.
* :mod:`~convforge.hw.layouts.csr` -- the CSR register map (generated from
  ``hw/regmap/convforge.rdl``; standard library only).

Submodules load lazily, on first use of one of their names: importing
``convforge.hw.layouts.csr`` does not pull Amaranth in.
"""

from __future__ import annotations

import importlib
from typing import Any

_PROGRAM_NAMES = (
    "ADDR_BITS",
    "DESCRIPTOR_BYTES",
    "DIM_BITS",
    "DW_OPCODES",
    "PE_OPCODES",
    "TABLE_ALIGN",
    "Fault",
    "Opcode",
    "config_tag",
    "descriptor_layout",
    "dw_channel_word_layout",
    "requant_word_layout",
    "view_layout",
    "weight_tile_bytes",
    "weight_tile_layout",
)

__all__ = ["csr", "program", *_PROGRAM_NAMES]


def __getattr__(name: str) -> Any:
    if name in ("csr", "program"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in _PROGRAM_NAMES:
        return getattr(importlib.import_module(f"{__name__}.program"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
