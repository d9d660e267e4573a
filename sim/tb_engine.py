"""cocotb testbench of :class:`convforge.hw.rtl.controller.Engine` against cocotbext-axi's
``AxiRam`` (DDR) with random pauses on all five AXI channels.

The control ports (the CSR block's side) are driven directly. Each run of the parameter
list loads a buffer image at ``base``, sets ``prog_offset`` / ``prog_length`` /
``buf_bytes``, pulses ``start`` and waits for ``done`` (a cycle limit per run is a test
failure, never a hang), then writes what it saw to ``run<i>.json`` and the buffer to
``run<i>.bin`` in the run directory; the host compares them with the emulator.

Parameters (``tb_params()``): ``seed``, ``pause_prob``, ``base``, ``ram_bytes``, ``runs``:
a list of ``{"image": file, "prog_offset", "prog_length", "buf_bytes", "max_cycles",
"poison": [lo, hi] (buffer offsets whose reads and writes answer SLVERR), "soft_reset_at":
cycles after start (abort the frame with a soft reset instead of waiting for done)}``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiRam

from convforge.sim.tbio import tb_output_path, tb_params


def _pauses(rng: random.Random, prob: float):
    while True:
        yield rng.random() < prob


def _poison(ram: AxiRam, base: int, window: list[int] | None) -> None:
    """Make reads and writes touching ``[base + lo, base + hi)`` fail (SLVERR)."""
    lo, hi = (base + window[0], base + window[1]) if window else (0, 0)
    read, write = ram.read_if._read, ram.write_if._write

    async def checked_read(address, length):
        if address < hi and address + length > lo:
            raise ValueError("poisoned read")
        return await read(address, length)

    async def checked_write(address, data):
        if address < hi and address + len(data) > lo:
            raise ValueError("poisoned write")
        return await write(address, data)

    ram.read_if._read, ram.write_if._write = checked_read, checked_write


@cocotb.test()
async def run_programs(dut):
    p = tb_params()
    rng = random.Random(p.get("seed", 0))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for name in ("start", "soft_reset", "base_addr", "prog_offset", "prog_length", "buf_bytes"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    base = int(p["base"])
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk, dut.rst,
                 size=int(p["ram_bytes"]))
    prob = float(p.get("pause_prob", 0.3))
    if prob > 0:
        for ch in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
                   ram.read_if.ar_channel, ram.read_if.r_channel):
            ch.set_pause_generator(_pauses(random.Random(rng.random()), prob))
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    for i, run in enumerate(p["runs"]):
        image = Path(run["image"]).read_bytes()
        ram.write(0, bytes(int(p["ram_bytes"])))
        ram.write(base, image)
        _poison(ram, base, run.get("poison"))
        dut.base_addr.value = base
        dut.prog_offset.value = int(run["prog_offset"])
        dut.prog_length.value = int(run["prog_length"])
        dut.buf_bytes.value = int(run["buf_bytes"])
        await RisingEdge(dut.clk)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        cycles, finished = 0, False
        limit = int(run["max_cycles"])
        reset_at = run.get("soft_reset_at")
        while cycles < limit:
            await RisingEdge(dut.clk)
            cycles += 1
            if reset_at is not None and cycles == reset_at:
                dut.soft_reset.value = 1
                await RisingEdge(dut.clk)
                dut.soft_reset.value = 0
                break
            await ReadOnly()
            if int(dut.done.value):
                finished = True
                break
        await RisingEdge(dut.clk)
        # after an abort, wait until the engine is idle again (DMA drained)
        if reset_at is not None:
            for _ in range(limit):
                await ReadOnly()
                if not int(dut.busy.value):
                    break
                await RisingEdge(dut.clk)
        result = {"finished": finished, "cycles": cycles, "done": int(dut.done.value),
                  "busy": int(dut.busy.value), "error_code": int(dut.error_code.value),
                  "error_index": int(dut.error_index.value)}
        tb_output_path(f"run{i}.json").write_text(json.dumps(result))
        tb_output_path(f"run{i}.bin").write_bytes(ram.read(base, len(image)))
        ram.read_if._read = type(ram.read_if)._read.__get__(ram.read_if)
        ram.write_if._write = type(ram.write_if)._write.__get__(ram.write_if)
        await ClockCycles(dut.clk, 20)
