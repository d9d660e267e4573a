"""cocotb testbench of the accelerator top (:class:`convforge.hw.rtl.accel.Accelerator`):
cocotbext-axi ``AxiLiteMaster`` on the CSR port and ``AxiRam`` as DDR on ``m_axi``, with
random pauses on all five channels of both.

Each run of the parameter list loads a buffer image at ``base``, programs BASE_ADDR,
PROG_OFFSET, PROG_LENGTH and BUF_BYTES, writes CTRL (irq_enable | start) and waits for
``irq`` (``max_cycles`` per run: a test failure, never a hang); then it reads STATUS,
ERR_INDEX, IRQ_STATUS and the counters over AXI4-Lite, clears IRQ_STATUS, and writes what
it saw to ``run<i>.json`` and the buffer to ``run<i>.bin`` in the run directory; the host
compares them with the emulator. Offsets and fields come from
:mod:`convforge.hw.layouts.csr`, the module the driver uses.

Parameters (``tb_params()``): ``seed``, ``pause_prob``, ``base``, ``ram_bytes``, ``runs``:
a list of ``{"image": file, "prog_offset", "prog_length", "buf_bytes", "max_cycles",
"poison": [lo, hi] (buffer offsets whose reads and writes answer SLVERR, or DECERR with
"poison_resp": "decerr"), "soft_reset_at":
cycles after start (write CTRL.soft_reset then instead of waiting for done), "stall_reads":
the R channel pauses until done (TIMEOUT), then answers again}``.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, AxiResp

from convforge.hw.layouts import csr
from convforge.sim.tbio import tb_output_path, tb_params

R = csr.REGISTERS
COUNTERS = ("CYCLES", "BUSY_PW", "BUSY_DW", "BUSY_POOL", "BUSY_ADD", "BUSY_DMA", "DMA_RD_BYTES", "DMA_WR_BYTES")


def _pauses(rng: random.Random, prob: float):
    while True:
        yield rng.random() < prob


def _poison(ram: AxiRam, base: int, window: list[int] | None, resp: str = "slverr") -> None:
    """Make reads and writes touching ``[base + lo, base + hi)`` fail: ``AxiRam`` answers them
    SLVERR; with ``resp = "decerr"`` those responses leave as DECERR (a decode error, as an
    interconnect gives for an unmapped address). None restores the RAM."""
    cls_read, cls_write = type(ram.read_if)._read, type(ram.write_if)._write
    ram.read_if._read = cls_read.__get__(ram.read_if)
    ram.write_if._write = cls_write.__get__(ram.write_if)
    for channel in (ram.read_if.r_channel, ram.write_if.b_channel):
        channel.send = type(channel).send.__get__(channel)
    if not window:
        return
    lo, hi = base + window[0], base + window[1]
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
    if resp == "decerr":
        for channel, field in ((ram.read_if.r_channel, "rresp"), (ram.write_if.b_channel, "bresp")):
            send = channel.send

            async def as_decerr(obj, send=send, field=field):
                if getattr(obj, field) == AxiResp.SLVERR:
                    setattr(obj, field, AxiResp.DECERR)
                return await send(obj)

            channel.send = as_decerr


async def _read(axil: AxiLiteMaster, addr: int) -> int:
    return int.from_bytes((await axil.read(addr, 4)).data, "little")


async def _write(axil: AxiLiteMaster, addr: int, value: int) -> None:
    await axil.write(addr, int(value).to_bytes(4, "little"))


@cocotb.test()
async def run_programs(dut):
    p = tb_params()
    rng = random.Random(p.get("seed", 0))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    base = int(p["base"])
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk, dut.rst,
                 size=int(p["ram_bytes"]))
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"), dut.clk, dut.rst)
    prob = float(p.get("pause_prob", 0.3))
    r_pauses = _pauses(random.Random(rng.random()), prob)
    if prob > 0:
        ram.read_if.r_channel.set_pause_generator(r_pauses)
        for ch in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
                   ram.read_if.ar_channel,
                   axil.write_if.aw_channel, axil.write_if.w_channel, axil.write_if.b_channel,
                   axil.read_if.ar_channel, axil.read_if.r_channel):
            ch.set_pause_generator(_pauses(random.Random(rng.random()), prob))
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    ctrl = R["CTRL"]
    status = R["STATUS"]

    for i, run in enumerate(p["runs"]):
        image = Path(run["image"]).read_bytes()
        ram.write(0, bytes(int(p["ram_bytes"])))
        ram.write(base, image)
        _poison(ram, base, run.get("poison"), run.get("poison_resp") or "slverr")
        await _write(axil, csr.ADDR_BASE_ADDR_LO, base & 0xFFFFFFFF)
        await _write(axil, csr.ADDR_BASE_ADDR_HI, base >> 32)
        await _write(axil, csr.ADDR_PROG_OFFSET, int(run["prog_offset"]))
        await _write(axil, csr.ADDR_PROG_LENGTH, int(run["prog_length"]))
        await _write(axil, csr.ADDR_BUF_BYTES, int(run["buf_bytes"]))
        await _write(axil, csr.ADDR_CTRL, ctrl.field("irq_enable").mask | ctrl.field("start").mask)
        limit = int(run["max_cycles"])
        reset_at = run.get("soft_reset_at")
        if reset_at is not None:
            await ClockCycles(dut.clk, int(reset_at))
            await _write(axil, csr.ADDR_CTRL, ctrl.field("soft_reset").mask)
            finished = False
        else:
            if run.get("stall_reads"):
                ram.read_if.r_channel.set_pause_generator(itertools.repeat(True))
            if not int(dut.irq.value):
                await First(RisingEdge(dut.irq), ClockCycles(dut.clk, limit))
            finished = bool(int(dut.irq.value))
            if run.get("stall_reads"):  # the bus answers again: the engine drains it
                ram.read_if.r_channel.set_pause_generator(r_pauses)
        await RisingEdge(dut.clk)
        word = await _read(axil, csr.ADDR_STATUS)
        if reset_at is not None:  # the engine must leave busy after the soft reset
            for _ in range(limit // 8):
                if not status.field("busy").get(word):
                    break
                await ClockCycles(dut.clk, 8)
                word = await _read(axil, csr.ADDR_STATUS)
        result = {"finished": finished, "irq": int(dut.irq.value),
                  "busy": status.field("busy").get(word), "done": status.field("done").get(word),
                  "error": status.field("error").get(word), "error_code": status.field("error_code").get(word),
                  "error_index": await _read(axil, csr.ADDR_ERR_INDEX),
                  "irq_status": await _read(axil, csr.ADDR_IRQ_STATUS)}
        for name in COUNTERS:
            lo = await _read(axil, R[f"{name}_LO"].offset)
            result[name.lower()] = lo | (await _read(axil, R[f"{name}_HI"].offset)) << 32
        await _write(axil, csr.ADDR_IRQ_STATUS, 0b11)
        result["irq_after_clear"] = int(dut.irq.value)
        tb_output_path(f"run{i}.json").write_text(json.dumps(result))
        tb_output_path(f"run{i}.bin").write_bytes(ram.read(base, len(image)))
        _poison(ram, base, None)
        await ClockCycles(dut.clk, 20)
