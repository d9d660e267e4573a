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
