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

import numpy as np
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


# -- vectorised codec: many records of one layout at once ----------------------------------
#
# ``records`` mirror the layout: a ``StructLayout`` takes a mapping of its fields, an
# ``ArrayLayout`` an array whose axis 1 indexes its elements (axis 0 is the record), a
# scalar shape an integer array of shape ``(N,)``. Bits are stored little-endian: bit ``b``
# of a record is bit ``b % 8`` of byte ``b // 8`` (what a little-endian AXI bus delivers).


def layout_bytes(shape: Any) -> int:
    """Bytes one record of ``shape`` occupies (its width rounded up to whole bytes)."""
    return (shape_width(shape) + 7) // 8


def _scalar(shape: Any) -> Shape | None:
    if isinstance(shape, data.Layout):
        return None
    return Shape.cast(shape)


def _pack_into(shape: Any, value: Any, bits: np.ndarray, offset: int, path: str) -> None:
    n = bits.shape[0]
    if isinstance(shape, data.ArrayLayout):
        arr = value if isinstance(value, Mapping) else np.asarray(value)
        elem = _scalar(shape.elem_shape)
        if elem is not None and not isinstance(arr, Mapping):
            if arr.shape[:2] != (n, shape.length):
                raise LayoutError(f"{path}: expected shape ({n}, {shape.length}, ...), got {arr.shape}")
            _pack_scalar(elem, arr.reshape(n, shape.length), bits, offset, path)
            return
        for i in range(shape.length):
            item = {k: np.asarray(v)[:, i] for k, v in arr.items()} if isinstance(arr, Mapping) else arr[:, i]
            _pack_into(shape.elem_shape, item, bits, offset + i * shape_width(shape.elem_shape), f"{path}[{i}]")
        return
    if isinstance(shape, data.Layout):
        if not isinstance(value, Mapping):
            raise LayoutError(f"{path}: expected a mapping of fields for {shape!r}")
        for key, fld in shape:
            if key not in value:
                continue  # absent fields are zero
            _pack_into(fld.shape, value[key], bits, offset + fld.offset, f"{path}[{key!r}]")
        unknown = set(value) - {key for key, _ in shape}
        if unknown:
            raise LayoutError(f"{path}: unknown field(s) {sorted(unknown)}")
        return
    _pack_scalar(Shape.cast(shape), np.broadcast_to(np.asarray(value), (n,)).reshape(n, 1), bits, offset, path)


def _pack_scalar(s: Shape, values: np.ndarray, bits: np.ndarray, offset: int, path: str) -> None:
    """Pack ``values`` (N, k) of one scalar shape at ``offset``, ``offset + w``, ..."""
    n, k = values.shape
    v = values.astype(np.int64, copy=False)
    lo, hi = (-(1 << (s.width - 1)), (1 << (s.width - 1)) - 1) if s.signed else (0, (1 << s.width) - 1)
    if v.size and (v.min() < lo or v.max() > hi):
        bad = v[(v < lo) | (v > hi)][0]
        raise LayoutError(f"{path}: value {int(bad)} does not fit {s!r} [{lo}, {hi}]")
    shifts = np.arange(s.width, dtype=np.int64)
    field_bits = ((v[:, :, None] >> shifts) & 1).astype(np.uint8)  # two's complement bits
    bits[:, offset:offset + k * s.width] = field_bits.reshape(n, k * s.width)


def pack_array(shape: Any, records: Any, count: int | None = None) -> np.ndarray:
    """Pack ``N`` records of ``shape`` at once; returns ``uint8 (N, layout_bytes(shape))``.

    Field offsets come from the layout itself (no offset is written by hand). ``count``
    gives ``N`` when it cannot be read off the first field. Missing struct fields pack as
    zero. Raises :class:`LayoutError` naming the field path of a value that does not fit.
    """
    n = count if count is not None else _record_count(records)
    bits = np.zeros((n, layout_bytes(shape) * 8), dtype=np.uint8)
    _pack_into(shape, records, bits, 0, "record")
    return np.packbits(bits, axis=1, bitorder="little")


def _record_count(records: Any) -> int:
    if isinstance(records, Mapping):
        for value in records.values():
            return _record_count(value)
        raise LayoutError("pack_array: empty record mapping and no count given")
    return int(np.asarray(records).shape[0])


def _unpack_from(shape: Any, bits: np.ndarray, offset: int) -> Any:
    n = bits.shape[0]
    if isinstance(shape, data.ArrayLayout):
        elem = _scalar(shape.elem_shape)
        if elem is not None:
            return _unpack_scalar(elem, bits, offset, shape.length).reshape(n, shape.length)
        ew = shape_width(shape.elem_shape)
        items = [_unpack_from(shape.elem_shape, bits, offset + i * ew) for i in range(shape.length)]
        if isinstance(items[0], dict):
            return {k: np.stack([it[k] for it in items], axis=1) for k in items[0]}
        return np.stack(items, axis=1)
    if isinstance(shape, data.Layout):
        return {key: _unpack_from(fld.shape, bits, offset + fld.offset) for key, fld in shape}
    return _unpack_scalar(Shape.cast(shape), bits, offset, 1).reshape(n)


def _unpack_scalar(s: Shape, bits: np.ndarray, offset: int, k: int) -> np.ndarray:
    n = bits.shape[0]
    fb = bits[:, offset:offset + k * s.width].reshape(n, k, s.width).astype(np.int64)
    v = fb @ (np.int64(1) << np.arange(s.width, dtype=np.int64))
    if s.signed and s.width:
        v = np.where(v >> (s.width - 1), v - (np.int64(1) << s.width), v)
    return v


def unpack_array(shape: Any, raw: np.ndarray) -> Any:
    """Inverse of :func:`pack_array`: ``raw`` is ``uint8 (N, >= layout_bytes(shape))``.

    Returns int64 arrays in the nesting of ``shape`` (a dict for a struct, an array with
    the elements on axis 1 for an array layout of scalars).
    """
    raw = np.asarray(raw, dtype=np.uint8)
    if raw.ndim != 2 or raw.shape[1] < layout_bytes(shape):
        raise LayoutError(
            f"unpack_array: need uint8 (N, >= {layout_bytes(shape)}) bytes for this layout, got {raw.shape}"
        )
    bits = np.unpackbits(raw, axis=1, bitorder="little")
    return _unpack_from(shape, bits, 0)
