"""Host side of the depthwise unit: golden model, stream packing and unpacking.

* :func:`golden_depthwise` computes a layer's output integers from INTEGER_SPEC §3/§4
  with the integer reference kernels (:mod:`convforge.models.quant.executor`) and
  :func:`convforge.models.quant.intops.requant` -- the oracle the RTL is compared with.
* :func:`pack_depthwise_streams` turns a layer into the payload integers of every input
  stream of :class:`convforge.hw.rtl.depthwise.DepthwiseUnit`, using the unit's own
  ``data.Layout`` objects (no bit offset is written here).
* :func:`unpack_depthwise_output` turns the ``out`` payloads back into ``(C, Ho, Wo)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from convforge.errors import ShapeError
from convforge.hw.config import EngineConfig
from convforge.hw.layouts.units import MODE_CODES, dw_descriptor_layout
from convforge.hw.layouts.vectors import act_vector_layout, out_vector_layout
from convforge.hw.packing import pack, unpack
from convforge.hw.rtl.depthwise import DILATION_SHAPE, channel_params_layout, offsets_layout
from convforge.models.quant.executor import as_pair, bilinear_deform_int, conv2d_int, square_deform_dw_int
from convforge.models.quant.intops import requant


@dataclass(frozen=True)
class DepthwiseLayer:
    """One depthwise layer as the unit runs it.

    Attributes:
        mode: ``"regular"``, ``"square"`` or ``"bilinear"``.
        stride: 1 or 2.
        dilation: regular mode's dilation (= padding), pixels.
        in_signed: input activations are int8 (else uint8).
        weights: int ``(C, 3, 3)``.
        bias, M, S: int per channel ``(C,)``.
        lo, hi: inclusive output clamp.
    """

    mode: str
    stride: int
    dilation: int
    in_signed: bool
    weights: np.ndarray
    bias: np.ndarray
    M: np.ndarray
    S: np.ndarray
    lo: int
    hi: int

    @property
    def channels(self) -> int:
        return int(self.weights.shape[0])


def output_size(size: int, stride: int) -> int:
    """Output rows (or columns) for ``size`` input rows at ``stride``: ``(size-1)//s + 1``."""
    return (size - 1) // stride + 1


def _check(config: EngineConfig, layer: DepthwiseLayer, x: np.ndarray) -> None:
    c, h, w = x.shape
    if layer.mode not in config.dw_modes:
        raise ShapeError(f"depthwise layer: mode {layer.mode!r} is not built (dw_modes={config.dw_modes})")
    if layer.stride not in (1, 2):
        raise ShapeError(f"depthwise layer: stride {layer.stride} must be 1 or 2")
    if layer.mode == "regular" and not 1 <= layer.dilation <= config.d_max:
        raise ShapeError(f"depthwise layer: dilation {layer.dilation} outside [1, d_max={config.d_max}]")
    if not 1 <= w <= config.line_width or h < 1 or c < 1:
        raise ShapeError(
            f"depthwise layer: input (C, H, W) = {x.shape} needs 1 <= W <= line_width={config.line_width}, "
            "H >= 1, C >= 1")
    if layer.weights.shape != (c, 3, 3):
        raise ShapeError(f"depthwise layer: weights {layer.weights.shape}, expected {(c, 3, 3)}")


def depthwise_accumulator(
    config: EngineConfig,
    layer: DepthwiseLayer,
    x: np.ndarray,
    dilation_map: np.ndarray | None = None,
    offsets: np.ndarray | None = None,
) -> np.ndarray:
    """The int64 accumulator ``(C, Ho, Wo)`` of ``layer`` on ``x`` ``(C, H, W)``, before
    requantisation (INTEGER_SPEC §4; bilinear: ``2F`` fractional bits).

    ``dilation_map`` ``(Ho, Wo)`` in ``[0, D_max]`` (square mode); ``offsets``
    ``(18, Ho, Wo)`` int8 within ``+-R*2**F`` (bilinear mode).
    """
    _check(config, layer, x)
    xt = torch.as_tensor(np.asarray(x, dtype=np.int64))[None]
    wt = torch.as_tensor(np.asarray(layer.weights, dtype=np.int64))[:, None]
    c = layer.channels
    if layer.mode == "regular":
        acc = conv2d_int(xt, wt, stride=layer.stride, padding=layer.dilation, dilation=layer.dilation, groups=c)
    elif layer.mode == "square":
        dm = torch.as_tensor(np.asarray(dilation_map, dtype=np.int64))[None, None]
        acc = square_deform_dw_int(xt, dm, wt, stride=layer.stride)
    else:
        off = torch.as_tensor(np.asarray(offsets, dtype=np.int64))[None]
        acc = bilinear_deform_int(xt, off, wt, stride=layer.stride, padding=1, dilation=1, groups=c,
                                  frac_bits=config.frac_bits)
    return acc.numpy()[0]


