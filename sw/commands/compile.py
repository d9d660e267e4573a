"""``convforge compile``: QGraph + EngineConfig -> Program file (and a report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from convforge.sw.commands.rtl import add_board_config_arguments, resolve_config

NAME = "compile"
HELP = "compile a QGraph into the Program the accelerator runs (descriptors, weights, memory plan)"
DESCRIPTION = (
    "Compile a QGraph (from `convforge export` or the shipped model) for an EngineConfig: the "
    "board's default engine (--board) or a TOML file (--config). Writes OUT/<name>.cfprog, the "
    "versioned Program file the driver and the emulator load, and OUT/<name>.report.txt. "
    "--report also prints what every compiler pass did and, per layer, the unit, passes, "
    "DDR bytes moved and predicted cycles; --fuse chooses which 1x1 -> 3x3 -> 1x1 chains run as "
    "row bands in the on-chip scratchpad (EngineConfig.fuse_buffer_bytes). A layer the engine "
    "cannot run is refused by name "
    "with the EngineConfig field to change; nothing is written then."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qgraph", type=Path, help="QGraph .json (default: the shipped tree model)")
    add_board_config_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--name", help="Program file name (default: the QGraph's file name)")
    p.add_argument("--report", action="store_true", help="print the pass and per-layer report")
    p.add_argument("--no-reuse", action="store_true",
                   help="keep every tensor in its own region (all intermediates readable after a device run)")
    p.add_argument("--fuse", choices=("auto", "always", "never"), default="auto",
                   help="run 1x1 -> 3x3 depthwise -> 1x1 chains as row bands in the on-chip scratchpad "
                        "(EngineConfig.fuse_buffer_bytes): auto = where the cycle model predicts fewer cycles "
                        "(default), always = wherever the bands fit, never = every tensor in DDR (fused "
                        "intermediates cannot be read back)")


def run(args: argparse.Namespace) -> int:
    from convforge.hw.boards import get_board
    from convforge.models.quant.qgraph import QGraph
    from convforge.models.train.zoo import default_qgraph
    from convforge.sw.compiler import compile
    from convforge.sw.compiler.report import format_report

    path = args.qgraph or default_qgraph()
    graph = QGraph.load(path)
    cfg = resolve_config(args.board, args.config)
    program = compile(graph, cfg, ddr_gbps=get_board(args.board).ddr_gbps, reuse_buffers=not args.no_reuse,
                      fuse=args.fuse)
    name = args.name or Path(path).with_suffix("").name
    out = program.save(args.out / f"{name}.cfprog")
    report = format_report(program)
    (args.out / f"{name}.report.txt").write_text(report + "\n")
    if args.report:
        print(report)
    c = program.cycles
    print(f"wrote {out} ({program.n_descriptors} descriptors, buffer {program.buffer_bytes} bytes; "
          f"predicted {c['fps']:.1f} FPS at {cfg.clock_mhz:g} MHz, MAC utilisation {c['mac_utilisation']:.1%})")
    return 0
