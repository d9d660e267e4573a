"""``convforge hls``: the Vitis HLS project of a QGraph (hls4ml), C-simulated bit-exactly."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from convforge.hw.hls import DEFAULT_CLOCK_NS, DEFAULT_PART
from convforge.sw.argtypes import non_negative_int, positive_float, positive_int

NAME = "hls"
HELP = "generate the Vitis HLS project of a QGraph with hls4ml (+ bit-exact C simulation)"
DESCRIPTION = (
    "Convert a QGraph into an hls4ml project (Vitis backend, io_stream, integer types) "
    "and write it into --out. convforge's own layers (requantisation, the deformable "
    "convolutions, add, split, shuffle, padded max pool) are registered through hls4ml's "
    "extension API; plain and depthwise convolutions, concat, 2x upsample and unpadded "
    "max pool are hls4ml's own. --csim compiles the C++ with g++ (no Xilinx tool needed), runs "
    "--images random frames through it and compares every layer's output with the integer "
    "reference, ending with 'N passed, M failed' (exit 1 on a failure). --synth runs "
    "'vitis_hls -f build_prj.tcl' in --out when vitis_hls is on PATH, otherwise prints that "
    "command and the Tcl options it wrote."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qgraph", type=Path, required=True, help="QGraph file (.json, with its .npz beside it)")
    p.add_argument("--out", type=Path, required=True, help="project directory to write")
    p.add_argument("--csim", action="store_true", help="C-simulate with g++ and check every layer bit-exactly")
    p.add_argument("--synth", action="store_true", help="run (or print the command of) Vitis HLS C synthesis")
    p.add_argument("--part", default=DEFAULT_PART, help="FPGA part (the default is the Ultra96-V2's)")
    p.add_argument("--clock", type=positive_float, default=DEFAULT_CLOCK_NS, help="clock period in ns")
    p.add_argument("--strategy", default="Latency", choices=["Latency", "Resource"],
                   help="hls4ml strategy of its Conv2D/DepthwiseConv2D (Resource shares multipliers)")
    p.add_argument("--reuse-factor", type=positive_int, default=1, help="hls4ml reuse factor (cycles per multiplier)")
    p.add_argument("--images", type=positive_int, default=1, help="random uint8 frames for --csim")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the --csim frames")
    p.add_argument("--opt", default="-O1", choices=["-O0", "-O1", "-O2", "-O3"], help="g++ optimisation for --csim")


def run(args: argparse.Namespace) -> int:
    from convforge.hw.hls.cases import random_images
    from convforge.hw.hls.csim import csim_check
    from convforge.hw.hls.project import run_synth, synth_plan, write_project
    from convforge.models.quant.qgraph import QGraph

    graph = QGraph.load(args.qgraph)
    t0 = time.perf_counter()
    model_spec = write_project(graph, args.out, args.part, args.clock, args.strategy, args.reuse_factor)
    model = model_spec[0]
    n_custom = sum(layer.class_name.startswith("Cf") for layer in model.get_layers())
    print(f"{args.out}: hls4ml project {model.config.get_project_name()} ({len(model.get_layers())} hls4ml layers, "
          f"{n_custom} convforge layers) for {model.config.get_config_value('Part')} "
          f"written in {time.perf_counter() - t0:.1f} s")
    status = 0
    if args.csim:
        images = random_images(graph, args.images, args.seed)
        print(f"C simulation: g++ {args.opt} build (cached by source hash under build/hls), "
              f"{args.images} frame(s), every layer compared with the integer reference ...", flush=True)
        report = csim_check(graph, images, args.out, opt=args.opt, progress=True, model_spec=model_spec)
        c = report.compile
        print(f"g++ {args.opt}: {'cached library' if c.cached else f'compiled in {c.seconds:.1f} s'}; "
              f"C simulation of {report.images} frame(s): {report.run_s:.2f} s")
        for check in report.checks:
            if not check.ok:
                print(f"FAIL {check.layer} ({check.op}): {check.mismatches}/{check.elements} integers differ; "
                      f"first: {check.first_mismatch}")
        print(report.summary())
        status = 1 if report.failed else 0
    if args.synth:
        plan = synth_plan(args.out)
        if shutil.which(plan.command[0]) is None:
            print(f"vitis_hls is not on PATH; on a machine with Vitis HLS run:\n  {plan.shell()}\n"
                  f"({plan.tcl} selects C synthesis only:)\n{plan.tcl_text.rstrip()}")
        else:
            rpt = run_synth(plan)
            print(f"C synthesis report: {rpt}")
    return status
