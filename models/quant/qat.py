"""Quantisation-aware training (QAT): turn a float convforge network into its W4A8
fake-quantised twin, and calibrate its activation observers.

Scheme (INTEGER_SPEC §2/§3):

- weights: BN folded into the convolution with the running statistics (frozen during QAT),
  then per output channel, symmetric, narrow range ``[-(2**(b-1)-1), 2**(b-1)-1]``, scale
  ``max|w[c]| / qmax``; ``w_bits`` (4) by default, ``first_w_bits`` (8) for layers reading
  the image, ``last_w_bits`` (8) for the layers producing the network outputs, ``dw_w_bits``
  (default ``w_bits``) for depthwise convolutions (regular and square deformable); each
  layer's width is recorded in the QGraph (``w_bits`` attribute);
- biases: int32 at ``s_x * s_w[c]``;
- activations: ``a_bits`` (8) per tensor, zero point 0, scale from an EMA of the maximum;
  unsigned after ReLU/ReLU6, signed otherwise (the heads' logits are int8);
- the network input is uint8 with scale 1.0 (raw pixels; normalisation is in the first conv);
- a dilation map has scale exactly 1.0 and range ``[0, D_max]``: its integers are the dilation;
- a residual add (:class:`~convforge.models.nets.blocks.Add`) has its own output observer
  (int8 for a plain add, uint8 for an add with ReLU) and one ``(Ma, Mb, S)`` (INTEGER_SPEC §4);
- every input of a concat shares one scale: the observers of the layers that produce them
  (found through split, shuffle, upsample, max pool and other concats, which all keep the
  scale) are one shared module.

Rounding is half up everywhere. See :mod:`convforge.models.quant.layers` for the forward paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from convforge.errors import ConfigError, ExportError
from convforge.models.nets.blocks import COMPUTE_BLOCKS, Add, Concat, ConvBNAct, SquareDeformDW
from convforge.models.nets.graph import INPUT, Node, Trace, trace
from convforge.models.quant.layers import QUANT_BLOCKS, ActObserver, QAdd, QConvBNAct, QSquareDeformDW


@dataclass(frozen=True)
class QATConfig:
    """Bit widths of a QAT model (kept on the model as ``model.qat_config``)."""

    w_bits: int = 4
    a_bits: int = 8
    first_w_bits: int = 8
    last_w_bits: int = 8
    momentum: float = 0.1
    dw_w_bits: int | None = None

    def __post_init__(self) -> None:
        if self.dw_w_bits is None:
            object.__setattr__(self, "dw_w_bits", self.w_bits)
        for name in ("w_bits", "first_w_bits", "last_w_bits", "dw_w_bits"):
            if not 2 <= getattr(self, name) <= 8:
                raise ConfigError(f"QATConfig: {name}={getattr(self, name)} must be in [2, 8]")
        if self.a_bits != 8:
            raise ConfigError(f"QATConfig: a_bits={self.a_bits}; the integer contract has 8-bit activations")


def is_quantized(model: nn.Module) -> bool:
    """True once :func:`prepare_qat` has run on ``model``."""
    return any(isinstance(m, QUANT_BLOCKS) for m in model.modules())


def scale_source(graph: Trace, tensor: str) -> str:
    """The compute block (or ``"input"``) whose output scale ``tensor`` carries.

    Data movement keeps the scale, so the walk goes back through split, shuffle, upsample,
    max pool and concat (whose inputs share one scale: the first input stands for all).
    """
    while tensor != INPUT:
        node = graph.producer(tensor)
        if node is None:
            raise ExportError(f"tensor {tensor!r} has no producer in the traced graph")
        if isinstance(node.module, COMPUTE_BLOCKS):
            return node.name
        tensor = node.inputs[0]
    return INPUT


def _signature(node: Node) -> tuple[bool, bool, bool]:
    """(signed, relu6, is_dilation) of a compute block's output."""
    m = node.module
    if isinstance(m, ConvBNAct):
        return m.act == "none", m.act == "relu6", m.act == "dilation"
    if isinstance(m, Add):
        return m.act == "none", False, False
    return True, False, False


def _is_depthwise(m: nn.Module) -> bool:
    if isinstance(m, SquareDeformDW):
        return True
    return isinstance(m, ConvBNAct) and m.groups > 1 and m.groups == m.in_ch == m.out_ch


