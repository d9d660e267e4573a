"""Trace a network built from :mod:`convforge.models.nets.blocks` into a dataflow graph.

The tracer runs the model once with forward hooks on every module. Each call of a block
(see :data:`~convforge.models.nets.blocks.BLOCKS`) becomes one :class:`Node`; modules
inside a block are not looked at. Tensor names are module paths: a block's output is
named after the block (``"backbone.stage2.0.branch2.conv1"``), the outputs of a
:class:`~convforge.models.nets.blocks.ChannelSplit` get ``".0"``, ``".1"``, ... appended,
and the network input is ``"input"``. These are the names the QGraph uses.

Anything the graph cannot express is an :class:`~convforge.errors.ExportError` naming the
module: a module outside a block that does computation itself (a bare ``nn.Conv2d`` or
``nn.ReLU``), a block called twice, or a block input that no block produced (a torch
function such as ``torch.cat`` between blocks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from convforge.errors import ExportError
from convforge.models.nets.blocks import BLOCKS

#: Name of the network input tensor.
INPUT = "input"


@dataclass
class Node:
    """One block call: its module path, the module, and the tensors it reads and writes."""

    name: str
    module: nn.Module
    inputs: list[str]
    outputs: list[str]
    values: list[torch.Tensor] = field(default_factory=list, repr=False)


@dataclass
class Trace:
    """A traced network: nodes in execution (topological) order and the named outputs.

    ``shapes`` maps every tensor name to its ``(C, H, W)``; ``values`` (only with
    ``keep_values``) maps every tensor name to the tensor of the traced run.
    """

    nodes: list[Node]
    outputs: dict[str, str]
    shapes: dict[str, tuple[int, int, int]]
    values: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def producer(self, tensor: str) -> Node | None:
        """The node writing ``tensor`` (``None`` for the network input)."""
        for node in self.nodes:
            if tensor in node.outputs:
                return node
        return None


def _is_block(module: nn.Module) -> bool:
    return isinstance(module, BLOCKS)


def trace(model: nn.Module, x: torch.Tensor, keep_values: bool = False) -> Trace:
    """Run ``model(x)`` once and record its block-level dataflow graph.

    Args:
        model: a network whose forward calls only blocks (and containers of blocks) and
            returns a tensor or a dict of tensors.
        x: an input batch ``(N, C, H, W)``.
        keep_values: keep every block output tensor (for comparing against an export).

    Returns:
        The :class:`Trace`. Output names are the dict keys (``"out"`` for a single tensor).

    Raises:
        ExportError: the model uses an operation the graph cannot express (see module doc).
    """
    names = {module: name for name, module in model.named_modules()}
    known: dict[int, str] = {id(x): INPUT}
    keep: list[torch.Tensor] = [x]  # keeps ids unique for the whole run
    nodes: list[Node] = []
    shapes = {INPUT: tuple(int(s) for s in x.shape[1:])}
    values = {INPUT: x} if keep_values else {}
    depth = [0]
    seen: set[str] = set()
    handles = []

    def pre_hook(module: nn.Module, args: tuple) -> None:
        if depth[0] > 0:
            depth[0] += int(_is_block(module))
            return
        name = names.get(module, type(module).__name__)
        if _is_block(module):
            depth[0] += 1
            return
        if not list(module.children()) and module is not model:
            raise ExportError(
                f"module {name!r} ({type(module).__name__}) computes outside a convforge block; "
                "use the blocks of convforge.models.nets.blocks (ConvBNAct, SquareDeformDW, "
                "ChannelSplit, Concat, ChannelShuffle, Upsample2x, MaxPool)"
            )

    def post_hook(module: nn.Module, args: tuple, output) -> None:
        if not _is_block(module):
            return
        depth[0] -= 1
        if depth[0] > 0:
            return
        name = names[module]
        if name in seen:
            raise ExportError(f"block {name!r} is called twice; give each use its own module")
        seen.add(name)
        inputs = []
        for arg in args:
            if not isinstance(arg, torch.Tensor):
                raise ExportError(f"block {name!r} received a non-tensor argument ({type(arg).__name__})")
            if id(arg) not in known:
                raise ExportError(
                    f"an input of block {name!r} ({type(module).__name__}) was computed outside the "
                    "convforge blocks (by a torch function or an unsupported module); express it "
                    "with the blocks of convforge.models.nets.blocks"
                )
            inputs.append(known[id(arg)])
        outs = list(output) if isinstance(output, tuple | list) else [output]
        out_names = [name] if len(outs) == 1 and not isinstance(output, tuple | list) else [
            f"{name}.{i}" for i in range(len(outs))
        ]
        for t, n in zip(outs, out_names, strict=True):
            known[id(t)] = n
            keep.append(t)
            shapes[n] = tuple(int(s) for s in t.shape[1:])
            if keep_values:
                values[n] = t
        nodes.append(Node(name, module, inputs, out_names, list(outs) if keep_values else []))

    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook))
    try:
        result = model(x)
    finally:
        for h in handles:
            h.remove()
    heads = result if isinstance(result, dict) else {"out": result}
    outputs = {}
    for head, t in heads.items():
        if id(t) not in known:
            raise ExportError(f"model output {head!r} was not produced by a convforge block")
        outputs[head] = known[id(t)]
    return Trace(nodes, outputs, shapes, values)
