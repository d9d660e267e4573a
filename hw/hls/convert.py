"""QGraph -> hls4ml model (io_stream, channels-last, Vitis backend).

The converter reads the QGraph (the integer contract), never PyTorch: hls4ml 1.3's
PyTorch parser rejects grouped convolutions. Every QGraph layer becomes one or more hls4ml
layers, all integer-typed (``ap_int``/``ap_uint``), so hls4ml's casts never round or wrap:

=====================  ===========================================  =====================
QGraph op              hls4ml layers                                 reused / written
=====================  ===========================================  =====================
conv, groups = 1       ``Conv2D`` (accumulator out) + ``CfRequant``  reused + written
conv, groups = C       ``DepthwiseConv2D`` + ``CfRequant``           reused + written
square_deform_dw       ``CfSquareDeformDW`` + ``CfRequant``          written
bilinear_deform        ``CfBilinearDeform`` + ``CfRequant``          written
add                    ``CfAdd``                                     written
concat                 ``Concatenate`` (chained for > 2 inputs)      reused
split                  one ``CfSlice`` per output                    written
shuffle                ``CfShuffle``                                 written
upsample2x             ``Resize`` (nearest)                          reused
maxpool                ``MaxPooling2D`` if p = 0 and k = s,          reused
                       else ``CfMaxPool``                            written
=====================  ===========================================  =====================

hls4ml adds its own ``ZeroPadding2D`` before padded convolutions and ``Clone`` layers
where a stream feeds several layers. The hls4ml Conv2D and DepthwiseConv2D carry a zero
bias; the QGraph bias is added in ``CfRequant`` (INTEGER_SPEC §3 adds it before the
multiply). Their accumulator and result types are ``ap_int<B>`` with ``B`` the width of
the layer's worst-case accumulator (INTEGER_SPEC §6), so they are exact.

Layers the converter cannot express raise :class:`HLSConversionError` naming the layer and
the reason (grouped convolutions with ``1 < groups < C``, dilated convolutions, an input
that is not 8-bit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convforge.errors import ConvforgeError
from convforge.hw.hls import DEFAULT_CLOCK_NS, DEFAULT_PART
from convforge.models.quant.executor import as_pair
from convforge.models.quant.intops import signed_bits_for
from convforge.models.quant.qgraph import Layer, QGraph, TensorType

#: hls4ml layer name of the QGraph input (``input`` is reserved by hls4ml).
INPUT_NAME = "cf_input"
PROJECT_NAME = "convforge_hls"
#: Consumers one hls4ml io_stream output may feed (its Clone layer's limit).
MAX_FANOUT = 7
#: hls4ml's model-wide implementation strategies.
STRATEGIES = ("Latency", "Resource")


class HLSConversionError(ConvforgeError):
    """A QGraph layer has no bit-exact hls4ml mapping (the message names layer and reason)."""


@dataclass
class HLSModelSpec:
    """What the converter produced: hls4ml's layer list and config, plus the tensor map.

    Attributes:
        layer_list: hls4ml layer dicts (``ModelGraph.from_layer_list`` input).
        config: the hls4ml config dict (backend, IO type, per-layer precisions).
        tensor_layer: QGraph tensor name -> name of the hls4ml layer whose output it is.
        outputs: hls4ml output layer names, in ``graph.outputs`` order.
        kinds: hls4ml layer name -> QGraph op it implements (for reports).
    """

    layer_list: list[dict[str, Any]]
    config: dict[str, Any]
    tensor_layer: dict[str, str]
    outputs: list[str]
    kinds: dict[str, str] = field(default_factory=dict)


def hls_name(tensor: str) -> str:
    """A C identifier for a QGraph tensor name (``a.b-c`` -> ``a_b_c``)."""
    name = re.sub(r"\W", "_", tensor)
    if not name or name[0].isdigit():
        name = "t_" + name
    return name


def _ap(bits: int, signed: bool) -> str:
    return f"ap_{'' if signed else 'u'}int<{int(bits)}>"


def _act_type(t: TensorType) -> str:
    return _ap(t.bits, t.signed)


def _max_abs(t: TensorType) -> int:
    return max(abs(t.lo), abs(t.hi))


def _requant_prod_bits(acc_bound: int, bias: np.ndarray, M: np.ndarray, S: np.ndarray) -> int:
    """Width holding ``(acc + bias) * M + 2**(S-1)`` for the worst case (INTEGER_SPEC §3, §6)."""
    bound = (acc_bound + int(np.abs(bias).max(initial=0))) * int(np.abs(M).max(initial=0))
    bound += 1 << max(int(np.max(S, initial=0)) - 1, 0)
    return max(signed_bits_for(bound), 2)


class _Builder:
    def __init__(self, graph: QGraph):
        self.graph = graph
        self.layers: list[dict[str, Any]] = []
        self.precision: dict[str, dict[str, Any]] = {}
        self.tensor_layer: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.used: set[str] = set()
        self.route: dict[str, str] = {}
        self.uses: dict[str, int] = {}

    # -- helpers ------------------------------------------------------------------------
    def _new_name(self, base: str, layer: Layer | None) -> str:
        name = hls_name(base)
        if name in self.used:
            raise HLSConversionError(
                f"layer {layer.name if layer else base!r}: hls4ml name {name!r} (from {base!r}) collides with "
                "another tensor's; rename one of the tensors in the QGraph"
            )
        self.used.add(name)
        return name

    def shape(self, tensor: str) -> tuple[int, int, int]:
        c, h, w = self.graph.tensors[tensor].shape
        return int(c), int(h), int(w)

    def add(self, entry: dict[str, Any], kind: str, precision: dict[str, str] | None = None,
            tensor: str | None = None) -> str:
        self.layers.append(entry)
        self.kinds[entry["name"]] = kind
        cfg: dict[str, Any] = {"Trace": True}
        if precision:
            cfg["Precision"] = precision
        self.precision[entry["name"]] = cfg
        if tensor is not None:
            self.tensor_layer[tensor] = entry["name"]
        return entry["name"]

    def src(self, tensor: str) -> str:
        """The hls4ml layer a new consumer of ``tensor`` reads. hls4ml's io_stream Clone
        serves at most 7 consumers; past ``MAX_FANOUT - 1`` an identity ``CfSlice`` copy of
        the stream takes the last slot and serves the next consumers."""
        name = self.route.get(tensor, self.tensor_layer[tensor])
        uses = self.uses.get(name, 0)
        if uses == MAX_FANOUT - 1:
            copy = self._new_name(f"{tensor}_fanout{len(self.used)}", None)
            c, h, w = self.shape(tensor)
            t = self.graph.tensors[tensor]
            self.add({"class_name": "CfSlice", "name": copy, "inputs": [name], "data_format": "channels_last",
                      "out_shape": [h, w, c], "out_bits": t.bits, "out_signed": t.signed, "first": 0},
                     "fan-out copy")
            self.uses[name] = uses + 1
            self.route[tensor] = name = copy
            uses = 0
        self.uses[name] = uses + 1
        return name

    def custom(self, layer: Layer, cls: str, name: str, inputs: list[str], out_shape_chw, out_bits: int,
               out_signed: bool, tensor: str | None, **attrs) -> str:
        c, h, w = out_shape_chw
        entry = {
            "class_name": cls, "name": name, "inputs": inputs, "data_format": "channels_last",
            "out_shape": [h, w, c], "out_bits": int(out_bits), "out_signed": bool(out_signed), **attrs,
        }
        return self.add(entry, layer.op, None, tensor)

    def requant(self, layer: Layer, acc_layer: str, acc_bound: int) -> str:
        out = layer.outputs[0]
        t = self.graph.tensors[out]
        p = layer.params
        bias = np.asarray(p["bias"], dtype=np.int64).ravel()
        M = np.asarray(p["M"], dtype=np.int64).ravel()
        S = np.asarray(p["S"], dtype=np.int64).ravel()
        return self.custom(
            layer, "CfRequant", self._new_name(out, layer), [acc_layer], self.shape(out), t.bits, t.signed, out,
            lo=int(layer.attrs["lo"]), hi=int(layer.attrs["hi"]), prod_bits=_requant_prod_bits(acc_bound, bias, M, S),
            bias_bits=max(signed_bits_for(int(np.abs(bias).max(initial=0))), 2),
            bias_data=bias, mult_data=M, shift_data=S,
        )

    # -- ops ----------------------------------------------------------------------------
    def input(self) -> None:
        g = self.graph
        t = g.tensors[g.input]
        c, h, w = t.shape
        self.used.add(INPUT_NAME)
        self.add(
            {"class_name": "InputLayer", "name": INPUT_NAME, "input_shape": [h, w, c]},
            "input", {"result": _act_type(t)}, g.input,
        )

    def conv(self, layer: Layer) -> None:
        a, p = layer.attrs, layer.params
        x = layer.inputs[0]
        c, h, w = self.shape(x)
        o, ho, wo = self.shape(layer.outputs[0])
        weight = np.asarray(p["weight"], dtype=np.int64)
        kh, kw = (int(v) for v in a["kernel"])
        sh, sw = (int(v) for v in a["stride"])
        ph, pw = (int(v) for v in a["padding"])
        groups = int(a["groups"])
        if [int(v) for v in a["dilation"]] != [1, 1]:
            raise HLSConversionError(
                f"layer {layer.name!r}: dilation {a['dilation']} -- hls4ml 1.3's Conv2D has no dilation; "
                "export the layer with dilation 1 (or as square_deform_dw with a constant map)"
            )
        depthwise = groups == c and groups > 1 and o == c
        if groups != 1 and not depthwise:
            raise HLSConversionError(
                f"layer {layer.name!r}: grouped convolution with groups={groups} of {c} input / {o} output "
                "channels -- hls4ml 1.3 has only groups = 1 (Conv2D) and depthwise groups = C with one filter per "
                "channel (DepthwiseConv2D); split the layer into per-group convolutions and a concat"
            )
        in_t = self.graph.tensors[x]
        acc_bound = int((np.abs(weight).reshape(o, -1).sum(axis=1) * _max_abs(in_t)).max(initial=0))
        acc_type = _ap(max(signed_bits_for(acc_bound), 2), True)
        w_bits = int(a["w_bits"])
        name = self._new_name(layer.outputs[0] + "_acc", layer)
        entry = {
            "name": name, "inputs": [self.src(x)], "data_format": "channels_last",
            "in_height": h, "in_width": w, "n_chan": c, "n_filt": o, "out_height": ho, "out_width": wo,
            "filt_height": kh, "filt_width": kw, "stride_height": sh, "stride_width": sw,
            "pad_top": ph, "pad_bottom": ph, "pad_left": pw, "pad_right": pw,
            "bias_data": np.zeros(o, dtype=np.int64),
        }
        precision = {"weight": _ap(w_bits, True), "bias": _ap(2, True), "result": acc_type, "accum": acc_type}
        if depthwise:
            entry.update(class_name="DepthwiseConv2D", depth_multiplier=1,
                         depthwise_data=weight.transpose(2, 3, 0, 1).astype(np.float64))
            precision["depthwise"] = precision["weight"]
        else:
            entry.update(class_name="Conv2D", weight_data=weight.transpose(2, 3, 1, 0).astype(np.float64))
        self.add(entry, "conv", precision)
        self.requant(layer, name, acc_bound)

    def square_deform_dw(self, layer: Layer) -> None:
        a, p = layer.attrs, layer.params
        x, dmap = layer.inputs
        c, _, _ = self.shape(x)
        weight = np.asarray(p["weight"], dtype=np.int64)
        acc_bound = int((np.abs(weight).reshape(c, -1).sum(axis=1) * _max_abs(self.graph.tensors[x])).max(initial=0))
        name = self._new_name(layer.outputs[0] + "_acc", layer)
        self.custom(
            layer, "CfSquareDeformDW", name, [self.src(x), self.src(dmap)], self.shape(layer.outputs[0]),
            max(signed_bits_for(acc_bound), 2), True, None,
            stride=int(a["stride"]), d_max=int(a["d_max"]), weight_bits=int(a["w_bits"]), weight_data=weight.ravel(),
        )
        self.requant(layer, name, acc_bound)

    def bilinear_deform(self, layer: Layer) -> None:
        a, p = layer.attrs, layer.params
        x, off = layer.inputs
        weight = np.asarray(p["weight"], dtype=np.int64)
        o = weight.shape[0]
        stride, pad, dil = (list(as_pair(a[key])) for key in ("stride", "padding", "dilation"))
        if stride[0] != stride[1] or pad[0] != pad[1] or dil[0] != dil[1]:
            raise HLSConversionError(
                f"layer {layer.name!r}: bilinear_deform with unequal height/width stride {stride}, padding {pad} "
                f"or dilation {dil} -- the HLS layer CfBilinearDeform takes one value for both axes"
            )
        frac = int(a["F"])
        one = 1 << frac
        x_max = _max_abs(self.graph.tensors[x])
        sample_bound = one * one * x_max
        acc_bound = int((np.abs(weight).reshape(o, -1).sum(axis=1) * sample_bound).max(initial=0))
        name = self._new_name(layer.outputs[0] + "_acc", layer)
        self.custom(
            layer, "CfBilinearDeform", name, [self.src(x), self.src(off)], self.shape(layer.outputs[0]),
            max(signed_bits_for(acc_bound), 2), True, None,
            stride=stride[0], pad=pad[0], dilation=dil[0], groups=int(a["groups"]), frac_bits=frac,
            range=int(a["R"]), weight_bits=int(a["w_bits"]), sample_bits=signed_bits_for(sample_bound),
            weight_data=weight.ravel(),
        )
        self.requant(layer, name, acc_bound)

    def add_op(self, layer: Layer) -> None:
        p = layer.params
        ta, tb = (self.graph.tensors[t] for t in layer.inputs)
        ma, mb, s = (int(np.ravel(p[k])[0]) for k in ("Ma", "Mb", "S"))
        bound = _max_abs(ta) * abs(ma) + _max_abs(tb) * abs(mb) + (1 << max(s - 1, 0))
        out = layer.outputs[0]
        t = self.graph.tensors[out]
        self.custom(
            layer, "CfAdd", self._new_name(out, layer), [self.src(i) for i in layer.inputs], self.shape(out),
            t.bits, t.signed, out, mult_a=ma, mult_b=mb, shift=s, lo=int(layer.attrs["lo"]),
            hi=int(layer.attrs["hi"]), prod_bits=max(signed_bits_for(bound), 2),
        )

    def concat(self, layer: Layer) -> None:
        out = layer.outputs[0]
        t = self.graph.tensors[out]
        types = {(self.graph.tensors[i].bits, self.graph.tensors[i].signed) for i in layer.inputs}
        if len(types) != 1:
            raise HLSConversionError(
                f"layer {layer.name!r}: concat of tensors of different integer types {sorted(types)}; "
                "INTEGER_SPEC §4 requires one type and scale for all inputs of a concat"
            )
        current = self.src(layer.inputs[0])
        channels = self.shape(layer.inputs[0])[0]
        for k, nxt in enumerate(layer.inputs[1:], start=1):
            last = k == len(layer.inputs) - 1
            name = self._new_name(out if last else f"{out}_part{k}", layer)
            channels += self.shape(nxt)[0]
            self.add({"class_name": "Concatenate", "name": name, "inputs": [current, self.src(nxt)],
                             "axis": -1, "op": "concatenate3d", "data_format": "channels_last"},
                     "concat", {"result": _act_type(t)}, out if last else None)
            current = name
        if len(layer.inputs) == 1:
            raise HLSConversionError(f"layer {layer.name!r}: concat of a single tensor; remove the layer")

    def split(self, layer: Layer) -> None:
        first = 0
        for out in layer.outputs:
            t = self.graph.tensors[out]
            self.custom(layer, "CfSlice", self._new_name(out, layer), [self.src(layer.inputs[0])], self.shape(out),
                        t.bits, t.signed, out, first=first)
            first += self.shape(out)[0]

    def shuffle(self, layer: Layer) -> None:
        out = layer.outputs[0]
        t = self.graph.tensors[out]
        groups = int(layer.attrs["groups"])
        if self.shape(out)[0] % groups:
            raise HLSConversionError(f"layer {layer.name!r}: {self.shape(out)[0]} channels do not split into "
                                     f"{groups} shuffle groups")
        self.custom(layer, "CfShuffle", self._new_name(out, layer), [self.src(layer.inputs[0])], self.shape(out),
                    t.bits, t.signed, out, groups=groups)

    def upsample2x(self, layer: Layer) -> None:
        x, out = layer.inputs[0], layer.outputs[0]
        c, h, w = self.shape(x)
        self.add({
            "class_name": "Resize", "name": self._new_name(out, layer), "inputs": [self.src(x)],
            "data_format": "channels_last", "in_height": h, "in_width": w, "out_height": 2 * h, "out_width": 2 * w,
            "n_chan": c, "algorithm": "nearest", "align_corners": False,
        }, "upsample2x", None, out)

    def maxpool(self, layer: Layer) -> None:
        x, out = layer.inputs[0], layer.outputs[0]
        k, s, pad = (int(layer.attrs[key]) for key in ("kernel", "stride", "padding"))
        c, h, w = self.shape(x)
        _, ho, wo = self.shape(out)
        t = self.graph.tensors[out]
        name = self._new_name(out, layer)
        if pad == 0 and k == s:
            typ = _act_type(t)
            self.add({
                "class_name": "MaxPooling2D", "name": name, "inputs": [self.src(x)], "data_format": "channels_last",
                "in_height": h, "in_width": w, "out_height": ho, "out_width": wo, "n_filt": c,
                "pool_height": k, "pool_width": k, "stride_height": s, "stride_width": s,
                "pad_top": 0, "pad_bottom": 0, "pad_left": 0, "pad_right": 0,
            }, "maxpool", {"result": typ, "accum": typ}, out)
        else:
            self.custom(layer, "CfMaxPool", name, [self.src(x)], self.shape(out), t.bits, t.signed, out,
                        pool_size=k, stride=s, pad=pad)


def qgraph_to_spec(graph: QGraph, output_dir: str | Path, part: str = DEFAULT_PART,
                   clock_period_ns: float = DEFAULT_CLOCK_NS, strategy: str = "Latency",
                   reuse_factor: int = 1) -> HLSModelSpec:
    """Translate ``graph`` into hls4ml's layer list and config (nothing is written).

    ``strategy`` (``Latency``: fully unrolled, or ``Resource``) and ``reuse_factor``
    (multipliers shared over that many cycles) are hls4ml's model-wide settings for its
    own Conv2D / DepthwiseConv2D; they change resources and latency, never the integers.

    Raises:
        HLSConversionError: a layer has no bit-exact mapping (named, with the reason), or
            the input is not an 8-bit activation.
    """
    if strategy not in STRATEGIES:
        raise HLSConversionError(f"strategy {strategy!r}: hls4ml strategies are {', '.join(STRATEGIES)}")
    if reuse_factor < 1:
        raise HLSConversionError(f"reuse factor {reuse_factor}: must be >= 1")
    graph.validate()
    b = _Builder(graph)
    in_t = graph.tensors[graph.input]
    if in_t.bits != 8:
        raise HLSConversionError(f"input tensor {graph.input!r} is {in_t.bits}-bit; the HLS flow takes 8-bit inputs")
    b.input()
    handlers = {
        "conv": b.conv, "square_deform_dw": b.square_deform_dw, "bilinear_deform": b.bilinear_deform,
        "add": b.add_op, "concat": b.concat, "split": b.split, "shuffle": b.shuffle,
        "upsample2x": b.upsample2x, "maxpool": b.maxpool,
    }
    for layer in graph.layers:
        handler = handlers.get(layer.op)
        if handler is None:
            raise HLSConversionError(f"layer {layer.name!r}: op {layer.op!r} has no HLS mapping")
        handler(layer)
    outputs = [b.tensor_layer[t] for t in graph.outputs.values()]
    config = {
        "Backend": "Vitis",
        "OutputDir": str(output_dir),
        "ProjectName": PROJECT_NAME,
        "Part": part,
        "ClockPeriod": clock_period_ns,
        "IOType": "io_stream",
        "HLSConfig": {
            "Model": {"Precision": "ap_int<32>", "ReuseFactor": int(reuse_factor), "Strategy": strategy},
            "LayerName": b.precision,
        },
        "WriterConfig": {"Namespace": None, "WriteWeightsTxt": True, "WriteTar": False},
    }
    return HLSModelSpec(b.layers, config, b.tensor_layer, outputs, b.kinds)


def build_hls_model(graph: QGraph, output_dir: str | Path, part: str = DEFAULT_PART,
                    clock_period_ns: float = DEFAULT_CLOCK_NS, strategy: str = "Latency", reuse_factor: int = 1):
    """The hls4ml ``ModelGraph`` of ``graph`` (Vitis backend, io_stream), and its spec.

    Returns:
        ``(model, spec)``: an ``hls4ml.model.ModelGraph`` (not yet written) and the
        :class:`HLSModelSpec` that maps QGraph tensors to hls4ml layers.

    Raises:
        HLSConversionError: see :func:`qgraph_to_spec`.
    """
    from hls4ml.model import ModelGraph

    from convforge.hw.hls.layers import register_extensions

    register_extensions("Vitis")
    spec = qgraph_to_spec(graph, output_dir, part, clock_period_ns, strategy, reuse_factor)
    model = ModelGraph.from_layer_list(spec.config, spec.layer_list, inputs=[INPUT_NAME], outputs=spec.outputs)
    return model, spec
