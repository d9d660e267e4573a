"""cocotb drivers and sinks for ``amaranth.lib.stream`` interfaces, with random flow control.

An Amaranth stream member ``i`` of a component becomes the Verilog ports ``i__valid``,
``i__ready`` and ``i__payload`` (``amaranth.back.verilog``); these classes drive them.

Timing model (one coroutine steps everything, so results never depend on the
simulator's scheduling order): on every **falling** clock edge each driver and sink
writes its outputs (``valid``/``payload`` resp. ``ready``), then in the ``ReadOnly``
phase after the writes every one samples ``valid && ready`` -- exactly the values the
design sees at the next rising edge, where the transfer happens.

* :class:`StreamDriver` sends a queue of payloads with **random valid gaps**
  (probability ``gap_prob`` per idle cycle); once ``valid`` is high it holds the payload
  until accepted (AMBA-stream rules, which ``amaranth.lib.stream`` follows).
* :class:`StreamSink` collects payloads with **random back-pressure** (``ready`` low with
  probability ``stall_prob`` per cycle).
* :class:`StreamBench` owns the clock, the reset and the cycle loop.

Payloads are raw integers; :func:`pack`/:func:`unpack` (re-exported from
:mod:`convforge.hw.packing`) convert to and from Python values with the RTL's own
``data.Layout`` objects. Every random choice comes from a seeded ``random.Random``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from convforge.hw.packing import pack, unpack

__all__ = ["StreamBench", "StreamDriver", "StreamSink", "pack", "unpack", "write_signal"]


def write_signal(handle: Any, value: int) -> None:
    """Write an integer to a port, two's-complement wrapped to the port's width."""
    try:
        width = len(handle)
    except TypeError:
        width = 1
    handle.value = int(value) & ((1 << width) - 1)


def _read_int(handle: Any) -> int:
    return int(handle.value.to_unsigned()) if hasattr(handle.value, "to_unsigned") else int(handle.value)


class _StreamPorts:
    """The ``<name>__valid``/``__ready``/``__payload`` ports of one stream of ``dut``."""

    def __init__(self, dut: Any, name: str, rng: random.Random, shape: Any) -> None:
        self.name = name
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload", None)
        self.rng = rng
        self.shape = shape


class StreamDriver(_StreamPorts):
    """Drives the ``<name>__valid``/``__payload`` ports of an input stream of ``dut``.

    Args:
        dut: the cocotb top-level handle.
        name: the stream member name (``"i"`` for ports ``i__valid`` ...).
        rng: seeded random source for the gaps.
        gap_prob: probability of an idle cycle before each payload (0: back-to-back).
        shape: optional payload layout; then :meth:`send_values` packs Python values.
    """

    def __init__(self, dut: Any, name: str, rng: random.Random, gap_prob: float = 0.0,
                 shape: Any = None) -> None:
        super().__init__(dut, name, rng, shape)
        self.gap_prob = gap_prob
        self.queue: deque[int] = deque()
        self.sent = 0
        self._holding = False
        self.valid.value = 0

    def send(self, payloads: Iterable[int]) -> None:
        """Queue raw payload integers."""
        self.queue.extend(int(p) for p in payloads)

    def send_values(self, values: Iterable[Any]) -> None:
        """Queue Python values, packed with the driver's ``shape``."""
        self.send(pack(self.shape, v) for v in values)

    @property
    def idle(self) -> bool:
        return not self.queue and not self._holding

    def drive(self) -> None:
        if not self._holding and self.queue and self.rng.random() >= self.gap_prob:
            self._holding = True
            if self.payload is not None:
                write_signal(self.payload, self.queue[0])
        self.valid.value = int(self._holding)

    def sample(self) -> None:
        if self._holding and int(self.ready.value):
            self.queue.popleft()
            self._holding = False
            self.sent += 1


class StreamSink(_StreamPorts):
    """Collects payloads from the ``<name>__valid``/``__payload`` ports of an output
    stream, driving ``<name>__ready`` low with probability ``stall_prob`` per cycle.
    Received raw integers accumulate in :attr:`received` (with the cycle of arrival in
    :attr:`cycles`)."""

    def __init__(self, dut: Any, name: str, rng: random.Random, stall_prob: float = 0.0,
                 shape: Any = None) -> None:
        super().__init__(dut, name, rng, shape)
        self.stall_prob = stall_prob
        self.received: list[int] = []
        self.cycles: list[int] = []
        self._ready = 0
        self.ready.value = 0

    def values(self) -> list[Any]:
        """Received payloads unpacked with the sink's ``shape``."""
        return [unpack(self.shape, p) for p in self.received]

    def drive(self) -> None:
        self._ready = int(self.rng.random() >= self.stall_prob)
        self.ready.value = self._ready

    def sample(self, cycle: int) -> None:
        if self._ready and int(self.valid.value):
            self.received.append(_read_int(self.payload) if self.payload is not None else 0)
            self.cycles.append(cycle)


class StreamBench:
    """Clock, reset and the falling-edge/ReadOnly cycle loop for drivers and sinks.

    Args:
        dut: cocotb top-level handle with ``clk`` (and ``rst``, active high, if present).
        clock_ns: clock period in ns (only matters for waveforms).
    """

    def __init__(self, dut: Any, clock_ns: float = 10.0) -> None:
        self.dut = dut
        self.clock_ns = clock_ns
        self.drivers: list[StreamDriver] = []
        self.sinks: list[StreamSink] = []
        self.cycle = 0
        self._writes: dict[str, int] = {}

    def set(self, port: str, value: int) -> None:
        """Write ``value`` to a plain input port at the start of the next cycle (writes
        are not allowed in the ReadOnly phase where the loop rests)."""
        self._writes[port] = int(value)

    def add_driver(self, driver: StreamDriver) -> StreamDriver:
        self.drivers.append(driver)
        return driver

    def add_sink(self, sink: StreamSink) -> StreamSink:
        self.sinks.append(sink)
        return sink

    async def start(self, reset_cycles: int = 3) -> None:
        """Start the clock and pulse ``rst``."""
        cocotb.start_soon(Clock(self.dut.clk, self.clock_ns, unit="ns").start())
        rst = getattr(self.dut, "rst", None)
        if rst is not None:
            rst.value = 1
        for _ in range(reset_cycles):
            await RisingEdge(self.dut.clk)
        if rst is not None:
            rst.value = 0
        await FallingEdge(self.dut.clk)

    async def step(self) -> None:
        """One clock cycle: drive on the falling edge, sample in ReadOnly."""
        await FallingEdge(self.dut.clk)
        for port, value in self._writes.items():
            write_signal(getattr(self.dut, port), value)
        self._writes.clear()
        for d in self.drivers:
            d.drive()
        for s in self.sinks:
            s.drive()
        await ReadOnly()
        for d in self.drivers:
            d.sample()
        for s in self.sinks:
            s.sample(self.cycle)
        self.cycle += 1

    async def run_until(self, done: Callable[[], bool], timeout_cycles: int) -> bool:
        """Step until ``done()`` holds (True) or ``timeout_cycles`` pass (False)."""
        for _ in range(timeout_cycles):
            if done():
                return True
            await self.step()
        return done()

    async def idle(self, cycles: int) -> None:
        """Step ``cycles`` cycles (sinks keep collecting)."""
        for _ in range(cycles):
            await self.step()
