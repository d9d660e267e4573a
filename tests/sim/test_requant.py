"""Requant unit in cocotb: bit-exact with intops on random cases with flow control."""

import pytest

from convforge.hw.config import EngineConfig
from convforge.sim.regress import TEST_CONFIG, run_unit_regression


@pytest.mark.simulator("verilator")
def test_requant_random_cases_bit_exact_with_gaps_and_backpressure():
    res = run_unit_regression("requant", TEST_CONFIG, seed=11, cases=40)
    assert res.ok and res.passed == 40, res.summary()


@pytest.mark.simulator("verilator")
@pytest.mark.slow
def test_requant_narrow_accumulator_bit_exact():
    cfg = EngineConfig(pe_ci=4, pe_co=3, dw_lanes=4, line_width=32, acc_bits=20)
    res = run_unit_regression("requant", cfg, seed=12, cases=15, gap_prob=0.0, stall_prob=0.5)
    assert res.ok and res.passed == 15, res.summary()


@pytest.mark.simulator("verilator")
def test_requant_regression_reports_seed_shapes_and_waveform_on_mismatch(monkeypatch):
    from convforge.sim import regress_requant

    real = regress_requant.golden
    monkeypatch.setattr(regress_requant, "golden", lambda case: real(case) + 1)  # wrong oracle
    res = run_unit_regression("requant", TEST_CONFIG, seed=11, cases=3)
    assert res.failed == 3 and res.passed == 0
    msg = res.failures[0]
    assert "seed 11" in msg and "lanes" in msg and "first at" in msg
    assert "dump.vcd" in msg
