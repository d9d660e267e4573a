"""CSR block in cocotb with cocotbext-axi's AxiLiteMaster: every register behaviour of the
generated map, random pauses on all five AXI-Lite channels."""

import pytest

from convforge.errors import ConfigError
from convforge.hw.config import EngineConfig
from convforge.sim.regress import TEST_CONFIG, run_unit_regression

#: cocotb tests in convforge.sim.tb_csr (one case each).
TB_CASES = 7


def test_csr_block_passes_every_register_test_with_random_axi_pauses():
    res = run_unit_regression("csr", TEST_CONFIG, seed=5, cases=40, gap_prob=0.3, stall_prob=0.3)
    assert res.ok and res.passed == TB_CASES, res.summary()


def test_csr_block_passes_under_heavy_back_pressure_and_another_seed():
    res = run_unit_regression("csr", TEST_CONFIG, seed=6, cases=15, gap_prob=0.0, stall_prob=0.75)
    assert res.ok and res.passed == TB_CASES, res.summary()


def test_csr_block_refuses_a_stale_generated_register_module(monkeypatch):
    from convforge.hw.layouts import csr
    from convforge.hw.rtl.csr import CsrBlock

    monkeypatch.setattr(csr, "CFG_WORDS", csr.CFG_WORDS + 1)
    with pytest.raises(ConfigError, match="python -m convforge.hw.regmap"):
        CsrBlock(EngineConfig())


def test_csr_block_refuses_an_address_bus_narrower_than_its_window():
    from convforge.hw.rtl.csr import CsrBlock

    with pytest.raises(ConfigError, match="addr_bits"):
        CsrBlock(EngineConfig(), addr_bits=6)
