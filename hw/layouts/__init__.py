"""Every packed word and register of the accelerator, defined once.

* :mod:`~convforge.hw.layouts.program` -- the Program's words (descriptor, operand view,
  weight tiles, requant and depthwise parameter words, opcodes, fault codes) as
  ``amaranth.lib.data`` layouts; pack and unpack them with :mod:`convforge.hw.packing`.
* :mod:`~convforge.hw.layouts.csr` -- the CSR register map (generated from
  ``hw/regmap/convforge.rdl``; standard library only, the driver imports it on a board).

Submodules and the program names re-exported here load lazily
(``convforge.hw.layouts.csr`` must not pull Amaranth in on a board).
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("csr", "program")
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

__all__ = [*_SUBMODULES, *_PROGRAM_NAMES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _PROGRAM_NAMES:
        return getattr(importlib.import_module(f"{__name__}.program"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
