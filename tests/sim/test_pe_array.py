"""Pointwise PE array in cocotb: bit-exact random layers, MAC utilisation."""

import pytest

from convforge.hw.config import EngineConfig
from convforge.hw.rtl.pe_array import mac_utilisation
from convforge.sim.regress import TEST_CONFIG, run_unit_regression
from convforge.sim.regress_pe_array import measure_utilisation


@pytest.mark.simulator("verilator")
def test_pe_array_random_layers_bit_exact_with_gaps_and_backpressure():
    res = run_unit_regression("pe_array", TEST_CONFIG, seed=21, cases=30)
    assert res.ok and res.passed == 30, res.summary()


@pytest.mark.parametrize("ci,co", [(64, 64), (96, 40)])
@pytest.mark.simulator("verilator")
def test_pe_array_utilisation_at_least_90_percent_on_wide_layers(ci, co):
    fig = measure_utilisation(TEST_CONFIG, ci, co, npix=12)
    assert fig["bit_exact"]
    assert fig["utilisation"] >= 0.9, fig
    assert fig["cycles_per_pixel"] <= fig["ideal_cycles_per_pixel"] * 1.05, fig


@pytest.mark.simulator("verilator")
def test_pe_array_one_pixel_per_cycle_when_channels_fit_the_array():
    fig = measure_utilisation(TEST_CONFIG, 4, 4, npix=40)
    # 40 pixels back to back: one per cycle plus the pipeline fill
    assert fig["bit_exact"] and fig["cycles"] <= 40 + 12, fig


def test_mac_utilisation_model_counts_only_tail_padding():
    cfg = EngineConfig()
    assert mac_utilisation(64, 64, cfg) == 1.0
    assert mac_utilisation(116, 116, cfg) == pytest.approx(116 * 116 / (128 * 128))


@pytest.mark.slow
@pytest.mark.simulator("verilator")
def test_pe_array_default_16x16_utilisation():
    cfg = EngineConfig(pe_ci=16, pe_co=16)
    fig = measure_utilisation(cfg, 128, 128, npix=16)
    assert fig["bit_exact"] and fig["utilisation"] >= 0.9, fig
