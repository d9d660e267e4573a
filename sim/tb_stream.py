"""Generic cocotb stream player: drive input streams, collect output streams, phase by phase.

Run it with :func:`convforge.sim.player.play_streams` (host side), which writes the
parameters below and reads the results back; any design whose interface is
``amaranth.lib.stream`` streams plus plain input ports can be tested with it.

Parameters (``tb_params()``):
    ``seed``, ``gap_prob``, ``stall_prob``, ``clock_ns``, ``timeout_cycles`` (per phase),
    ``drain_cycles`` (after the last phase, to catch surplus outputs), ``inputs`` and
    ``outputs`` (stream member names), and ``phases``: a list of
    ``{"label", "signals": {port: int}, "inputs": {stream: [payload ints]},
    "outputs": {stream: count}, "expect": {stream: [payload ints]} (optional)}``.

Each phase first writes its ``signals``, then drives all its inputs concurrently (random
valid gaps) while every sink collects with random back-pressure, until every input was
accepted and every output stream delivered its ``count`` payloads. Results go to
``stream_out.json`` in the run directory: per phase the collected payloads and the cycle
count, plus ``extra`` payloads that arrived after the last phase. The cocotb test fails
on a timeout, a surplus payload, or a payload that differs from ``expect``.
"""

from __future__ import annotations

import json
import random

import cocotb

from convforge.sim.streams import StreamBench, StreamDriver, StreamSink
from convforge.sim.tbio import tb_output_path, tb_params


@cocotb.test()
async def play(dut) -> None:
    """Play every phase of the parameter file; compare against ``expect``."""
    p = tb_params()
    seed = int(p.get("seed", 0))
    bench = StreamBench(dut, float(p.get("clock_ns", 10.0)))
    drivers = {name: bench.add_driver(StreamDriver(dut, name, random.Random(f"{seed}/in/{name}"),
                                                   float(p.get("gap_prob", 0.0))))
               for name in p.get("inputs", [])}
    sinks = {name: bench.add_sink(StreamSink(dut, name, random.Random(f"{seed}/out/{name}"),
                                             float(p.get("stall_prob", 0.0))))
             for name in p.get("outputs", [])}
    for port, value in p.get("phases", [{}])[0].get("signals", {}).items():
        bench.set(port, value)
    await bench.start()

    timeout = int(p.get("timeout_cycles", 100_000))
    results, problems = [], []
    for phase in p.get("phases", []):
        label = phase.get("label", str(len(results)))
        for port, value in phase.get("signals", {}).items():
            bench.set(port, value)
        start_counts = {name: len(s.received) for name, s in sinks.items()}
        want = {name: int(n) for name, n in phase.get("outputs", {}).items()}
        for name, items in phase.get("inputs", {}).items():
            drivers[name].send(items)
        start = bench.cycle

        def done(start_counts=start_counts, want=want) -> bool:
            return (all(d.idle for d in drivers.values())
                    and all(len(sinks[n].received) - start_counts[n] >= k for n, k in want.items()))

        finished = await bench.run_until(done, timeout)
        got = {}
        for name, sink in sinks.items():
            got[name] = sink.received[start_counts[name]:start_counts[name] + want.get(name, 0)]
            if len(sink.received) - start_counts[name] > want.get(name, 0):
                surplus = sink.received[start_counts[name] + want.get(name, 0):]
                problems.append(f"phase {label}: {len(surplus)} surplus payload(s) on {name!r}")
                del sink.received[start_counts[name] + want.get(name, 0):]
        results.append({"label": label, "outputs": got, "cycles": bench.cycle - start,
                        "timeout": not finished})
        if not finished:
            problems.append(
                f"phase {label}: timeout after {timeout} cycles "
                f"(inputs left: { {n: len(d.queue) for n, d in drivers.items()} }, outputs "
                f"{ {n: len(got[n]) for n in got} } of {want})")
            break
        for name, expected in phase.get("expect", {}).items():
            if got[name] != [int(e) for e in expected]:
                bad = next(i for i, (a, b) in enumerate(zip(got[name], expected, strict=False))
                           if a != int(b)) if len(got[name]) == len(expected) else "length"
                problems.append(f"phase {label}: stream {name!r} differs from expected "
                                f"(first difference at payload {bad})")
    counts = {name: len(s.received) for name, s in sinks.items()}
    await bench.idle(int(p.get("drain_cycles", 16)))
    extra = {name: s.received[counts[name]:] for name, s in sinks.items()}
    for name, items in extra.items():
        if items:
            problems.append(f"{len(items)} surplus payload(s) on {name!r} after the last phase")
    tb_output_path("stream_out.json").write_text(json.dumps({"phases": results, "extra": extra}))
    assert not problems, f"seed {seed}: " + "; ".join(problems[:10])