def prepare_qat(
    model: nn.Module,
    w_bits: int = 4,
    a_bits: int = 8,
    first_w_bits: int = 8,
    last_w_bits: int = 8,
    input_hw: tuple[int, int] = (64, 64),
    momentum: float = 0.1,
    dw_w_bits: int | None = None,
) -> nn.Module:
    """Replace ``model``'s compute blocks by fake-quantised ones, in place; returns ``model``.

    Parameters and state-dict keys of the float model are kept (plus ``act_obs.*`` observer
    buffers and ``qat_input.*``), so a float checkpoint loads before this call and a QAT
    checkpoint after it. ``input_hw`` is only the size of the tracing pass (any size the
    network accepts). ``dw_w_bits`` (default ``w_bits``) is the weight width of depthwise
    layers that neither read the image nor produce an output. Call :func:`calibrate` (or
    train) before evaluating.

    Raises:
        ConfigError: bit widths out of range, or the model is already quantised.
        ExportError: the model contains operations the integer graph cannot express, or a
            concat joins tensors of different signedness or a dilation map.
    """
    cfg = QATConfig(w_bits, a_bits, first_w_bits, last_w_bits, momentum, dw_w_bits)
    if is_quantized(model):
        raise ConfigError("prepare_qat: the model is already quantised")
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    first = next(m for m in model.modules() if isinstance(m, ConvBNAct | SquareDeformDW))
    in_ch = first.in_ch if isinstance(first, ConvBNAct) else first.channels
    with torch.no_grad():
        graph = trace(model, torch.zeros(1, in_ch, *input_hw, device=param.device, dtype=param.dtype))

    compute = [n for n in graph.nodes if isinstance(n.module, COMPUTE_BLOCKS)]
    by_name = {n.name: n for n in compute}
    # Union-find over compute blocks whose outputs meet in a concat.
    parent = {n.name: n.name for n in compute}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for node in graph.nodes:
        if isinstance(node.module, Concat):
            sources = [scale_source(graph, t) for t in node.inputs]
            if INPUT in sources:
                raise ExportError(f"concat {node.name!r} joins the network input; it has no adjustable scale")
            for s in sources[1:]:
                parent[find(s)] = find(sources[0])
    groups: dict[str, list[Node]] = {}
    for n in compute:
        groups.setdefault(find(n.name), []).append(n)

    observers: dict[str, ActObserver] = {}
    for members in groups.values():
        sigs = {_signature(n) for n in members}
        names = ", ".join(n.name for n in members)
        if len(sigs) > 1:
            raise ExportError(f"concat inputs from {names} mix signed/unsigned/ReLU6 outputs; they must share one type")
        signed, relu6, dilation = sigs.pop()
        if dilation:
            if len(members) > 1:
                raise ExportError(
                    f"dilation maps {names} meet in a concat; a dilation map must feed a deformable layer"
                )
            obs = ActObserver(a_bits, signed=False, fixed=(1.0, 0, members[0].module.d_max))
        else:
            obs = ActObserver(a_bits, signed=signed, relu6=relu6, momentum=momentum)
        for n in members:
            observers[n.name] = obs

    input_obs = ActObserver(8, signed=False, fixed=(1.0, 0, 255))
    model.add_module("qat_input", input_obs)
    head_tensors = set(graph.outputs.values())
    quantised: dict[str, nn.Module] = {}
    for n in compute:
        bits = cfg.dw_w_bits if _is_depthwise(n.module) else w_bits
        if INPUT in n.inputs:
            bits = first_w_bits
        elif head_tensors & set(n.outputs):
            bits = last_w_bits
        if isinstance(n.module, Add):
            if INPUT in n.inputs:
                raise ExportError(f"add {n.name!r} reads the network input; add a layer before it")
            q = QAdd.from_float(n.module, observers[n.name])
        elif isinstance(n.module, SquareDeformDW):
            q = QSquareDeformDW.from_float(n.module, bits, observers[n.name])
        else:
            q = QConvBNAct.from_float(n.module, bits, observers[n.name])
        q.qname = n.name
        model.set_submodule(n.name, q)
        quantised[n.name] = q
    for n in compute:
        srcs = [scale_source(graph, t) for t in n.inputs]
        if isinstance(by_name[n.name].module, SquareDeformDW) and not _signature(by_name[srcs[1]])[2]:
            raise ExportError(f"deformable block {n.name!r}: its second input must be a dilation map (act='dilation')")
        quantised[n.name].set_input_observers([input_obs if s == INPUT else observers[s] for s in srcs])
    model.qat_config = cfg
    model.train(was_training)
    return model


def freeze_observers(model: nn.Module, frozen: bool = True) -> nn.Module:
    """Stop (or restart) the activation observers updating in training mode.

    Late in QAT, freezing the scales lets the weights settle on a fixed integer grid.
    ``model.eval()`` never updates them either way.
    """
    for m in model.modules():
        if isinstance(m, ActObserver):
            m.frozen = frozen
    return model


def _images(batch) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        for key in ("image", "images", "input"):
            if key in batch:
                return batch[key]
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ConfigError(
        "calibrate: each batch must be an image tensor (N, 3, H, W), a (images, ...) tuple or a "
        "dict with an 'image' entry"
    )


def calibrate(model: nn.Module, batches: Iterable, max_batches: int | None = None) -> nn.Module:
    """Initialise/refine the activation observers on ``batches`` of raw-pixel images.

    Runs the training path without gradients (weights and BN statistics untouched), then
    restores the model's train/eval mode; ``model.eval()`` freezes the observers.
    """
    if not is_quantized(model):
        raise ConfigError("calibrate: the model is not quantised; call prepare_qat first")
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for index, batch in enumerate(batches):
                if max_batches is not None and index >= max_batches:
                    break
                model(_images(batch).to(device=device, dtype=torch.float32))
    finally:
        model.train(was_training)
    return model
