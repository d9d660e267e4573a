"""The accelerator's control/status registers: an AXI4-Lite subordinate (slave).

The register decode is built from :data:`convforge.hw.layouts.csr.REGISTERS`, the module
generated from the one register-map definition (``hw/regmap/convforge.rdl``): every
register offset, field position, reset value and access type comes from there. This
module only says where the read-only values come from (ports, counters, the EngineConfig
words) and fails at elaboration if the map has a read-only field it does not drive.

Behaviour (docs/registers.md has the table):

* Word access; ``addr[1:0]`` is ignored, ``wstrb`` selects the bytes written.
* Unmapped addresses (inside or beyond the 0x200-byte window): SLVERR, reads return 0.
  Writes to read-only registers are ignored and answered OKAY.
* ``w1p`` fields (CTRL.start, CTRL.soft_reset) give a one-cycle pulse on their port in
  the cycle after the write handshake; they read 0.
* IRQ_STATUS.done is set when ``done`` rises, IRQ_STATUS.error when it rises with a
  non-zero ``error_code``; write 1 clears (a set in the same cycle wins). SOFT_RESET
  clears both. ``irq = irq_enable & (IRQ_STATUS.done | IRQ_STATUS.error)``.
* 64-bit counters (CYCLES, BUSY_*, DMA_*_BYTES) clear on the start and soft-reset pulses;
  reading a ``_LO`` word latches the upper 32 bits that the next ``_HI`` read returns.

Latency: a write takes effect (and BVALID rises) one cycle after both AW and W were
accepted; RVALID rises one cycle after the AR handshake. One write and one read may be
in flight at a time (AWREADY/WREADY low while BVALID waits, ARREADY low while RVALID
waits): a read takes 2 cycles when RREADY is high, a write 2-3.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from convforge.errors import ConfigError
from convforge.hw.config import EngineConfig
from convforge.hw.layouts import csr
from convforge.hw.rtl.axi import Resp, axi4lite_signature

#: Address bits the CSR block decodes (``2**ADDR_BITS`` = :data:`csr.ADDRESS_SPAN` bytes).
ADDR_BITS = ceil_log2(csr.ADDRESS_SPAN)

#: Busy inputs of the per-unit busy counters (one bit per unit, high in a busy cycle).
UNIT_BUSY_LAYOUT = data.StructLayout({"pw": 1, "dw": 1, "pool": 1, "add": 1, "dma": 1})

#: 64-bit counter -> what it adds per cycle (a ``unit_busy`` member, ``busy``, or a byte port).
COUNTERS = {
    "CYCLES": "busy",
    "BUSY_PW": "pw", "BUSY_DW": "dw", "BUSY_POOL": "pool", "BUSY_ADD": "add", "BUSY_DMA": "dma",
    "DMA_RD_BYTES": "dma_rd_bytes", "DMA_WR_BYTES": "dma_wr_bytes",
}


def _key(reg: str, field: str) -> str:
    return f"{reg}.{field}"


class CsrBlock(wiring.Component):
    """AXI4-Lite CSR block of the accelerator.

    Parameters:
        cfg: the EngineConfig; its :meth:`~EngineConfig.to_csr_words` are the CFG
            constants, ``axi_data_bits // 8`` sizes the DMA byte-count inputs.
        addr_bits: width of ``s_axil`` addresses (default :data:`ADDR_BITS` = 9; a wider
            bus decodes addresses beyond the window as unmapped).

    Ports:
        s_axil: In(:func:`axi4lite_signature` (addr_bits, 32)) -- the CPU's port.
        irq: Out(1) -- level interrupt.
        start, soft_reset: Out(1) -- one-cycle pulses (CTRL writes).
        irq_enable: Out(1) -- CTRL.irq_enable.
        base_addr: Out(64) -- BASE_ADDR_HI:BASE_ADDR_LO, bytes.
        prog_offset: Out(32) -- PROG_OFFSET, bytes from base_addr.
        prog_length: Out(32) -- PROG_LENGTH, descriptors.
        buf_bytes: Out(32) -- BUF_BYTES, bytes of the Program's buffer.
        busy, done: In(1) -- controller state (STATUS).
        error_code: In(8) -- :class:`csr.ErrorCode` (STATUS.error_code).
        error_index: In(32) -- failing descriptor (ERR_INDEX).
        unit_busy: In(:data:`UNIT_BUSY_LAYOUT`) -- per-unit busy bits, counted per cycle.
        dma_rd_bytes, dma_wr_bytes: In(range(axi_data_bits // 8 + 1)) -- bytes moved
            this cycle, added to DMA_RD_BYTES / DMA_WR_BYTES.

    Raises:
        ConfigError: the EngineConfig encodes to another number of CFG words than the
            generated register module holds (regenerate it: ``python -m convforge.hw.regmap``).
    """

    def __init__(self, cfg: EngineConfig, addr_bits: int = ADDR_BITS) -> None:
        self._MustUse__silence = True  # an object refused below was never meant to be elaborated
        words = cfg.to_csr_words()
        if len(words) != csr.CFG_WORDS:
            raise ConfigError(
                f"EngineConfig encodes to {len(words)} CFG words but hw/layouts/csr.py was "
                f"generated for {csr.CFG_WORDS}: run python -m convforge.hw.regmap and commit the result"
            )
        if addr_bits < ADDR_BITS:
            raise ConfigError(f"CsrBlock addr_bits={addr_bits}: needs at least {ADDR_BITS} "
                              f"(a 0x{csr.ADDRESS_SPAN:x}-byte window)")
        self._MustUse__silence = False
        self.cfg = cfg
        self.cfg_words = words
        self.addr_bits = addr_bits
        byte_count = range(cfg.axi_data_bits // 8 + 1)
        super().__init__({
            "s_axil": In(axi4lite_signature(addr_bits, 32)),
            "irq": Out(1),
            "start": Out(1), "soft_reset": Out(1), "irq_enable": Out(1),
            "base_addr": Out(64), "prog_offset": Out(32), "prog_length": Out(32), "buf_bytes": Out(32),
            "busy": In(1), "done": In(1), "error_code": In(8), "error_index": In(32),
            "unit_busy": In(UNIT_BUSY_LAYOUT),
            "dma_rd_bytes": In(byte_count), "dma_wr_bytes": In(byte_count),
        })

    # ------------------------------------------------------------------------------------
    def elaborate(self, platform) -> Module:  # noqa: ARG002
        m = Module()
        bus = self.s_axil
        regs = csr.REGISTERS

        # -- storage of the software-writable fields, from the generated map -------------
        store: dict[str, Signal] = {}
        for reg in regs.values():
            for f in reg.fields:
                if f.access in ("rw", "w1p", "w1c"):
                    if reg.count != 1:
                        raise ConfigError(f"register array {reg.name}: writable arrays are not supported")
                    store[_key(reg.name, f.name)] = Signal(f.width, init=f.reset,
                                                           name=f"{reg.name.lower()}_{f.name}")
        read_strobe = {reg.name: Signal(name=f"rd_{reg.name.lower()}") for reg in regs.values()}

        # -- hardware sources of the read-only fields -------------------------------------
        ro: dict[str, object] = {
            _key("STATUS", "busy"): self.busy,
            _key("STATUS", "done"): self.done,
            _key("STATUS", "error"): self.error_code != 0,
            _key("STATUS", "error_code"): self.error_code,
            _key("ERR_INDEX", "index"): self.error_index,
            _key("CFG", "value"): [Const(w, 32) for w in self.cfg_words],
        }
        clear = Signal()
        m.d.comb += clear.eq(self.start | self.soft_reset)
        for name, source in COUNTERS.items():
            count = Signal(64, name=f"cnt_{name.lower()}")
            high = Signal(32, name=f"cnt_{name.lower()}_hi")
            if source in UNIT_BUSY_LAYOUT.members:
                inc = getattr(self.unit_busy, source)
            else:
                inc = getattr(self, source)
            with m.If(clear):
                m.d.sync += count.eq(0)
            with m.Else():
                m.d.sync += count.eq(count + inc)
            with m.If(read_strobe[f"{name}_LO"]):
                m.d.sync += high.eq(count[32:])
            ro[_key(f"{name}_LO", "value")] = count[:32]
            ro[_key(f"{name}_HI", "value")] = high

        # -- the word each register reads as ---------------------------------------------
        def word(reg: csr.Register, index: int) -> object:
            parts = Signal(32, name=f"rv_{reg.name.lower()}{index if reg.count > 1 else ''}")
            for f in reg.fields:
                key = _key(reg.name, f.name)
                if f.access == "const":
                    value = Const(f.reset, f.width)
                elif f.access == "w1p":
                    value = Const(0, f.width)
                elif f.access in ("rw", "w1c"):
                    value = store[key]
                elif key in ro:
                    value = ro[key][index] if reg.count > 1 else ro[key]
                else:
                    raise ConfigError(f"CSR field {key} is read-only but CsrBlock drives nothing into it")
                m.d.comb += parts[f.lsb:f.lsb + f.width].eq(value)
            return parts

        words = {(reg.name, i): word(reg, i) for reg in regs.values() for i in range(reg.count)}

        # -- AXI4-Lite read channel --------------------------------------------------------
        rvalid = Signal()
        rdata = Signal(32)
        rresp = Signal(2)
        m.d.comb += [bus.arready.eq(~rvalid), bus.rvalid.eq(rvalid), bus.rdata.eq(rdata),
                     bus.rresp.eq(rresp)]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += rvalid.eq(0)
        ar_word = bus.araddr[2:]
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [rvalid.eq(1), rdata.eq(0), rresp.eq(Resp.SLVERR)]
            with m.Switch(ar_word):
                for reg in regs.values():
                    for i in range(reg.count):
                        with m.Case((reg.offset + i * reg.stride) >> 2):
                            m.d.sync += [rdata.eq(words[reg.name, i]), rresp.eq(Resp.OKAY)]
                            m.d.comb += read_strobe[reg.name].eq(1)

        # -- AXI4-Lite write channels (AW and W accepted independently) ----------------------
        aw_held, w_held, bvalid = Signal(), Signal(), Signal()
        aw_addr = Signal(self.addr_bits)
        w_data, w_strb = Signal(32), Signal(4)
        bresp = Signal(2)
        m.d.comb += [bus.awready.eq(~aw_held & ~bvalid), bus.wready.eq(~w_held & ~bvalid),
                     bus.bvalid.eq(bvalid), bus.bresp.eq(bresp)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_held.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_held.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bvalid.eq(0)

        # pulses last one cycle
        for reg in regs.values():
            for f in reg.fields:
                if f.access == "w1p":
                    m.d.sync += store[_key(reg.name, f.name)].eq(0)

        # hardware sets of the w1c fields (assigned after the write below: a set wins over a clear)
        done_q = Signal()
        m.d.sync += done_q.eq(self.done)
        done_rise = self.done & ~done_q
        w1c_set = {_key("IRQ_STATUS", "done"): done_rise,
                   _key("IRQ_STATUS", "error"): done_rise & (self.error_code != 0)}
        for reg in regs.values():
            for f in reg.fields:
                if f.access == "w1c" and _key(reg.name, f.name) not in w1c_set:
                    raise ConfigError(f"CSR field {reg.name}.{f.name} is w1c but CsrBlock sets it from nothing")

        do_write = aw_held & w_held & ~bvalid
        wmask = Cat(*(bit.replicate(8) for bit in w_strb))
        with m.If(do_write):
            m.d.sync += [aw_held.eq(0), w_held.eq(0), bvalid.eq(1), bresp.eq(Resp.SLVERR)]
            with m.Switch(aw_addr[2:]):
                for reg in regs.values():
                    for i in range(reg.count):
                        with m.Case((reg.offset + i * reg.stride) >> 2):
                            m.d.sync += bresp.eq(Resp.OKAY)
                            for f in reg.fields:
                                if f.access not in ("rw", "w1p", "w1c"):
                                    continue
                                sig = store[_key(reg.name, f.name)]
                                bits = w_data[f.lsb:f.lsb + f.width]
                                mask = wmask[f.lsb:f.lsb + f.width]
                                if f.access == "rw":
                                    m.d.sync += sig.eq((sig & ~mask) | (bits & mask))
                                elif f.access == "w1p":
                                    m.d.sync += sig.eq(bits & mask)
                                else:
                                    m.d.sync += sig.eq(sig & ~(bits & mask))
        for key, cond in w1c_set.items():
            with m.If(cond):
                m.d.sync += store[key].eq(1)
        with m.If(self.soft_reset):
            for key in w1c_set:
                m.d.sync += store[key].eq(0)

        # -- outputs to the controller ----------------------------------------------------------
        m.d.comb += [
            self.start.eq(store[_key("CTRL", "start")]),
            self.soft_reset.eq(store[_key("CTRL", "soft_reset")]),
            self.irq_enable.eq(store[_key("CTRL", "irq_enable")]),
            self.base_addr.eq(Cat(store[_key("BASE_ADDR_LO", "addr")], store[_key("BASE_ADDR_HI", "addr")])),
            self.prog_offset.eq(store[_key("PROG_OFFSET", "offset")]),
            self.prog_length.eq(store[_key("PROG_LENGTH", "count")]),
            self.buf_bytes.eq(store[_key("BUF_BYTES", "bytes")]),
            self.irq.eq(self.irq_enable & (store[_key("IRQ_STATUS", "done")] | store[_key("IRQ_STATUS", "error")])),
        ]
        return m
