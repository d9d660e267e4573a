"""Unit regressions: random bit-exact cases per RTL unit, shared by pytest and the CLI.

A regression is a function ``regress(cfg, *, seed, cases, simulator, gap_prob,
stall_prob) -> RegressionResult`` registered for its unit in
:data:`convforge.hw.rtl.units.UNITS` (``UnitSpec.regression = "module:function"``). It
builds the unit once (:func:`convforge.sim.runner.build_design`), plays ``cases`` random
cases drawn from ``seed`` (INTEGER_SPEC §7), compares every output integer with the
golden model (``np.array_equal``) and counts **cases**: ``passed`` + ``failed == cases``.
Every failure message names the seed, the case's shapes and the waveform file.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any

from convforge.errors import SimulationError
from convforge.hw.config import EngineConfig

#: The small engine the regressions use by default: every code path, short simulations.
TEST_CONFIG = EngineConfig(pe_ci=4, pe_co=4, dw_lanes=4, line_width=32)


@dataclass
class RegressionResult:
    """Outcome of one unit's regression.

    Attributes:
        unit: unit name.
        passed, failed: case counts.
        failures: one message per failed case (seed, shapes, waveform path).
        seconds: wall time including the build.
        figures: measured numbers (e.g. ``{"cycles_per_vector": 1.02}``).
    """

    unit: str
    passed: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0

    def check_simulation(self, tb: Any) -> RegressionResult:
        """Count a simulation that failed outside every case (a crash, a timeout) as a
        failure, so a run can never pass on cases it did not reach. Returns ``self``."""
        if not tb.ok and self.failed == 0:
            self.failed += 1
            self.failures.append(f"{self.unit}: simulation failed: {tb.summary()}")
        return self

    def summary(self) -> str:
        lines = [f"{self.unit}: {self.passed} passed, {self.failed} failed ({self.seconds:.1f} s)"]
        lines += [f"  {msg}" for msg in self.failures[:20]]
        return "\n".join(lines)


def load_regression(spec: str):
    """Import ``"package.module:function"``."""
    module, _, func = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise SimulationError(f"regression {spec!r} cannot be loaded ({exc})") from exc


def run_unit_regression(unit: str, cfg: EngineConfig | None = None, *, seed: int = 0,
                        cases: int = 20, simulator: str = "verilator",
                        gap_prob: float = 0.3, stall_prob: float = 0.3) -> RegressionResult:
    """Run the registered regression of ``unit`` (see :mod:`convforge.hw.rtl.units`)."""
    from convforge.hw.rtl.units import get_unit  # noqa: PLC0415
    from convforge.sim.player import check_flow_probabilities  # noqa: PLC0415

    check_flow_probabilities(gap_prob, stall_prob)
    spec = get_unit(unit)
    if spec.regression is None:
        raise SimulationError(f"unit {unit!r} has no regression registered")
    func = load_regression(spec.regression)
    t0 = time.monotonic()
    result = func(cfg or TEST_CONFIG, seed=seed, cases=cases, simulator=simulator,
                  gap_prob=gap_prob, stall_prob=stall_prob)
    result.seconds = time.monotonic() - t0
    return result


def compare_case(result: RegressionResult, *, label: str, got: Any, want: Any,
                 context: str, waves: Any) -> bool:
    """Count one case: ``np.array_equal(got, want)`` on integer arrays; on a mismatch
    record a message with ``context`` (seed, shapes), the first differing index and the
    waveform path. Returns whether the case passed."""
    import numpy as np  # noqa: PLC0415

    got_a = np.asarray(got, dtype=np.int64) if got is not None else None
    want_a = np.asarray(want, dtype=np.int64)
    if got_a is not None and got_a.shape == want_a.shape and np.array_equal(got_a, want_a):
        result.passed += 1
        return True
    result.failed += 1
    if got_a is None:
        detail = "no output (simulation stopped before this case)"
    elif got_a.shape != want_a.shape:
        detail = f"output shape {got_a.shape} != expected {want_a.shape}"
    else:
        idx = tuple(int(i) for i in np.argwhere(got_a != want_a)[0])
        detail = (f"{int((got_a != want_a).sum())} of {want_a.size} integers differ; first at "
                  f"{idx}: got {int(got_a[idx])}, expected {int(want_a[idx])}")
    result.failures.append(f"{result.unit} {label} [{context}]: {detail}; waveform: {waves}")
    return False
