"""``convforge sim`` prints per-unit results and ends with 'N passed, M failed'."""

import pytest

from convforge.sw.cli import main


@pytest.mark.simulator("verilator")
def test_sim_cli_ends_with_pass_fail_line(capsys):
    rc = main(["sim", "--unit", "residual_add", "--seed", "5", "--cases", "4"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and lines[-1] == "4 passed, 0 failed"


@pytest.mark.slow
def test_synth_one_small_unit_reports_resources(tmp_path, capsys):
    import json

    cfg = tmp_path / "tiny.toml"
    from convforge.hw.config import EngineConfig

    cfg.write_text(EngineConfig(pe_ci=1, pe_co=1, dw_lanes=1).to_toml())
    rc = main(["synth", "--config", str(cfg), "--unit", "requant", "--json",
               "--work", str(tmp_path / "synth")])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    r = report["units"]["requant"]
    # one lane: a 33 x 15 multiply needs DSPs, the pipeline registers need FFs
    assert r["DSP"] >= 1 and r["FF"] >= 50 and r["LUT"] > 0
    assert report["budget"]["DSP"] == 360
