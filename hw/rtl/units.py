"""Registry of the RTL units: name -> how to build it, what it is, how to verify it.

The CLI (``convforge rtl``, ``convforge sim``, ``convforge synth``) iterates over
:data:`UNITS`. To add a unit, add one :class:`UnitSpec` to the tuple below; factories
import their module lazily so a broken unit never stops the others from loading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convforge.errors import ConfigError
from convforge.hw.config import EngineConfig


@dataclass(frozen=True)
class UnitSpec:
    """One RTL unit.

    Attributes:
        name: registry key and Verilog top module name.
        factory: builds the ``wiring.Component`` for an :class:`EngineConfig`.
        description: one line for reports.
        regression: ``"module:function"`` of its random regression
            (:mod:`convforge.sim.regress`), or None.
    """

    name: str
    factory: Callable[[EngineConfig], Any]
    description: str
    regression: str | None = None


def _requant(cfg: EngineConfig) -> Any:
    from convforge.hw.rtl.requant import Requant  # noqa: PLC0415

    return Requant(cfg)


def _pe_array(cfg: EngineConfig) -> Any:
    from convforge.hw.rtl.pe_array import PEArray  # noqa: PLC0415

    return PEArray(cfg)


def _depthwise(cfg: EngineConfig) -> Any:
    from convforge.hw.rtl.depthwise import DepthwiseUnit  # noqa: PLC0415

    return DepthwiseUnit(cfg)


def _maxpool(cfg: EngineConfig) -> Any:
    from convforge.hw.rtl.pool_add import MaxPool  # noqa: PLC0415

    return MaxPool(cfg)


def _residual_add(cfg: EngineConfig) -> Any:
    from convforge.hw.rtl.pool_add import ResidualAdd  # noqa: PLC0415

    return ResidualAdd(cfg)


def _csr(cfg: EngineConfig) -> Any:
    from convforge.hw.rtl.csr import CsrBlock  # noqa: PLC0415

    return CsrBlock(cfg)


def _accel(cfg: EngineConfig) -> Any:
    from convforge.hw.rtl.accel import Accelerator  # noqa: PLC0415

    return Accelerator(cfg)


UNITS: dict[str, UnitSpec] = {
    u.name: u
    for u in (
        UnitSpec("requant", _requant,
                 "requant + activation per output lane: sat(rshift_round((acc+bias)*M, S), lo, hi)",
                 "convforge.sim.regress_requant:regress"),
        UnitSpec("pe_array", _pe_array,
                 "pointwise PE array Ci_p x Co_p int8 x int(w_bits) MACs with requant",
                 "convforge.sim.regress_pe_array:regress"),
        UnitSpec("depthwise", _depthwise,
                 "depthwise 3x3 with line buffer: regular / square-deformable / bilinear-deformable, requant",
                 "convforge.sim.tb_depthwise:regress"),
        UnitSpec("maxpool", _maxpool,
                 "max pool k x k, stride s, padding p (padded taps ignored)",
                 "convforge.sim.regress_pool_add:regress_maxpool"),
        UnitSpec("residual_add", _residual_add,
                 "residual add sat(rshift_round(a*Ma + b*Mb, S), lo, hi)",
                 "convforge.sim.regress_pool_add:regress_add"),
        UnitSpec("csr", _csr,
                 "AXI4-Lite CSR block generated from hw/regmap/convforge.rdl (control, status, counters, config)",
                 "convforge.sim.regress_csr:regress"),
        UnitSpec("accel", _accel,
                 "accelerator top: CSR + controller (runs a whole Program) + AXI4 DMA + every opcode",
                 "convforge.sim.regress_accel:regress"),
    )
}


def get_unit(name: str) -> UnitSpec:
    """Look a unit up; an unknown name lists the known ones."""
    if name not in UNITS:
        raise ConfigError(f"unknown RTL unit {name!r}; known units: {', '.join(UNITS)}")
    return UNITS[name]
