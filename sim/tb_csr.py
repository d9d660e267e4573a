"""cocotb testbench of :class:`convforge.hw.rtl.csr.CsrBlock` with cocotbext-axi.

Each cocotb test is one case of the CSR regression (:mod:`convforge.sim.regress_csr`).
The CPU side is cocotbext-axi's ``AxiLiteMaster`` on ``s_axil__*`` with random pauses on
all five channels (AW, W, AR valid gaps; B, R ready back-pressure); the controller side
(busy, done, error, busy bits, DMA byte counts) is driven directly. Offsets and fields
come from :mod:`convforge.hw.layouts.csr`, the module the driver uses.

Parameters (``tb_params()``): ``seed``, ``pause_prob``, ``rounds`` (random RW
write/read rounds), ``cfg_words`` (expected CFG words), ``byte_max`` (DMA bytes/cycle),
``clock_ns``.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from convforge.hw.layouts import csr
from convforge.sim.tbio import tb_params

R = csr.REGISTERS
RW_REGS = ("BASE_ADDR_LO", "BASE_ADDR_HI", "PROG_OFFSET", "PROG_LENGTH", "BUF_BYTES")
COUNTER_NAMES = ("CYCLES", "BUSY_PW", "BUSY_DW", "BUSY_POOL", "BUSY_ADD", "BUSY_DMA",
                 "DMA_RD_BYTES", "DMA_WR_BYTES")
UNIT_BITS = {"BUSY_PW": 0, "BUSY_DW": 1, "BUSY_POOL": 2, "BUSY_ADD": 3, "BUSY_DMA": 4}


def _pauses(rng: random.Random, prob: float):
    while True:
        yield rng.random() < prob


class Bench:
    """Clock, reset, the AXI-Lite master with pauses, and pulse counters on the outputs."""

    def __init__(self, dut) -> None:
        self.dut = dut
        self.p = tb_params()
        self.rng = random.Random(self.p.get("seed", 0))
        self.pulses = {"start": 0, "soft_reset": 0}
        self.long_pulse = False

    async def start(self) -> None:
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, float(self.p.get("clock_ns", 10.0)), unit="ns").start())
        for name in ("busy", "done", "error_code", "error_index", "unit_busy", "dma_rd_bytes", "dma_wr_bytes"):
            getattr(dut, name).value = 0
        dut.rst.value = 1
        bus = AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__")
        self.axi = AxiLiteMaster(bus, dut.clk, dut.rst)
        prob = float(self.p.get("pause_prob", 0.3))
        if prob > 0:
            for i, ch in enumerate((self.axi.write_if.aw_channel, self.axi.write_if.w_channel,
                                    self.axi.write_if.b_channel, self.axi.read_if.ar_channel,
                                    self.axi.read_if.r_channel)):
                ch.set_pause_generator(_pauses(random.Random(f"{self.p.get('seed', 0)}/{i}"), prob))
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        cocotb.start_soon(self._watch_pulses())

    async def _watch_pulses(self) -> None:
        prev = {k: 0 for k in self.pulses}
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            for k in self.pulses:
                v = int(getattr(self.dut, k).value)
                if v and not prev[k]:
                    self.pulses[k] += 1
                if v and prev[k]:
                    self.long_pulse = True
                prev[k] = v

    async def read(self, addr: int, resp: AxiResp = AxiResp.OKAY) -> int:
        r = await self.axi.read(addr, 4)
        assert r.resp == resp, f"read 0x{addr:03x}: resp {r.resp!r}, expected {resp!r}"
        return int.from_bytes(r.data, "little")

    async def write(self, addr: int, value: int, resp: AxiResp = AxiResp.OKAY, nbytes: int = 4) -> None:
        w = await self.axi.write(addr, value.to_bytes(4, "little")[addr % 4:addr % 4 + nbytes])
        assert w.resp == resp, f"write 0x{addr:03x}: resp {w.resp!r}, expected {resp!r}"

    async def drive(self, **values: int) -> None:
        """Set controller-side inputs on a falling edge (stable for the next rising edge)."""
        await FallingEdge(self.dut.clk)
        for k, v in values.items():
            getattr(self.dut, k).value = v


async def _bench(dut) -> Bench:
    b = Bench(dut)
    await b.start()
    return b


@cocotb.test()
async def identity_and_config_words(dut) -> None:
    """ID, VERSION, CFG_COUNT and every CFG word read back as generated."""
    b = await _bench(dut)
    assert await b.read(csr.ADDR_ID) == csr.ID_MAGIC
    ver = await b.read(csr.ADDR_VERSION)
    assert R["VERSION"].field("major").get(ver) == csr.VERSION_MAJOR
    assert R["VERSION"].field("minor").get(ver) == csr.VERSION_MINOR
    want = list(b.p["cfg_words"])
    assert await b.read(csr.ADDR_CFG_COUNT) == len(want) == csr.CFG_WORDS
    got = [await b.read(csr.ADDR_CFG + 4 * i) for i in range(len(want))]
    assert got == want, f"CFG words {got} != {want}"
    # reset values of everything else
    for reg in R.values():
        if reg.name not in ("ID", "VERSION", "CFG_COUNT", "CFG"):
            assert await b.read(reg.offset) == reg.readable_reset, reg.name


@cocotb.test()
async def rw_registers_random_writes_with_byte_strobes(dut) -> None:
    """Random full and partial (byte-strobe) writes to every RW register; read back and
    check the controller-side ports."""
    b = await _bench(dut)
    model = {name: R[name].readable_reset for name in RW_REGS}
    for _ in range(int(b.p.get("rounds", 20))):
        name = b.rng.choice(RW_REGS)
        value = b.rng.getrandbits(32)
        lo = b.rng.randrange(4)
        n = 4 if b.rng.random() < 0.5 else b.rng.randint(1, 4 - lo)
        lo = 0 if n == 4 else lo
        await b.write(R[name].offset + lo, value, nbytes=n)
        mask = ((1 << (8 * n)) - 1) << (8 * lo)
        model[name] = (model[name] & ~mask) | (value & mask)
        other = b.rng.choice(RW_REGS)
        assert await b.read(R[other].offset) == model[other], other
    for name in RW_REGS:
        assert await b.read(R[name].offset) == model[name], name
    await ReadOnly()
    assert int(dut.base_addr.value) == model["BASE_ADDR_LO"] | model["BASE_ADDR_HI"] << 32
    assert int(dut.prog_offset.value) == model["PROG_OFFSET"]
    assert int(dut.prog_length.value) == model["PROG_LENGTH"]
    await RisingEdge(dut.clk)
    ctrl = R["CTRL"]
    await b.write(csr.ADDR_CTRL, ctrl.field("irq_enable").mask)
    assert await b.read(csr.ADDR_CTRL) == ctrl.field("irq_enable").mask
    assert int(dut.irq_enable.value) == 1
    await b.write(csr.ADDR_CTRL, 0)
    assert int(dut.irq_enable.value) == 0


@cocotb.test()
async def start_and_soft_reset_are_single_cycle_pulses(dut) -> None:
    """CTRL.start / soft_reset: exactly one one-cycle pulse per written 1, read as 0,
    irq_enable kept; writing 0 gives no pulse."""
    b = await _bench(dut)
    ctrl = R["CTRL"]
    en = ctrl.field("irq_enable").mask
    await b.write(csr.ADDR_CTRL, en | ctrl.field("start").mask)
    await ClockCycles(dut.clk, 2)
    assert b.pulses == {"start": 1, "soft_reset": 0}
    assert await b.read(csr.ADDR_CTRL) == en
    await b.write(csr.ADDR_CTRL, en)
    await b.write(csr.ADDR_CTRL, en | ctrl.field("soft_reset").mask)
    await b.write(csr.ADDR_CTRL, en | ctrl.field("start").mask)
    await ClockCycles(dut.clk, 2)
    assert b.pulses == {"start": 2, "soft_reset": 1}
    assert not b.long_pulse, "a pulse lasted more than one cycle"
    assert int(dut.irq_enable.value) == 1


@cocotb.test()
async def status_and_failing_index_follow_the_controller(dut) -> None:
    """STATUS fields and ERR_INDEX read what the controller drives."""
    b = await _bench(dut)
    st = R["STATUS"]
    for _ in range(6):
        busy, done = b.rng.randrange(2), b.rng.randrange(2)
        code = b.rng.choice(list(csr.ErrorCode))
        index = b.rng.getrandbits(32)
        await b.drive(busy=busy, done=done, error_code=int(code), error_index=index)
        word = await b.read(csr.ADDR_STATUS)
        assert st.field("busy").get(word) == busy and st.field("done").get(word) == done
        assert st.field("error_code").get(word) == code
        assert st.field("error").get(word) == int(code != csr.ErrorCode.NONE)
        assert await b.read(csr.ADDR_ERR_INDEX) == index


@cocotb.test()
async def irq_status_is_write_one_to_clear_and_gated_by_enable(dut) -> None:
    """done rising sets IRQ_STATUS.done (and .error with an error code); W1C clears only
    the bits written 1; irq follows irq_enable; soft reset clears."""
    b = await _bench(dut)
    irq = R["IRQ_STATUS"]
    d, e = irq.field("done").mask, irq.field("error").mask
    await b.drive(done=1)
    await ClockCycles(dut.clk, 2)
    assert await b.read(csr.ADDR_IRQ_STATUS) == d
    assert int(dut.irq.value) == 0, "irq without irq_enable"
    await b.write(csr.ADDR_CTRL, R["CTRL"].field("irq_enable").mask)
    assert int(dut.irq.value) == 1
    await b.write(csr.ADDR_IRQ_STATUS, 0)  # writing 0 clears nothing
    assert await b.read(csr.ADDR_IRQ_STATUS) == d
    await b.write(csr.ADDR_IRQ_STATUS, d)
    assert await b.read(csr.ADDR_IRQ_STATUS) == 0
    await ReadOnly()
    assert int(dut.irq.value) == 0
    await RisingEdge(dut.clk)
    # done stays high: no new event; a new rise with an error sets both
    await b.drive(done=0)
    await b.drive(done=1, error_code=int(csr.ErrorCode.AXI_SLVERR))
    await ClockCycles(dut.clk, 2)
    assert await b.read(csr.ADDR_IRQ_STATUS) == d | e
    assert int(dut.irq.value) == 1
    await b.write(csr.ADDR_IRQ_STATUS, e)
    assert await b.read(csr.ADDR_IRQ_STATUS) == d
    await b.write(csr.ADDR_CTRL, R["CTRL"].field("irq_enable").mask | R["CTRL"].field("soft_reset").mask)
    assert await b.read(csr.ADDR_IRQ_STATUS) == 0
    assert int(dut.irq.value) == 0


@cocotb.test()
async def counters_count_cycles_busy_bits_and_bytes_and_clear_at_start(dut) -> None:
    """Per-cycle counting of busy, every unit busy bit and the DMA byte counts, against a
    model sampled at every clock edge; a 64-bit carry and the _LO-latches-_HI snapshot
    via a value deposited near 2**32; start clears all."""
    b = await _bench(dut)
    byte_max = int(b.p["byte_max"])
    await b.write(csr.ADDR_CTRL, R["CTRL"].field("start").mask)
    await ClockCycles(dut.clk, 2)
    model = dict.fromkeys(COUNTER_NAMES, 0)
    for _ in range(200):
        await FallingEdge(dut.clk)
        busy, bits = b.rng.randrange(2), b.rng.getrandbits(5)
        rd, wr = b.rng.randint(0, byte_max), b.rng.randint(0, byte_max)
        dut.busy.value, dut.unit_busy.value = busy, bits
        dut.dma_rd_bytes.value, dut.dma_wr_bytes.value = rd, wr
        model["CYCLES"] += busy
        for name, bit in UNIT_BITS.items():
            model[name] += bits >> bit & 1
        model["DMA_RD_BYTES"] += rd
        model["DMA_WR_BYTES"] += wr
    await b.drive(busy=0, unit_busy=0, dma_rd_bytes=0, dma_wr_bytes=0)
    await RisingEdge(dut.clk)
    for name in COUNTER_NAMES:
        lo = await b.read(R[f"{name}_LO"].offset)
        hi = await b.read(R[f"{name}_HI"].offset)
        assert lo | hi << 32 == model[name], f"{name}: {lo | hi << 32} != {model[name]}"
    assert model["CYCLES"] > 50 and model["DMA_RD_BYTES"] > 1000

    # carry into the upper word: deposit 2**32 - 3, count 5 busy cycles
    await FallingEdge(dut.clk)
    dut.cnt_cycles.value = (1 << 32) - 3
    await b.drive(busy=1)
    await ClockCycles(dut.clk, 5)
    await b.drive(busy=0)
    lo = await b.read(csr.ADDR_CYCLES_LO)
    assert lo == 2 and await b.read(csr.ADDR_CYCLES_HI) == 1, "64-bit carry"
    # snapshot: HI returns what the last LO read latched, even after the counter moved on
    await FallingEdge(dut.clk)
    dut.cnt_cycles.value = (2 << 32) | 7
    await RisingEdge(dut.clk)
    assert await b.read(csr.ADDR_CYCLES_HI) == 1, "HI must hold the value latched by the last LO read"
    assert await b.read(csr.ADDR_CYCLES_LO) == 7 and await b.read(csr.ADDR_CYCLES_HI) == 2

    await b.write(csr.ADDR_CTRL, R["CTRL"].field("start").mask)
    for name in COUNTER_NAMES:
        assert await b.read(R[f"{name}_LO"].offset) == 0, f"{name} not cleared by start"
        assert await b.read(R[f"{name}_HI"].offset) == 0, f"{name} not cleared by start"


@cocotb.test()
async def unmapped_addresses_answer_slverr_and_read_only_writes_are_ignored(dut) -> None:
    """Reads/writes outside the map: SLVERR, data 0; writes to read-only registers: OKAY,
    no effect."""
    b = await _bench(dut)
    mapped = {reg.offset + i * reg.stride for reg in R.values() for i in range(reg.count)}
    holes = [a for a in range(0, csr.ADDRESS_SPAN, 4) if a not in mapped]
    assert len(holes) > 10
    for addr in [holes[0], holes[-1], *b.rng.sample(holes, 6)]:
        assert await b.read(addr, AxiResp.SLVERR) == 0
        await b.write(addr, 0xFFFFFFFF, AxiResp.SLVERR)
    for name in ("ID", "VERSION", "STATUS", "CYCLES_LO", "CFG_COUNT"):
        before = await b.read(R[name].offset)
        await b.write(R[name].offset, before ^ 0xFFFFFFFF)
        assert await b.read(R[name].offset) == before, name
    await b.write(csr.ADDR_CFG, 0x12345678)
    assert await b.read(csr.ADDR_CFG) == b.p["cfg_words"][0]
    # the mapped registers still work after error responses
    await b.write(csr.ADDR_PROG_LENGTH, 0xCAFE)
    assert await b.read(csr.ADDR_PROG_LENGTH) == 0xCAFE
