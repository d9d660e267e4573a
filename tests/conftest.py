"""Suite-wide rules. ``@pytest.mark.simulator("verilator")`` marks a test that runs RTL in a
simulator: when the simulator is missing it fails under ``CI=true`` and is skipped (with the
install command) elsewhere -- one rule for every simulation test
(:func:`convforge.sim.tools.missing_simulator_outcome`)."""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("simulator")
    if marker is None:
        return
    from convforge.sim.tools import missing_simulator_outcome

    outcome = missing_simulator_outcome(marker.args[0] if marker.args else "verilator")
    if outcome is None:
        return
    action, message = outcome
    if action == "fail":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
