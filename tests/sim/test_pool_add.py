"""Max pool and residual add units in cocotb: bit-exact random cases with flow control."""

import pytest

from convforge.sim.regress import TEST_CONFIG, run_unit_regression


@pytest.mark.simulator("verilator")
def test_maxpool_random_blocks_bit_exact_padded_taps_ignored():
    res = run_unit_regression("maxpool", TEST_CONFIG, seed=31, cases=25)
    assert res.ok and res.passed == 25, res.summary()


@pytest.mark.simulator("verilator")
def test_residual_add_random_cases_bit_exact():
    res = run_unit_regression("residual_add", TEST_CONFIG, seed=41, cases=30)
    assert res.ok and res.passed == 30, res.summary()
