"""HLS (hls4ml) C-simulation figures: per layer kind and for the CoDeNet reference tree model.

For every layer kind of :data:`convforge.hw.hls.cases.KINDS` (a 32x32 frame, 16 channels)
and for the CoDeNet reference tree model: seconds to write the hls4ml project, to compile its C
simulation with g++ (layer kinds: always, in a fresh cache; the shipped model: only when
``build/hls`` does not hold its library yet, else ``compile_cached``), and to C-simulate
one frame (a kind's graph is the tested layer plus the 1x1 convolutions making its
inputs), plus
the bit-exact check against the integer reference (layers passed / failed). Whether
``vitis_hls`` is on PATH; if not, the command that synthesises the shipped model's project.

Writes its figures under the key ``"hls"`` of ``benchmarks/results.json`` (read, modified
and written back: other benchmarks keep their keys) and returns them for ``run.py``.

    python benchmarks/hls_bench.py [--kinds conv3x3 ...] [--no-model]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"
FRAMES = 4


def _csim(graph, frames: int, work: Path, cache_root: Path | None) -> dict:
    from convforge.hw.hls.cases import random_images
    from convforge.hw.hls.csim import csim_check
    from convforge.hw.hls.project import write_project

    t = time.perf_counter()
    model_spec = write_project(graph, work / "prj")
    write_s = time.perf_counter() - t
    report = csim_check(graph, random_images(graph, frames, seed=1), work / "prj", cache_root=cache_root,
                        model_spec=model_spec)
    return {
        "qgraph_layers": len(graph.layers),
        "hls4ml_layers": len(model_spec[0].get_layers()),
        "frames": frames,
        "write_s": write_s,
        "compile_s": None if report.compile.cached else report.compile.seconds,
        "compile_cached": report.compile.cached,
        "csim_s_per_frame": report.run_s / frames,
        "passed": report.passed,
        "failed": report.failed,
        "elements_checked": sum(c.elements for c in report.checks),
    }


def bench(kinds: list[str] | None = None, model: bool = True, frames: int = FRAMES) -> dict:
    """Measure; return the ``"hls"`` figures (see the module docstring)."""
    from convforge.hw.hls.cases import KINDS, layer_case
    from convforge.hw.hls.csim import DEFAULT_OPT
    from convforge.hw.hls.project import synth_plan

    out: dict = {"g++": DEFAULT_OPT, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                 "layer_kinds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds or KINDS:
            graph = layer_case(kind, seed=0, stride=1, h=32, w=32, c=16)
            out["layer_kinds"][kind] = _csim(graph, frames, Path(tmp) / kind, Path(tmp) / "cache")
        if model:
            from convforge.models.quant.qgraph import QGraph
            from convforge.models.train.zoo import CODENET_NAME, get_model

            graph = QGraph.load(get_model(CODENET_NAME).qgraph)
            work = Path(tmp) / "shipped"
            # the shipped model's library is cached in build/hls like `convforge hls --csim`'s:
            # its g++ build takes many minutes, so a repeated `make bench` reuses it
            out["shipped_model"] = {"qgraph": get_model(CODENET_NAME).qgraph.name, **_csim(graph, 1, work, None)}
            plan = synth_plan(work / "prj")
            out["vitis_hls"] = {
                "on_path": shutil.which("vitis_hls") is not None,
                "note": ("vitis_hls is not on PATH here: no C-synthesis figures. On a machine with Vitis HLS run "
                         f"`convforge hls --qgraph {get_model(CODENET_NAME).qgraph} --out DIR --synth`, i.e. "
                         f"`cd DIR && {' '.join(plan.command)}` (build_opt.tcl: synth 1, csim 0, cosim 0)"),
            }
    return out


def record(figures: dict, path: Path = RESULTS) -> None:
    """Read ``path`` (if any), set its ``"hls"`` key, write it back."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["hls"] = figures
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


def run() -> dict:
    """Entry point of ``benchmarks/run.py``: measure everything and record it."""
    figures = bench()
    record(figures)
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", nargs="*", help="only these layer kinds")
    p.add_argument("--no-model", action="store_true", help="skip the shipped model")
    p.add_argument("--frames", type=int, default=FRAMES, help="frames per layer-kind C simulation")
    args = p.parse_args(argv)
    figures = bench(args.kinds, not args.no_model, args.frames)
    record(figures)
    print(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
