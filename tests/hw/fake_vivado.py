#!/usr/bin/env python3
"""A stand-in for Vivado that *runs* the generated Tcl in a real Tcl interpreter (Python's
tkinter, no display) and records every Vivado command instead of executing it.

Real Tcl parses and evaluates the scripts (syntax, variables, control flow, ``file copy``,
the ``timing.json`` the build writes); Vivado's commands are procs that record their
arguments and answer queries from what was recorded (``get_property CONFIG.X`` returns
what ``set_property`` set). Used by tests/hw/test_vivado_flow.py in-process
(:func:`run_tcl`) and as a ``vivado`` executable on PATH (``vivado -mode batch -source
FILE ... -tclargs N``) for the ``convforge build`` test.

Knobs (environment, for the executable): FAKE_VIVADO_WNS (ns, default 0.123),
FAKE_VIVADO_CLOCK_RATIO (reached / requested PL clock, default 0.99999).
"""

from __future__ import annotations

import json
import os
import sys
import tkinter
from pathlib import Path

_PROCS = r"""
set ::calls {}
set ::cells [dict create]
set ::props [dict create]
set ::exit_code 0
proc _rec {args} { lappend ::calls $args }
proc unknown {args} { _rec {*}$args; return "" }
proc exit {{code 0}} { set ::exit_code $code; return -code return }
proc create_bd_cell {args} {
  _rec create_bd_cell {*}$args
  set name [lindex $args end]
  dict set ::cells $name [lindex $args [expr {[lsearch $args -vlnv] + 1}]]
  return $name
}
proc set_property {args} {
  _rec set_property {*}$args
  set obj [lindex $args end]
  if {[lindex $args 0] eq "-dict"} {
    foreach {k v} [lindex $args 1] { dict set ::props $obj $k $v }
  } else {
    dict set ::props $obj [lindex $args 0] [lindex $args 1]
  }
}
proc get_property {name obj} {
  _rec get_property $name $obj
  switch -glob -- $name {
    PROGRESS { return "100%" }
    DIRECTORY { return $::fake_run_dir }
    STATS.WNS { return $::fake_wns }
    STATS.WHS { return 0.021 }
    STARTPOINT_PIN { return "convforge_0/inst/engine/pe/acc_reg/C" }
    ENDPOINT_PIN { return "convforge_0/inst/engine/pe/out_reg/D" }
    CONFIG.*ACT_FREQMHZ* -
    CONFIG.PCW_ACT_* {
      set req [dict get $::props $obj [string map {__ACT_FREQMHZ __FREQMHZ PCW_ACT_FPGA0 PCW_FPGA0} $name]]
      return [expr {$req * $::fake_clock_ratio}]
    }
    default { return [dict get $::props $obj $name] }
  }
}
proc get_bd_cells {args} { return [lindex $args end] }
proc get_bd_pins {args} { return [lindex $args end] }
proc get_bd_intf_pins {args} { return [lindex $args end] }
proc get_bd_addr_spaces {args} { return [lindex $args end] }
proc get_bd_addr_segs {args} {
  set i [lsearch $args -of_objects]
  if {$i >= 0} { return "[lindex $args [expr {$i + 1}]]/DDR_SEGMENT" }
  return [lindex $args end]
}
proc get_board_parts {args} { _rec get_board_parts {*}$args; return $::fake_board_parts }
proc get_runs {name} { return $name }
proc get_files {args} {
  _rec get_files {*}$args
  if {[string match *.hwh [lindex $args end]]} { return $::fake_hwh }
  return [lindex $args end]
}
proc make_wrapper {args} { _rec make_wrapper {*}$args; return "convforge_wrapper.v" }
proc get_timing_paths {args} { return "path0" }
proc _report {args} {
  _rec {*}$args
  set f [open [lindex $args [expr {[lsearch $args -file] + 1}]] w]; puts $f "fake [lindex $args 0]"; close $f
}
proc report_timing_summary {args} { _report report_timing_summary {*}$args }
proc report_utilization {args} { _report report_utilization {*}$args }
"""


