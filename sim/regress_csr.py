"""Regression of :class:`convforge.hw.rtl.csr.CsrBlock`: the cocotb tests of
:mod:`convforge.sim.tb_csr` (cocotbext-axi ``AxiLiteMaster`` with random pauses on all
five channels), each test one case.

``cases`` sets the random write/read rounds of the RW-register test; ``gap_prob`` and
``stall_prob`` (their maximum) the pause probability of the AXI channels.
"""

from __future__ import annotations

from convforge.hw.config import EngineConfig
from convforge.hw.rtl.csr import CsrBlock
from convforge.sim.regress import RegressionResult
from convforge.sim.runner import build_design, run_testbench


def regress(cfg: EngineConfig, *, seed: int = 0, cases: int = 20, simulator: str = "verilator",
            gap_prob: float = 0.3, stall_prob: float = 0.3) -> RegressionResult:
    """Build the CSR block for ``cfg`` and run every cocotb test of ``tb_csr``."""
    handle = build_design("csr", component_factory=lambda: CsrBlock(cfg), simulator=simulator,
                          params=cfg.to_dict())
    params = {"seed": seed, "pause_prob": max(gap_prob, stall_prob), "rounds": cases,
              "cfg_words": cfg.to_csr_words(), "byte_max": cfg.axi_data_bits // 8}
    tb = run_testbench(handle, "convforge.sim.tb_csr", params=params, seed=seed)
    res = RegressionResult("csr", passed=tb.passed, failed=tb.failed,
                           failures=[f"csr seed {seed}: {f}; log {tb.log}; waveform: {tb.waves}"
                                     for f in tb.failures])
    return res.check_simulation(tb)
