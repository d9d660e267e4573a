"""Export a QAT network to a QGraph (the integer graph of INTEGER_SPEC).

One traced block becomes one QGraph layer, named by its module path; its output tensor
has the same name (a split's outputs get ``.0``, ``.1``, ...), the image tensor is
``"input"`` (uint8 ``(3, H, W)``, scale 1.0). Integer weights, biases and ``(M, S, lo, hi)``
come from the blocks' own ``integer_params()`` (the same numbers their eval forward uses),
so the QGraph run by the integer executor reproduces :func:`qat_activations` exactly.

Export refuses (``ExportError`` naming the layer or module):

- a module the graph cannot express, or a compute block that was not quantised;
- a requantisation shift outside ``[0, 62]`` (from :func:`~convforge.models.quant.intops.derive_requant`);
- a layer whose worst-case ``|acc + bias|`` (INTEGER_SPEC §6: from the integer weights,
  the bias and the input type's range) does not fit ``acc_bits``;
- a graph that breaks any rule of :meth:`QGraph.validate` (weights outside ``w_bits``,
  ``|acc + bias| * M`` reaching ``2**63``, ...), the same check :meth:`QGraph.load` makes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from convforge.errors import ExportError, QGraphFormatError
from convforge.models.nets.blocks import (
    COMPUTE_BLOCKS,
    ChannelShuffle,
    ChannelSplit,
    Concat,
    MaxPool,
    Upsample2x,
)
from convforge.models.nets.graph import INPUT, Node, trace
from convforge.models.quant.intops import signed_bits_for
from convforge.models.quant.layers import IntParams, QAdd, QConvBNAct, QSquareDeformDW
from convforge.models.quant.qat import is_quantized
from convforge.models.quant.qgraph import Layer, QGraph, TensorType


def accumulator_bound(weight: torch.Tensor, bias: torch.Tensor, in_type: TensorType) -> int:
    """Worst-case ``|acc + bias|`` over output channels (INTEGER_SPEC §6).

    ``weight`` int64 ``(O, C/g, kh, kw)``, ``bias`` int64 ``(O,)``; every input reads at
    most ``max(|lo|, |hi|)`` of ``in_type``.
    """
    x_max = max(abs(in_type.lo), abs(in_type.hi))
    per_channel = weight.abs().flatten(1).sum(dim=1) * x_max + bias.abs()
    return int(per_channel.max()) if per_channel.numel() else 0


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.int64)


def _check_bound(name: str, p: IntParams, in_type: TensorType, acc_bits: int) -> None:
    bound = accumulator_bound(p.weight.cpu(), p.bias.cpu(), in_type)
    need = signed_bits_for(bound)
    if need > acc_bits:
        raise ExportError(
            f"layer {name!r}: worst-case |acc + bias| = {bound} needs a {need}-bit accumulator, "
            f"more than the {acc_bits}-bit width; lower the layer's weight bit width or raise acc_bits"
        )


def _requant_layer(name: str, op: str, node: Node, p: IntParams, attrs: dict[str, Any]) -> Layer:
    return Layer(
        name=name,
        op=op,
        inputs=list(node.inputs),
        outputs=list(node.outputs),
        attrs={**attrs, "lo": int(p.lo), "hi": int(p.hi)},
        params={"weight": _np(p.weight), "bias": _np(p.bias), "M": _np(p.M), "S": _np(p.S)},
    )


def _model_meta(model: nn.Module, input_hw: tuple[int, int]) -> dict[str, Any]:
    meta: dict[str, Any] = {"input_size": [int(input_hw[0]), int(input_hw[1])]}
    config = getattr(model, "config", None)
    if config is not None:
        meta["model"] = getattr(config, "family", "codenet")
        meta["config"] = getattr(config, "name", str(config))
        if hasattr(config, "mean"):
            meta["mean"] = [float(v) for v in config.mean]
            meta["std"] = [float(v) for v in config.std]
        if hasattr(config, "d_max"):
            meta["d_max"] = int(config.d_max)
    for key in ("num_classes", "output_stride"):
        if hasattr(model, key):
            meta[key] = int(getattr(model, key))
    if getattr(model, "class_names", None):
        meta["class_names"] = list(model.class_names)
    qcfg = getattr(model, "qat_config", None)
    if qcfg is not None:
        meta.update(
            w_bits=qcfg.w_bits, a_bits=qcfg.a_bits, first_w_bits=qcfg.first_w_bits, last_w_bits=qcfg.last_w_bits
        )
    return meta


def export_qgraph(
    model: nn.Module,
    input_hw: tuple[int, int],
    meta: dict[str, Any] | None = None,
    acc_bits: int = 32,
) -> QGraph:
    """Turn a calibrated QAT network into a QGraph for ``input_hw`` ``(H, W)`` images.

    Args:
        model: a network after :func:`~convforge.models.quant.qat.prepare_qat` and calibration
            (or QAT training).
        input_hw: the image size the graph is built for, in pixels.
        meta: extra metadata merged over the model's own (config name, num_classes,
            input_size, output_stride, heads, mean/std, class names, bit widths).
        acc_bits: accumulator width every layer's worst case must fit (INTEGER_SPEC §6).

    Returns:
        The validated QGraph.

    Raises:
        ExportError: see the module docstring.
    """
    if not is_quantized(model):
        raise ExportError("export_qgraph: the model is not quantised; run prepare_qat and calibrate first")
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    try:
        with torch.no_grad():
            graph = trace(model, torch.zeros(1, 3, int(input_hw[0]), int(input_hw[1]), device=param.device))
        tensors: dict[str, TensorType] = {INPUT: TensorType(graph.shapes[INPUT], 8, False, 1.0)}
        layers: list[Layer] = []
        for node in graph.nodes:
            layers.append(_export_node(node, graph.shapes, tensors, acc_bits))
    finally:
        model.train(was_training)
    full_meta = _model_meta(model, input_hw)
    full_meta["heads"] = list(graph.outputs)
    full_meta.update(meta or {})
    qgraph = QGraph(input=INPUT, tensors=tensors, layers=layers, outputs=dict(graph.outputs), meta=full_meta)
    try:
        qgraph.validate()  # the same rules as QGraph.load (INTEGER_SPEC §6 bounds included)
    except QGraphFormatError as exc:
        raise ExportError(f"export refused: {exc}") from exc
    return qgraph


def _export_node(
    node: Node, shapes: dict[str, tuple[int, int, int]], tensors: dict[str, TensorType], acc_bits: int
) -> Layer:
    """One traced block -> one QGraph layer; types its output tensors into ``tensors``."""
    m, name = node.module, node.name
    in_types = [tensors[t] for t in node.inputs]

    def out_type(t: str, like: TensorType) -> TensorType:
        return TensorType(shapes[t], like.bits, like.signed, like.scale)

    if isinstance(m, QConvBNAct):
        p = m.integer_params()
        _check_bound(name, p, in_types[0], acc_bits)
        obs = m.act_obs
        tensors[node.outputs[0]] = TensorType(shapes[node.outputs[0]], obs.bits, obs.signed, p.out_scale)
        k, s, pad = int(m.kernel), int(m.stride), int(m.padding)
        attrs = {"kernel": [k, k], "stride": [s, s], "padding": [pad, pad], "dilation": [1, 1],
                 "groups": int(m.groups), "w_bits": int(m.w_bits)}
        return _requant_layer(name, "conv", node, p, attrs)
    if isinstance(m, QSquareDeformDW):
        p = m.integer_params()
        _check_bound(name, p, in_types[0], acc_bits)
        obs = m.act_obs
        tensors[node.outputs[0]] = TensorType(shapes[node.outputs[0]], obs.bits, obs.signed, p.out_scale)
        attrs = {"stride": int(m.stride), "d_max": int(m.d_max), "w_bits": int(m.w_bits)}
        return _requant_layer(name, "square_deform_dw", node, p, attrs)
    if isinstance(m, QAdd):
        p = m.integer_params()
        obs = m.act_obs
        tensors[node.outputs[0]] = TensorType(shapes[node.outputs[0]], obs.bits, obs.signed, p.out_scale)
        params = {k: np.asarray([v], dtype=np.int64) for k, v in (("Ma", p.Ma), ("Mb", p.Mb), ("S", p.S))}
        return Layer(name, "add", list(node.inputs), list(node.outputs), {"lo": int(p.lo), "hi": int(p.hi)}, params)
    if isinstance(m, COMPUTE_BLOCKS):
        raise ExportError(
            f"module {name!r} ({type(m).__name__}) is not quantised; build the model with prepare_qat"
        )
    if isinstance(m, ChannelSplit):
        for t in node.outputs:
            tensors[t] = out_type(t, in_types[0])
        return Layer(name, "split", list(node.inputs), list(node.outputs), {"sizes": list(m.sizes)})
    if isinstance(m, Concat):
        first = in_types[0]
        for t, tt in zip(node.inputs, in_types, strict=True):
            if (tt.bits, tt.signed, tt.scale) != (first.bits, first.signed, first.scale):
                raise ExportError(
                    f"concat {name!r}: input {t!r} has type ({tt.bits} bits, signed={tt.signed}, "
                    f"scale {tt.scale:.6g}), the first input ({first.bits} bits, signed={first.signed}, "
                    f"scale {first.scale:.6g}); prepare_qat ties them, so the model was altered after it"
                )
        tensors[node.outputs[0]] = out_type(node.outputs[0], first)
        return Layer(name, "concat", list(node.inputs), list(node.outputs))
    if isinstance(m, ChannelShuffle):
        tensors[node.outputs[0]] = out_type(node.outputs[0], in_types[0])
        return Layer(name, "shuffle", list(node.inputs), list(node.outputs), {"groups": int(m.groups)})
    if isinstance(m, Upsample2x):
        tensors[node.outputs[0]] = out_type(node.outputs[0], in_types[0])
        return Layer(name, "upsample2x", list(node.inputs), list(node.outputs))
    if isinstance(m, MaxPool):
        tensors[node.outputs[0]] = out_type(node.outputs[0], in_types[0])
        attrs = {"kernel": int(m.kernel), "stride": int(m.stride), "padding": int(m.padding)}
        return Layer(name, "maxpool", list(node.inputs), list(node.outputs), attrs)
    raise ExportError(f"module {name!r} ({type(m).__name__}) has no QGraph equivalent")


def qat_activations(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The QAT model's (eval-mode) output of every block for raw-pixel images ``x``.

    Keys are the QGraph tensor names (``"input"`` included), values float ``(N, C, H, W)``
    real activations (``scale * q``): divide by the QGraph tensor's scale to compare with
    the integer executor.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            graph = trace(model, x, keep_values=True)
    finally:
        model.train(was_training)
    return dict(graph.values)
