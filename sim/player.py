"""Host side of the generic stream player (:mod:`convforge.sim.tb_stream`).

Build the design with :func:`convforge.sim.runner.build_design`, describe the test as a
list of :class:`Phase` objects holding packed payloads (pack them with
:func:`convforge.hw.packing.pack` and the RTL's layouts), and call :func:`play_streams`.
The returned :class:`PlayResult` has the collected payloads and cycle counts per phase; a
timeout, a surplus payload or a difference from ``Phase.expect`` fails the run, which then
leaves a waveform (``result.tb.waves``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from convforge.errors import ConfigError
from convforge.sim.runner import DesignHandle, TestbenchResult, run_testbench


def check_flow_probabilities(gap_prob: float, stall_prob: float) -> None:
    """Refuse valid-gap / back-pressure probabilities outside ``[0, 1)`` before anything is
    simulated (1 would stall a stream forever; above 1 or NaN is no probability at all)."""
    for name, p in (("gap_prob", gap_prob), ("stall_prob", stall_prob)):
        if not (isinstance(p, int | float) and 0.0 <= p < 1.0):
            raise ConfigError(f"{name} = {p!r} is not a probability in [0, 1); the flow-control randomisation "
                              "needs 0 <= p < 1 (0: no gaps/stalls)")

TB_MODULE = "convforge.sim.tb_stream"


@dataclass
class Phase:
    """One step of a stream test.

    Attributes:
        label: name used in messages (e.g. ``"case 3 weights"``).
        signals: plain input ports to set before the phase (``{"lo": -128}``).
        inputs: packed payloads per input stream.
        outputs: how many payloads each output stream must deliver in this phase.
        expect: optional packed payloads each output stream must deliver.
    """

    label: str
    signals: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, list[int]] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    expect: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "signals": self.signals, "inputs": self.inputs,
                "outputs": self.outputs, "expect": self.expect}


@dataclass
class PlayResult:
    """What :func:`play_streams` observed.

    Attributes:
        tb: the cocotb run (pass/fail counts, log, waveform on failure).
        outputs: per phase, the packed payloads collected per output stream.
        cycles: per phase, clock cycles from its start until its last payload.
    """

    tb: TestbenchResult
    outputs: list[dict[str, list[int]]]
    cycles: list[int]

    @property
    def ok(self) -> bool:
        return self.tb.ok


def play_streams(
    handle: DesignHandle,
    phases: list[Phase],
    *,
    inputs: list[str],
    outputs: list[str],
    seed: int,
    gap_prob: float = 0.3,
    stall_prob: float = 0.3,
    timeout_cycles: int = 200_000,
    run_name: str | None = None,
    waves_on_failure: bool = True,
) -> PlayResult:
    """Run ``phases`` on ``handle`` with random valid gaps (``gap_prob``) on the input
    streams and random back-pressure (``stall_prob``) on the output streams.

    Raises:
        ConfigError: a probability outside ``[0, 1)`` (checked before building anything).
    """
    check_flow_probabilities(gap_prob, stall_prob)
    params = {"seed": seed, "gap_prob": gap_prob, "stall_prob": stall_prob,
              "timeout_cycles": timeout_cycles, "inputs": inputs, "outputs": outputs,
              "phases": [p.to_json() for p in phases]}
    tb = run_testbench(handle, TB_MODULE, params=params, seed=seed, run_name=run_name,
                       waves_on_failure=waves_on_failure)
    out_file = tb.run_dir / "stream_out.json"
    got, cycles = [], []
    if out_file.is_file():
        data = json.loads(out_file.read_text())
        got = [ph["outputs"] for ph in data["phases"]]
        cycles = [ph["cycles"] for ph in data["phases"]]
    return PlayResult(tb, got, cycles)
