"""Write the Vitis HLS project of a QGraph and run (or spell out) its synthesis.

The project is hls4ml's Vitis project (``firmware/``, ``build_prj.tcl``, the testbench)
with convforge's layers in ``firmware/nnet_utils/nnet_convforge.h``, plus
``convforge_hls.json``: which hls4ml layer implements which QGraph tensor, and which
layers are hls4ml's own versus convforge's.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from convforge import __version__
from convforge.errors import SimulationError
from convforge.models.quant.qgraph import QGraph

#: Seconds a ``vitis_hls`` synthesis may take before it is abandoned.
SYNTH_TIMEOUT_S = 6 * 3600
MANIFEST = "convforge_hls.json"
SYNTH_OPTIONS = {"reset": 1, "csim": 0, "synth": 1, "cosim": 0, "validation": 0, "export": 0, "vsynth": 0,
                 "fifo_opt": 0}


def write_project(graph: QGraph, out: str | Path, part: str | None = None, clock_period_ns: float | None = None,
                  strategy: str = "Latency", reuse_factor: int = 1):
    """Convert ``graph`` and write its hls4ml Vitis project into ``out`` (arguments as
    :func:`~convforge.hw.hls.convert.qgraph_to_spec`).

    Returns:
        ``(model, spec)`` as :func:`~convforge.hw.hls.convert.build_hls_model`.

    Raises:
        HLSConversionError: a layer has no bit-exact HLS mapping.
    """
    from convforge.hw.hls import DEFAULT_CLOCK_NS, DEFAULT_PART
    from convforge.hw.hls.convert import build_hls_model

    out = Path(out).resolve()
    model, spec = build_hls_model(graph, out, part or DEFAULT_PART, clock_period_ns or DEFAULT_CLOCK_NS,
                                  strategy, reuse_factor)
    model.config.trace_output = True  # per-layer trace for --csim; ignored by synthesis
    model.write()
    custom = {name for name, cls in _layer_classes(model).items() if cls.startswith("Cf")}
    manifest = {
        "convforge": __version__,
        "graph": graph.meta.get("name", ""),
        "part": model.config.get_config_value("Part"),
        "clock_period_ns": model.config.get_config_value("ClockPeriod"),
        "strategy": strategy,
        "reuse_factor": reuse_factor,
        "tensors": spec.tensor_layer,
        "layers": {
            name: {"class": cls, "written_by": "convforge" if name in custom else "hls4ml",
                   "qgraph_op": spec.kinds.get(name, "(inserted by hls4ml)")}
            for name, cls in _layer_classes(model).items()
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return model, spec


def _layer_classes(model) -> dict[str, str]:
    return {layer.name: layer.class_name for layer in model.get_layers()}


@dataclass
class SynthPlan:
    """How to synthesise a written project: ``command`` run in ``cwd``; ``tcl`` the options file."""

    command: list[str]
    cwd: Path
    tcl: Path
    tcl_text: str

    def shell(self) -> str:
        return f"cd {shlex.quote(str(self.cwd))} && {shlex.join(self.command)}"


def synth_plan(out: str | Path) -> SynthPlan:
    """Write ``build_opt.tcl`` (C synthesis only) and return the ``vitis_hls`` command."""
    out = Path(out).resolve()
    if not (out / "build_prj.tcl").is_file():
        raise SimulationError(f"{out}: no build_prj.tcl; write the HLS project first (convforge hls --out {out})")
    text = "array set opt {\n" + "".join(f"    {k:<10} {v}\n" for k, v in SYNTH_OPTIONS.items()) + "}\n"
    tcl = out / "build_opt.tcl"
    tcl.write_text(text)
    return SynthPlan(["vitis_hls", "-f", "build_prj.tcl"], out, tcl, text)


def run_synth(plan: SynthPlan, log: Path | None = None) -> Path:
    """Run ``vitis_hls`` (must be on PATH); return the synthesis report path.

    Raises:
        SimulationError: vitis_hls is missing, fails, or exceeds ``SYNTH_TIMEOUT_S``.
    """
    if shutil.which(plan.command[0]) is None:
        raise SimulationError(f"{plan.command[0]} is not on PATH; run on a machine with Vitis HLS: {plan.shell()}")
    log = log or plan.cwd / "vitis_hls.log"
    try:
        with open(log, "w") as fh:
            proc = subprocess.run(plan.command, cwd=plan.cwd, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=SYNTH_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise SimulationError(f"vitis_hls exceeded {SYNTH_TIMEOUT_S} s; log {log}") from exc
    if proc.returncode != 0:
        raise SimulationError(f"vitis_hls failed (exit {proc.returncode}); log {log}")
    reports = sorted(plan.cwd.glob("*_prj/solution1/syn/report/*_csynth.rpt"))
    if not reports:
        raise SimulationError(f"vitis_hls finished but wrote no csynth report; log {log}")
    return reports[0]
