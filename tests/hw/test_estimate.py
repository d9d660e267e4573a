"""``convforge.hw.estimate``: the fit check's verdict and message (synthesis replaced by
fixed cell counts), and one real yosys run of the whole accelerator (slow)."""

import pytest

from convforge.errors import ResourceError
from convforge.hw import estimate as est
from convforge.hw.boards import get_board
from convforge.hw.config import EngineConfig

TINY = EngineConfig(pe_ci=2, pe_co=2, dw_lanes=2, line_width=16, max_channels=64, weight_depth=16)


def _fake_synth(counts):
    def synth_rtlil(name, rtlil_text, family, work, timeout_s=0):
        assert "module \\accel" in rtlil_text and family == "xcup"
        return {**counts, "cells": {}, "seconds": 0.0}
    return synth_rtlil


def test_check_fit_names_resource_used_available_and_fields(monkeypatch, tmp_path):
    monkeypatch.setattr(est, "synth_rtlil", _fake_synth({"LUT": 80_000, "FF": 10, "DSP": 2, "BRAM36": 300.5}))
    with pytest.raises(ResourceError) as info:
        est.check_fit(TINY, "ultra96v2", work=tmp_path)
    msg = str(info.value)
    assert "LUT 80000 of 70560" in msg and "BRAM36 300.5 of 216" in msg
    assert "weight_depth=16" in msg and "max_channels=64" in msg
    assert "FF" not in info.value.over and info.value.over["LUT"] == (80_000, 70_560)


def test_check_fit_returns_report_when_within_part(monkeypatch, tmp_path):
    monkeypatch.setattr(est, "synth_rtlil", _fake_synth({"LUT": 70_560, "FF": 10, "DSP": 360, "BRAM36": 1}))
    report = est.check_fit(TINY, get_board("ultra96v2"), work=tmp_path)
    assert report.fits and report.over == [] and report.utilisation["DSP"] == 1.0
    assert "fits" in report.format_table() and report.to_dict()["top"]["LUT"] == 70_560


@pytest.mark.slow
def test_whole_accelerator_estimate_is_real_and_cached(tmp_path):
    report = est.estimate(TINY, "ultra96v2", units=(), work=tmp_path, timeout_s=1800)
    top = report.top
    # the engine's multipliers (requant, residual add) need DSPs; the AXI/CSR registers FFs
    assert top["DSP"] >= 2 and top["FF"] > 1000 and top["LUT"] > 1000
    again = est.estimate(TINY, "ultra96v2", units=(), work=tmp_path)
    assert again.top == top and again.seconds[est.TOP] == report.seconds[est.TOP]
