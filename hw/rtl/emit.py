"""Verilog emission of the generated hardware (Amaranth's builtin Yosys).

Emission belongs to ``convforge.hw`` (ARCHITECTURE.md): the CLI's ``rtl`` and ``synth``
commands, the board flows and the testbenches all take Verilog from here.
"""

from __future__ import annotations

from typing import Any


def emit_verilog(component: Any, name: str, ports: list | None = None) -> str:
    """Verilog text of an Amaranth ``wiring.Component`` (or elaboratable with ``ports``),
    top module named ``name``. Uses ``amaranth.back.verilog.convert`` (builtin Yosys)."""
    from amaranth.back import verilog  # noqa: PLC0415

    if ports is None:
        return verilog.convert(component, name=name)
    return verilog.convert(component, name=name, ports=ports)


def emit_rtlil(component: Any, name: str, ports: list | None = None) -> str:
    """RTLIL text of an Amaranth ``wiring.Component`` (or elaboratable with ``ports``), top
    module named ``name`` (``amaranth.back.rtlil.convert``). What synthesis reads
    (:mod:`convforge.hw.estimate`, the ECP5 flow): a memory's initial contents stay one
    ``$meminit_v2`` cell, where Verilog spells out one ``initial`` assignment per word
    (262,144 lines for the Ultra96-V2 engine's weight buffer)."""
    from amaranth.back import rtlil  # noqa: PLC0415

    if ports is None:
        return rtlil.convert(component, name=name)
    return rtlil.convert(component, name=name, ports=ports)