def interpreter(workdir: Path, wns: float = 0.123, clock_ratio: float = 0.99999, board_parts: str = "",
                argv: list[str] | None = None) -> tkinter.Tcl:
    """A Tcl interpreter with the fake Vivado commands; run outputs go under ``workdir``."""
    tcl = tkinter.Tcl()
    run_dir = workdir / "fake_impl_1"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "convforge_wrapper.bit").write_bytes(b"\x00\x09\x0f\xf0fake bitstream")
    hwh = workdir / "fake_convforge.hwh"
    hwh.write_text("<MODULES/>\n")
    tcl.eval(_PROCS)
    tcl.setvar("fake_run_dir", str(run_dir))
    tcl.setvar("fake_hwh", str(hwh))
    tcl.setvar("fake_wns", str(wns))
    tcl.setvar("fake_clock_ratio", str(clock_ratio))
    tcl.setvar("fake_board_parts", board_parts)
    tcl.eval("set argv {" + " ".join(argv or []) + "}")
    return tcl


def calls(tcl: tkinter.Tcl) -> list[tuple[str, ...]]:
    """Every recorded Vivado command, as a tuple of its words."""
    n = int(tcl.eval("llength $::calls"))
    return [tuple(tcl.splitlist(tcl.eval(f"lindex $::calls {i}"))) for i in range(n)]


def properties(tcl: tkinter.Tcl, obj: str) -> dict[str, str]:
    """Properties ``set_property`` set on ``obj``."""
    if tcl.eval(f"dict exists $::props {{{obj}}}") != "1":
        return {}
    flat = tcl.splitlist(tcl.eval(f"dict get $::props {{{obj}}}"))
    return dict(zip(flat[::2], flat[1::2], strict=True))


def cells(tcl: tkinter.Tcl) -> dict[str, str]:
    """Block-design cells created: instance name -> VLNV."""
    flat = tcl.splitlist(tcl.eval("set ::cells"))
    return dict(zip(flat[::2], flat[1::2], strict=True))


def run_tcl(script: Path, workdir: Path, *, preamble: str = "", **kwargs) -> tkinter.Tcl:
    """Source ``script`` in a fake-Vivado interpreter (after ``preamble``); returns the interpreter."""
    tcl = interpreter(workdir, **kwargs)
    if preamble:
        tcl.eval(preamble)
    tcl.eval(f"source {{{script}}}")
    return tcl


def main(argv: list[str]) -> int:
    """``vivado -mode batch -source FILE [-log L] [-journal J] [-tclargs ...]`` (cwd: the project)."""
    if "-source" not in argv or argv[argv.index("-mode") + 1] != "batch":
        print(f"fake vivado: unsupported arguments {argv}", file=sys.stderr)
        return 64
    script = Path(argv[argv.index("-source") + 1])
    tclargs = argv[argv.index("-tclargs") + 1:] if "-tclargs" in argv else []
    log = Path(argv[argv.index("-log") + 1]) if "-log" in argv else Path("vivado.log")
    tcl = interpreter(Path.cwd() / ".fake_vivado", wns=float(os.environ.get("FAKE_VIVADO_WNS", "0.123")),
                      clock_ratio=float(os.environ.get("FAKE_VIVADO_CLOCK_RATIO", "0.99999")), argv=tclargs)
    tcl.eval("rename puts _puts; proc puts {args} { _puts {*}$args; flush stdout }")
    try:
        tcl.eval(f"source {{{script}}}")
    except tkinter.TclError as exc:
        print(f"ERROR: {exc}", flush=True)
        log.write_text(json.dumps(calls(tcl)))
        return 1
    log.write_text(json.dumps(calls(tcl)))
    return int(tcl.getvar("exit_code"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
