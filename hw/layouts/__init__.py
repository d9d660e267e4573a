"""Shared hardware layouts: the one definition of what crosses a unit, bus or register
boundary.

* :mod:`~convforge.hw.layouts.csr` -- the CSR register map (generated from
  ``hw/regmap/convforge.rdl``; standard library only, the driver imports it on a board).

Submodules load lazily (``convforge.hw.layouts.csr`` must not pull Amaranth in on a board).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["csr"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
