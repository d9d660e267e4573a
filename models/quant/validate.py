"""The QGraph rules (INTEGER_SPEC v1.1 §2-§6, docs/qgraph.md), checked in one place.

:meth:`convforge.models.quant.qgraph.QGraph.validate` calls :func:`validate_graph`; load,
export and the compiler go through it. Every rule raises a ``QGraphFormatError`` naming the
layer (or tensor) and the field, and what would make it valid. NumPy only (no torch), so
the board-side emulator and driver can validate a graph too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from convforge.errors import QGraphFormatError
from convforge.models.quant.intops import INT64_MAX, M_MAX, M_MIN, S_MAX, S_MIN, weight_range

if TYPE_CHECKING:
    from convforge.models.quant.qgraph import Layer, QGraph, TensorType

#: Activation widths a tensor may declare (the spec's activations are 8 bits; narrower
#: QAT widths and 16-bit intermediates are representable).
BITS_RANGE = (2, 16)
#: Weight widths (spec §2: 4 by default, 8 for the first layer).
W_BITS_RANGE = (2, 8)
#: Bias is int32 (spec §2).
BIAS_RANGE = (-(1 << 31), (1 << 31) - 1)
#: A dilation map is uint8 (spec §2).
D_MAX_RANGE = (0, 255)


class _Checker:
    """Collects the context (file, layer) for messages."""

    def __init__(self, source: str | None) -> None:
        self.prefix = f"{source}: " if source else ""

    def fail(self, where: str, msg: str) -> None:
        raise QGraphFormatError(f"{self.prefix}{where}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _int(ck: _Checker, where: str, field: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
    if not _is_int(v):
        ck.fail(where, f"field {field!r} must be an integer, got {v!r} ({type(v).__name__})")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        ck.fail(where, f"field {field!r} = {v} is outside {rng}")
    return v


def _pair(ck: _Checker, where: str, field: str, v: Any, lo: int, hi: int | None = None) -> tuple[int, int]:
    """An int or an ``[h, w]`` list of ints, each in ``[lo, hi]``."""
    if _is_int(v):
        v = [v, v]
    if not isinstance(v, list | tuple) or len(v) != 2:
        ck.fail(where, f"field {field!r} must be an integer or a pair [h, w], got {v!r}")
    return _int(ck, where, field, v[0], lo, hi), _int(ck, where, field, v[1], lo, hi)


# -- per-op attribute schemas: field -> checker(ck, where, field, value) -> parsed value ---

_Rule = Callable[[_Checker, str, str, Any], Any]


def _ge(lo: int, hi: int | None = None) -> _Rule:
    return lambda ck, where, f, v: _int(ck, where, f, v, lo, hi)


def _pair_ge(lo: int, hi: int | None = None) -> _Rule:
    return lambda ck, where, f, v: _pair(ck, where, f, v, lo, hi)


def _any_int(ck: _Checker, where: str, f: str, v: Any) -> int:
    return _int(ck, where, f, v)


def _sizes(ck: _Checker, where: str, f: str, v: Any) -> list[int]:
    if not isinstance(v, list | tuple) or not v:
        ck.fail(where, f"field {f!r} must be a non-empty list of channel counts, got {v!r}")
    return [_int(ck, where, f, s, 1) for s in v]


_W_BITS = _ge(*W_BITS_RANGE)
#: Required attributes of each op (and nothing else may appear).
ATTRS: dict[str, dict[str, _Rule]] = {
    "conv": {"kernel": _pair_ge(1), "stride": _pair_ge(1), "padding": _pair_ge(0), "dilation": _pair_ge(1),
             "groups": _ge(1), "w_bits": _W_BITS, "lo": _any_int, "hi": _any_int},
    "square_deform_dw": {"stride": _ge(1), "d_max": _ge(*D_MAX_RANGE), "w_bits": _W_BITS,
                         "lo": _any_int, "hi": _any_int},
    "bilinear_deform": {"stride": _pair_ge(1), "padding": _pair_ge(0), "dilation": _pair_ge(1),
                        "groups": _ge(1), "F": _ge(0, 7), "R": _ge(0), "w_bits": _W_BITS,
                        "lo": _any_int, "hi": _any_int},
    "add": {"lo": _any_int, "hi": _any_int},
    "concat": {},
    "split": {"sizes": _sizes},
    "shuffle": {"groups": _ge(1)},
    "upsample2x": {},
    "maxpool": {"kernel": _ge(1), "stride": _ge(1), "padding": _ge(0)},
}
#: Number of inputs of each op (None: one or more).
N_INPUTS = {"conv": 1, "square_deform_dw": 2, "bilinear_deform": 2, "add": 2, "concat": None, "split": 1,
            "shuffle": 1, "upsample2x": 1, "maxpool": 1}
#: Params of each op (exactly these).
PARAMS = {
    "conv": ("weight", "bias", "M", "S"),
    "square_deform_dw": ("weight", "bias", "M", "S"),
    "bilinear_deform": ("weight", "bias", "M", "S"),
    "add": ("Ma", "Mb", "S"),
}


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def validate_graph(graph: QGraph, source: str | None = None) -> None:
    """Raise ``QGraphFormatError`` for the first rule ``graph`` breaks (see ``QGraph.validate``)."""
    ck = _Checker(source)
    if not isinstance(graph.tensors, dict) or not isinstance(graph.layers, list):
        ck.fail("graph", "'tensors' must be a mapping and 'layers' a list")
    for name, tt in graph.tensors.items():
        _check_tensor(ck, name, tt)
    if not isinstance(graph.input, str) or graph.input not in graph.tensors:
        ck.fail("graph", f"input tensor {graph.input!r} has no entry in 'tensors'")
    inp = graph.tensors[graph.input]
    if (inp.bits, inp.signed) != (8, False) or inp.shape[0] != 3:
        ck.fail(f"tensor {graph.input!r}", f"the input must be uint8 RGB (3, H, W), got bits={inp.bits}, "
                f"signed={inp.signed}, shape={inp.shape} (INTEGER_SPEC §2)")
    if not isinstance(graph.meta, dict):
        ck.fail("graph", f"'meta' must be a mapping, got {type(graph.meta).__name__}")
    written = {graph.input: None}
    producers: dict[str, Layer] = {}
    names: set[str] = set()
    for layer in graph.layers:
        where = f"layer {layer.name!r} ({layer.op})"
        if not isinstance(layer.name, str) or not layer.name:
            ck.fail(f"layer {layer.name!r}", "field 'name' must be a non-empty string")
        if layer.name in names:
            ck.fail(where, "duplicate layer name")
        names.add(layer.name)
        for field in ("inputs", "outputs"):
            v = getattr(layer, field)
            if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
                ck.fail(where, f"field {field!r} must be a list of tensor names, got {v!r}")
        for t in layer.inputs:
            if t not in written:
                ck.fail(where, f"reads tensor {t!r} before any layer writes it (layers must be in topological order)")
        for t in layer.outputs:
            if t not in graph.tensors:
                ck.fail(where, f"writes tensor {t!r}, which has no entry in 'tensors'")
            if t in written:
                ck.fail(where, f"writes tensor {t!r}, which is already written by an earlier layer or is the input")
            written[t] = None
            producers[t] = layer
        attrs = _check_attrs(ck, where, layer)
        _check_params(ck, where, layer)
        _check_layer(ck, where, layer, attrs, graph, producers)
    if not isinstance(graph.outputs, dict) or not graph.outputs:
        ck.fail("graph", "'outputs' must be a non-empty mapping {head: tensor}")
    for head, t in graph.outputs.items():
        if t not in written:
            ck.fail(f"output {head!r}", f"names tensor {t!r}, which no layer writes")


def _check_tensor(ck: _Checker, name: str, tt: TensorType) -> None:
    where = f"tensor {name!r}"
    shape = tt.shape
    if not isinstance(shape, tuple | list) or len(shape) != 3:
        ck.fail(where, f"field 'shape' must be [C, H, W], got {shape!r}")
    for v in shape:
        _int(ck, where, "shape", v, 1)
    _int(ck, where, "bits", tt.bits, *BITS_RANGE)
    if not isinstance(tt.signed, bool | np.bool_):
        ck.fail(where, f"field 'signed' must be true or false, got {tt.signed!r}")
    if (
        isinstance(tt.scale, bool)
        or not isinstance(tt.scale, int | float | np.floating | np.integer)
        or not math.isfinite(float(tt.scale))
        or float(tt.scale) <= 0
    ):
        ck.fail(where, f"field 'scale' must be a finite positive number, got {tt.scale!r}")


def _check_attrs(ck: _Checker, where: str, layer: Layer) -> dict[str, Any]:
    if not isinstance(layer.attrs, dict):
        ck.fail(where, f"field 'attrs' must be a mapping, got {type(layer.attrs).__name__}")
    schema = ATTRS[layer.op]
    unknown = sorted(set(layer.attrs) - set(schema))
    if unknown:
        ck.fail(where, f"unknown attribute(s) {unknown}; {layer.op} takes {sorted(schema) or 'none'}")
    parsed = {}
    for field, rule in schema.items():
        if field not in layer.attrs:
            ck.fail(where, f"required attribute {field!r} is missing ({layer.op} needs {sorted(schema)})")
        parsed[field] = rule(ck, where, field, layer.attrs[field])
    n_in = N_INPUTS[layer.op]
    if (n_in is None and not layer.inputs) or (n_in is not None and len(layer.inputs) != n_in):
        ck.fail(where, f"has {len(layer.inputs)} inputs, {layer.op} takes {n_in or 'one or more'}")
    n_out = len(parsed["sizes"]) if layer.op == "split" else 1
    if len(layer.outputs) != n_out:
        ck.fail(where, f"has {len(layer.outputs)} outputs, expected {n_out}")
    return parsed


def _check_params(ck: _Checker, where: str, layer: Layer) -> None:
    if not isinstance(layer.params, dict):
        ck.fail(where, "field 'params' must be a mapping")
    want = PARAMS.get(layer.op, ())
    missing = [p for p in want if p not in layer.params]
    extra = sorted(set(layer.params) - set(want))
    if missing:
        ck.fail(where, f"lacks param(s) {missing} ({layer.op} needs {list(want) or 'none'})")
    if extra:
        ck.fail(where, f"unknown param(s) {extra} ({layer.op} takes {list(want) or 'none'})")
    for key in want:
        arr = layer.params[key]
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu":
            dtype = getattr(arr, "dtype", type(arr).__name__)
            ck.fail(where, f"param {key!r} must be an integer NumPy array, got {dtype}")


def _shape(ck: _Checker, where: str, key: str, arr: np.ndarray, expected: tuple[int, ...]) -> None:
    if tuple(arr.shape) != tuple(expected):
        ck.fail(where, f"param {key!r} has shape {list(arr.shape)}, the tensor table implies {list(expected)}")


def _span(arr: np.ndarray) -> tuple[int, int]:
    return (int(arr.min()), int(arr.max())) if arr.size else (0, 0)


def _in_range(ck: _Checker, where: str, key: str, arr: np.ndarray, lo: int, hi: int, why: str) -> None:
    a, b = _span(arr)
    if a < lo or b > hi:
        bad = np.argwhere((arr < lo) | (arr > hi))[0]
        example = f"e.g. {int(arr[tuple(bad)])} at index {tuple(int(i) for i in bad)}"
        ck.fail(where, f"param {key!r} spans [{a}, {b}] ({example}), outside [{lo}, {hi}] ({why})")


def _check_m_s(ck: _Checker, where: str, key_m: str, m: np.ndarray, s: np.ndarray) -> None:
    bad = (m != 0) & ((m < M_MIN) | (m > M_MAX))
    if bad.any():
        ck.fail(where, f"param {key_m!r} holds {int(m[bad][0])}; multipliers are 0 or in [{M_MIN}, {M_MAX}] "
                "(INTEGER_SPEC §3)")
    _in_range(ck, where, "S", s, S_MIN, S_MAX, "INTEGER_SPEC §3")


def _lo_hi(ck: _Checker, where: str, attrs: dict[str, Any], out: TensorType) -> tuple[int, int]:
    lo, hi = attrs["lo"], attrs["hi"]
    if lo > hi:
        ck.fail(where, f"fields 'lo' = {lo} and 'hi' = {hi}: lo must not exceed hi")
    if lo < out.lo or hi > out.hi:
        kind = ("int" if out.signed else "uint") + str(out.bits)
        ck.fail(where, f"fields 'lo'/'hi' = [{lo}, {hi}] leave the output type {kind} [{out.lo}, {out.hi}]")
    return lo, hi


def _x_max(tt: TensorType) -> int:
    return max(abs(tt.lo), abs(tt.hi))


def _check_bound(ck: _Checker, where: str, acc_bound: np.ndarray, m: np.ndarray, s: np.ndarray, what: str) -> None:
    """§6: per channel, ``acc_bound * M + 2**(S-1)`` (as Python ints) below ``2**63``."""
    for c, (a, mc, sc) in enumerate(zip(acc_bound.tolist(), m.tolist(), s.tolist(), strict=True)):
        total = int(a) * int(mc) + ((1 << (int(sc) - 1)) if sc > 0 else 0)
        if total > INT64_MAX:
            ck.fail(where, f"worst-case {what} = {int(a)} * M = {int(mc)} reaches {total} >= 2**63 at channel {c}; "
                    "the int64 reference would wrap (INTEGER_SPEC §6) -- re-export with smaller weights or bias")


def _acc_bound(weight: np.ndarray, bias: np.ndarray, x_max: int, frac: int = 0) -> np.ndarray:
    """Worst-case ``|acc + bias|`` per output channel, as Python-int-exact object array."""
    w = np.abs(weight.astype(object)).reshape(weight.shape[0], -1).sum(axis=1)
    return w * (x_max << frac) + np.abs(bias.astype(object))


def _check_layer(
    ck: _Checker, where: str, layer: Layer, attrs: dict[str, Any], graph: QGraph, producers: dict[str, Layer]
) -> None:
    T = graph.tensors
    ins = [T[t] for t in layer.inputs]
    outs = [T[t] for t in layer.outputs]
    op, p = layer.op, layer.params
    if op in ("conv", "square_deform_dw", "bilinear_deform"):
        x, y = ins[0], outs[0]
        c_in, h, w = x.shape
        o = y.shape[0]
        weight, bias, m, s = p["weight"], p["bias"], p["M"], p["S"]
        if op == "conv":
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (attrs[k] for k in ("kernel", "stride", "padding", "dilation"))
            g = attrs["groups"]
            ho, wo = _conv_out(h, kh, sh, ph, dh), _conv_out(w, kw, sw, pw, dw)
            w_shape = (o, c_in // g, kh, kw)
            frac = 0
        elif op == "square_deform_dw":
            st = attrs["stride"]
            g, ho, wo = c_in, (h - 1) // st + 1, (w - 1) // st + 1
            w_shape = (c_in, 1, 3, 3)
            frac = 0
            dmap = ins[1]
            if tuple(dmap.shape) != (1, ho, wo):
                ck.fail(where, f"dilation map {layer.inputs[1]!r} has shape {dmap.shape}, expected {(1, ho, wo)}")
            producer = producers.get(layer.inputs[1])
            _check_map_producer(ck, where, producer, 0, attrs["d_max"], "dilation map", "[0, d_max]")
        else:
            (sh, sw), (ph, pw), (dh, dw) = (attrs[k] for k in ("stride", "padding", "dilation"))
            g, frac = attrs["groups"], 2 * attrs["F"]
            ho, wo = _conv_out(h, 3, sh, ph, dh), _conv_out(w, 3, sw, pw, dw)
            w_shape = (o, c_in // g, 3, 3)
            limit = attrs["R"] << attrs["F"]
            if limit > 127:
                ck.fail(where, f"fields 'R' = {attrs['R']}, 'F' = {attrs['F']}: R*2**F = {limit} must be <= 127 "
                        "(offsets are int8, INTEGER_SPEC §2)")
            if tuple(ins[1].shape) != (18, ho, wo):
                ck.fail(where, f"offset map {layer.inputs[1]!r} has shape {ins[1].shape}, expected {(18, ho, wo)}")
            producer = producers.get(layer.inputs[1])
            _check_map_producer(ck, where, producer, -limit, limit, "offset map", "[-R*2**F, R*2**F]")
        if c_in % g or o % g:
            ck.fail(where, f"field 'groups' = {g} must divide the {c_in} input and {o} output channels")
        if op == "square_deform_dw" and o != c_in:
            ck.fail(where, f"output tensor has {o} channels; a depthwise layer keeps its {c_in}")
        if tuple(y.shape) != (o, ho, wo):
            ck.fail(where, f"output tensor {layer.outputs[0]!r} has shape {y.shape}, the input {x.shape} and the "
                    f"attributes give {(o, ho, wo)}")
        _shape(ck, where, "weight", weight, w_shape)
        for key in ("bias", "M", "S"):
            _shape(ck, where, key, p[key], (o,))
        lo_w, hi_w = weight_range(attrs["w_bits"])
        _in_range(ck, where, "weight", weight, lo_w, hi_w, f"w_bits = {attrs['w_bits']}, INTEGER_SPEC §2")
        _in_range(ck, where, "bias", bias, *BIAS_RANGE, "int32, INTEGER_SPEC §2")
        _check_m_s(ck, where, "M", m, s)
        _lo_hi(ck, where, attrs, y)
        _check_bound(ck, where, _acc_bound(weight, bias, _x_max(x), frac), m, s, "|acc + bias|")
    elif op == "add":
        a, b = ins
        y = outs[0]
        if tuple(a.shape) != tuple(b.shape) or tuple(y.shape) != tuple(a.shape):
            ck.fail(where, f"inputs {a.shape} and {b.shape} and output {y.shape} must have one shape")
        for key in ("Ma", "Mb", "S"):
            _shape(ck, where, key, p[key], (1,))
        for key in ("Ma", "Mb"):
            _in_range(ck, where, key, p[key], 0, M_MAX, "15-bit multiplier, INTEGER_SPEC §3")
        _in_range(ck, where, "S", p["S"], S_MIN, S_MAX, "INTEGER_SPEC §3")
        _lo_hi(ck, where, attrs, y)
        ma, mb, sv = int(p["Ma"][0]), int(p["Mb"][0]), int(p["S"][0])
        total = _x_max(a) * ma + _x_max(b) * mb + ((1 << (sv - 1)) if sv > 0 else 0)
        if total > INT64_MAX:
            ck.fail(where, f"worst-case |a*Ma + b*Mb| reaches {total} >= 2**63 (INTEGER_SPEC §6)")
    elif op == "concat":
        first = ins[0]
        for t, tt in zip(layer.inputs, ins, strict=True):
            same_type = (tt.bits, tt.signed, tt.scale) == (first.bits, first.signed, first.scale)
            if tuple(tt.shape[1:]) != tuple(first.shape[1:]) or not same_type:
                ck.fail(where, f"input {t!r} ({tt.shape}, {tt.bits} bits, signed={tt.signed}, scale {tt.scale}) "
                        f"differs from the first input ({first.shape}, {first.bits} bits, signed={first.signed}, "
                        f"scale {first.scale}); concat inputs share H, W and type (INTEGER_SPEC §4)")
        expected = (sum(tt.shape[0] for tt in ins), *first.shape[1:])
        _same_type(ck, where, layer.outputs[0], outs[0], first, expected)
    elif op == "split":
        x = ins[0]
        if sum(attrs["sizes"]) != x.shape[0]:
            ck.fail(where, f"field 'sizes' = {attrs['sizes']} does not add up to the input's {x.shape[0]} channels")
        for t, tt, size in zip(layer.outputs, outs, attrs["sizes"], strict=True):
            _same_type(ck, where, t, tt, x, (size, *x.shape[1:]))
    elif op == "shuffle":
        x = ins[0]
        if x.shape[0] % attrs["groups"]:
            ck.fail(where, f"field 'groups' = {attrs['groups']} does not divide the {x.shape[0]} channels")
        _same_type(ck, where, layer.outputs[0], outs[0], x, x.shape)
    elif op == "upsample2x":
        x = ins[0]
        _same_type(ck, where, layer.outputs[0], outs[0], x, (x.shape[0], 2 * x.shape[1], 2 * x.shape[2]))
    elif op == "maxpool":
        x = ins[0]
        k, st, pad = attrs["kernel"], attrs["stride"], attrs["padding"]
        if 2 * pad > k:
            ck.fail(where, f"field 'padding' = {pad} exceeds half the kernel {k}: a window could hold only padding")
        shape = (x.shape[0], _conv_out(x.shape[1], k, st, pad, 1), _conv_out(x.shape[2], k, st, pad, 1))
        _same_type(ck, where, layer.outputs[0], outs[0], x, shape)


def _same_type(ck: _Checker, where: str, name: str, out: TensorType, like: TensorType, shape: tuple) -> None:
    """Data-movement ops keep their input's type and produce ``shape``."""
    if tuple(out.shape) != tuple(shape):
        ck.fail(where, f"output tensor {name!r} has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if (out.bits, out.signed, out.scale) != (like.bits, like.signed, like.scale):
        ck.fail(where, f"output tensor {name!r} changes the type ({out.bits} bits, signed={out.signed}, scale "
                f"{out.scale}) of its input ({like.bits} bits, signed={like.signed}, scale {like.scale}); "
                "data movement does no arithmetic")


def _check_map_producer(
    ck: _Checker, where: str, producer: Layer | None, lo: int, hi: int, what: str, rule: str
) -> None:
    """A dilation/offset map made by a requantising layer must be clamped to its range (§6)."""
    if producer is None or "lo" not in producer.attrs:
        return
    plo, phi = producer.attrs["lo"], producer.attrs["hi"]
    if plo < lo or phi > hi:
        ck.fail(where, f"its {what} comes from layer {producer.name!r} with (lo, hi) = ({plo}, {phi}), "
                f"not inside {rule} = [{lo}, {hi}] (INTEGER_SPEC §6)")
