"""Pack Python values into the bits of an Amaranth shape, and unpack them again.

The testbenches and the host-side case generators use the **same** ``data.Layout``
objects the RTL declares its stream payloads with, so no bit offset is ever written by
hand: field offsets come from the layout itself.

* A plain shape (``signed(8)``, ``unsigned(15)``) packs an ``int`` (two's complement).
* A ``data.StructLayout`` packs a ``dict`` of its fields, a ``data.ArrayLayout`` a
  sequence of its elements; nesting works.

These functions need only Amaranth (no simulator) and work on Python ints of any width.
They live in ``convforge.hw`` because the compiler, the driver and the testbenches all
pack with them (ARCHITECTURE.md: packing belongs to ``hw``, not to the testbenches).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from amaranth.hdl import Shape
from amaranth.lib import data

from convforge.errors import LayoutError


def shape_width(shape: Any) -> int:
    """Width in bits of a shape or layout."""
    if isinstance(shape, data.Layout):
        return shape.size
    return Shape.cast(shape).width


def pack(shape: Any, value: Any) -> int:
    """The non-negative integer whose bits are ``value`` laid out as ``shape``.

    Raises:
        LayoutError: a value does not fit its field (names the field path).
    """
    return _pack(shape, value, "payload")


def _pack(shape: Any, value: Any, path: str) -> int:
    if isinstance(shape, data.Layout):
        if isinstance(shape, data.ArrayLayout):
            if not isinstance(value, Sequence) and not hasattr(value, "__len__"):
                raise LayoutError(f"{path}: expected a sequence of {shape.length} elements")
            if len(value) != shape.length:
                raise LayoutError(
                    f"{path}: expected {shape.length} elements, got {len(value)}")
            items = enumerate(value)
        elif isinstance(value, Mapping):
            items = value.items()
        else:
            raise LayoutError(f"{path}: expected a dict of fields for {shape!r}")
        bits = 0
        for key, item in items:
            fld = shape[key]
            bits |= _pack(fld.shape, item, f"{path}[{key!r}]") << fld.offset
        return bits
    s = Shape.cast(shape)
    v = int(value)
    lo, hi = (-(1 << (s.width - 1)), (1 << (s.width - 1)) - 1) if s.signed else (0, (1 << s.width) - 1)
    if not lo <= v <= hi:
        raise LayoutError(f"{path}: value {v} does not fit {s!r} [{lo}, {hi}]")
    return v & ((1 << s.width) - 1)


def unpack(shape: Any, bits: int) -> Any:
    """Inverse of :func:`pack`: an ``int``, ``dict`` or ``list`` from raw bits."""
    if isinstance(shape, data.Layout):
        fields = [(key, unpack(fld.shape, (bits >> fld.offset) & ((1 << shape_width(fld.shape)) - 1)))
                  for key, fld in shape]
        if isinstance(shape, data.ArrayLayout):
            return [v for _, v in fields]
        return dict(fields)
    s = Shape.cast(shape)
    v = int(bits) & ((1 << s.width) - 1)
    if s.signed and s.width and v >> (s.width - 1):
        v -= 1 << s.width
    return v
