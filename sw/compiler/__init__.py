"""The compiler: QGraph + EngineConfig -> :class:`~convforge.sw.runtime.program.Program`.

``compile(qgraph, engine_config)`` runs the passes of :mod:`convforge.sw.compiler.passes`
in order (legalise, lower, fuse, tile, allocate + emit) and returns the Program; its
``report`` lists what each pass did.
"""

from __future__ import annotations

from convforge.hw.config import EngineConfig
from convforge.models.quant.qgraph import QGraph
from convforge.sw.compiler.passes import Compilation, legalise, lower, tile
from convforge.sw.compiler.passes import emit as _emit
from convforge.sw.compiler.passes import fuse as _fuse
from convforge.sw.runtime.cycles import DEFAULT_DDR_GBPS
from convforge.sw.runtime.program import Program

PASSES = ("legalise", "lower", "fuse", "tile", "allocate", "emit")


def compile(qgraph: QGraph, engine_config: EngineConfig, ddr_gbps: float = DEFAULT_DDR_GBPS,
            reuse_buffers: bool = True, fuse: str = "auto") -> Program:  # noqa: A001 - the issue's name
    """Compile ``qgraph`` for ``engine_config``.

    Args:
        qgraph: a validated (or validatable) QGraph.
        engine_config: the engine it will run on.
        ddr_gbps: DDR bandwidth for the cycle model (board profile ``ddr_gbps``).
        reuse_buffers: let the memory plan reuse dead regions (False keeps every tensor
            alive to the end, so a device run can read back every intermediate).
        fuse: run 1x1 -> 3x3 depthwise -> 1x1 chains as on-chip row bands when the engine
            has a scratchpad (``engine_config.fuse_buffer_bytes > 0``): ``"auto"`` where
            the cycle model predicts fewer cycles (band height chosen by it too),
            ``"always"`` wherever the bands fit (the largest band), ``"never"``. A fused
            chain's intermediates never reach DDR and cannot be read back.

    Raises:
        CompileError: a layer the engine cannot run (names the layer, limit and field), or
            an unknown ``fuse`` mode.
    """
    c = Compilation(qgraph, engine_config, ddr_gbps=ddr_gbps, reuse_buffers=reuse_buffers, fuse=fuse)
    legalise(c)
    lower(c)
    _fuse(c)
    tile(c)
    return _emit(c)


__all__ = ["PASSES", "Compilation", "Program", "compile"]
