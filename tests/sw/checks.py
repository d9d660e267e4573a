"""Shared checks for compiled Programs."""

from __future__ import annotations

import numpy as np

from convforge.models.quant.executor import run_qgraph
from convforge.models.quant.qgraph import QGraph
from convforge.sw.runtime.emulator import Emulator, run_program
from convforge.sw.runtime.program import Program


def assert_plan_never_overlaps(program: Program) -> None:
    """No two regions of one memory (DDR buffer, on-chip scratchpad) whose lifetimes
    intersect share a byte; no DDR region overlaps the image; scratchpad regions lie in
    ``fuse_buffer_bytes``."""
    regions = program.regions
    for r in regions:
        if r["space"] == "scratch":
            assert 0 <= r["offset"] and r["offset"] + r["bytes"] <= program.config.fuse_buffer_bytes, r["name"]
            continue
        assert r["space"] == "ddr", r
        assert r["offset"] >= program.image.size, f"region {r['name']} overlaps the image"
        assert r["offset"] + r["bytes"] <= program.buffer_bytes
    for i, a in enumerate(regions):
        for b in regions[i + 1:]:
            live = a["first"] <= b["last"] and b["first"] <= a["last"] and a["space"] == b["space"]
            disjoint = a["offset"] + a["bytes"] <= b["offset"] or b["offset"] + b["bytes"] <= a["offset"]
            assert not live or disjoint, f"live regions {a['name']} and {b['name']} overlap"


def assert_bit_exact(graph: QGraph, program: Program, image: np.ndarray, emulator: Emulator | None = None) -> int:
    """Emulator == integer reference on every tensor in DDR (np.array_equal; a fused chain's
    intermediates are on chip only and checked through the chain's output); returns the
    count compared."""
    assert_plan_never_overlaps(program)
    out = run_program(program, image, emulator)
    ref = run_qgraph(graph, image, keep_all=True)
    readable = program.readable()
    assert set(graph.tensors) - set(readable) == {t for t, p in program.tensors.items() if p.fused}
    bad = [t for t in readable if not np.array_equal(out[t], ref[t].numpy())]
    assert not bad, f"{len(bad)} of {len(readable)} tensors differ, first: {bad[:3]}"
    return len(readable)