def golden_depthwise(
    config: EngineConfig,
    layer: DepthwiseLayer,
    x: np.ndarray,
    dilation_map: np.ndarray | None = None,
    offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Output integers ``(C, Ho, Wo)`` int64 of ``layer``: :func:`depthwise_accumulator`
    then ``requant(acc, bias, M, S, lo, hi)`` (INTEGER_SPEC §3)."""
    acc = depthwise_accumulator(config, layer, x, dilation_map, offsets)
    y = requant(acc[None], layer.bias, layer.M, layer.S, layer.lo, layer.hi)
    return np.asarray(y, dtype=np.int64)[0]


def pack_depthwise_streams(
    config: EngineConfig,
    layer: DepthwiseLayer,
    x: np.ndarray,
    dilation_map: np.ndarray | None = None,
    offsets: np.ndarray | None = None,
) -> dict[str, list[int]]:
    """Payload integers for every input stream of the unit for one layer.

    Returns ``{"desc": [...], "params": [...], "pixels": [...]}`` plus ``"dilation"``
    (square) or ``"offsets"`` (bilinear), in the order the unit consumes them: channel
    group by channel group, maps repeated for every group (module docstring of
    :mod:`convforge.hw.rtl.depthwise`).
    """
    _check(config, layer, x)
    c, h, w = x.shape
    lanes = config.dw_lanes
    groups = -(-c // lanes)
    desc = pack(dw_descriptor_layout(config), {
        "mode": int(MODE_CODES[layer.mode]), "stride": layer.stride,
        "dilation": layer.dilation if layer.mode == "regular" else 0,
        "width": w, "height": h, "channels": c, "in_signed": int(layer.in_signed),
        "lo": layer.lo, "hi": layer.hi,
    })
    p_layout = channel_params_layout(config)
    params = [pack(p_layout, {"weights": [int(v) for v in layer.weights[ch].reshape(9)],
                              "requant": {"bias": int(layer.bias[ch]), "m": int(layer.M[ch]),
                                          "s": int(layer.S[ch])}})
              for ch in range(c)]
    raw = np.zeros((groups * lanes, h, w), dtype=np.int64)
    raw[:c] = np.asarray(x, dtype=np.int64) & 0xFF
    px_layout = act_vector_layout(lanes)
    pixels = []
    for g in range(groups):
        block = raw[g * lanes:(g + 1) * lanes].transpose(1, 2, 0).reshape(h * w, lanes)
        pixels += [pack(px_layout, [int(v) for v in vec]) for vec in block]
    streams = {"desc": [desc], "params": params, "pixels": pixels}
    if layer.mode == "square":
        dm = [pack(DILATION_SHAPE, int(v)) for v in np.asarray(dilation_map).reshape(-1)]
        streams["dilation"] = dm * groups
    elif layer.mode == "bilinear":
        o_layout = offsets_layout(config)
        off = np.asarray(offsets, dtype=np.int64)
        words = [pack(o_layout, [int(v) for v in off[:, yy, xx]])
                 for yy in range(off.shape[1]) for xx in range(off.shape[2])]
        streams["offsets"] = words * groups
    return streams


def output_count(config: EngineConfig, channels: int, height: int, width: int, stride: int) -> int:
    """Output pixel-vectors the unit emits for one layer (all channel groups)."""
    groups = -(-channels // config.dw_lanes)
    return groups * output_size(height, stride) * output_size(width, stride)


def unpack_depthwise_output(
    config: EngineConfig, payloads: list[int], channels: int, out_h: int, out_w: int
) -> np.ndarray:
    """``(C, Ho, Wo)`` int64 from the ``out`` payloads (padding lanes dropped)."""
    lanes = config.dw_lanes
    groups = -(-channels // lanes)
    if len(payloads) != groups * out_h * out_w:
        raise ShapeError(
            f"depthwise output: {len(payloads)} vectors, expected {groups * out_h * out_w} "
            f"({groups} channel groups x {out_h} x {out_w})")
    layout = out_vector_layout(lanes)
    vecs = np.array([unpack(layout, p) for p in payloads], dtype=np.int64).reshape(groups, out_h, out_w, lanes)
    return vecs.transpose(0, 3, 1, 2).reshape(groups * lanes, out_h, out_w)[:channels]


def layer_from_qgraph(graph_layer, in_signed: bool) -> DepthwiseLayer:
    """The :class:`DepthwiseLayer` the unit runs for a QGraph layer.

    Accepts ``square_deform_dw`` layers, depthwise 3x3 ``conv`` layers (``groups == C``,
    padding equal to the dilation: the unit's regular mode) and depthwise
    ``bilinear_deform`` layers (``groups == C``, padding 1, dilation 1).

    Raises:
        ShapeError: the layer is none of these, naming it and what the unit supports.
    """
    a, p = graph_layer.attrs, graph_layer.params
    op = graph_layer.op
    weight = np.asarray(p["weight"], dtype=np.int64) if "weight" in p else np.zeros((0, 0))
    channels = weight.shape[0]
    depthwise = weight.shape[1:] == (1, 3, 3) and (op == "square_deform_dw" or int(a.get("groups", 1)) == channels)
    mode = None
    if depthwise and op == "square_deform_dw":
        mode, stride, dilation = "square", int(a["stride"]), 1
    elif depthwise and op == "conv":
        (sy, sx), (py, px), (dy, dx) = as_pair(a["stride"]), as_pair(a["padding"]), as_pair(a["dilation"])
        if sy == sx and py == px == dy == dx:
            mode, stride, dilation = "regular", sy, dy
    elif depthwise and op == "bilinear_deform" and as_pair(a["padding"]) == (1, 1) and as_pair(a["dilation"]) == (1, 1):
        sy, sx = as_pair(a["stride"])
        if sy == sx:
            mode, stride, dilation = "bilinear", sy, 1
    if mode is not None:
        return DepthwiseLayer(mode, stride, dilation, in_signed=in_signed, weights=weight.reshape(channels, 3, 3),
                              bias=np.asarray(p["bias"]), M=np.asarray(p["M"]), S=np.asarray(p["S"]),
                              lo=int(a["lo"]), hi=int(a["hi"]))
    raise ShapeError(
        f"layer {graph_layer.name!r} ({op}, weight {tuple(weight.shape)}) is not a depthwise 3x3 layer the "
        "depthwise unit runs: it takes square_deform_dw, depthwise conv with padding == dilation, and "
        "depthwise bilinear_deform with padding 1 and dilation 1"
    )
