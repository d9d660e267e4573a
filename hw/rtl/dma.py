"""The accelerator's DMA: an AXI4 master read engine and write engine on byte streams,
and the on-chip fusion scratchpad behind the same command / byte-stream interface.

:class:`ReadDma` turns a command ``(address, bytes)`` into INCR bursts and delivers the
bytes ``[address, address + bytes)`` in order, one per cycle, on a byte stream.
:class:`WriteDma` takes ``bytes`` items ``(data, strobe)`` and writes them to
``[address, address + bytes)``; items with ``strobe = 0`` are holes (their byte lanes
have ``WSTRB`` low), which is how a channel stride above 1 scatters without a
read-modify-write. Strided NHWC views are built on these spans by the controller.

Bursts (AMBA AXI and ACE Protocol Specification, ARM IHI 0022, A3.4.1): every burst is
INCR of full-width beats (``AxSIZE = log2(data_bits / 8)``), starts at the beat-aligned
address at or below the span, has at most ``max_burst`` beats and never crosses a 4 KiB
boundary. The read engine keeps up to ``max_outstanding`` read bursts in flight (AR runs
ahead of R); the write engine sends one burst's AW then its W beats, and does not wait
for B before the next burst (B responses are counted).

Throughput: one byte per cycle on the stream side (a ``data_bits`` beat every
``data_bits / 8`` cycles); a consumer that raises ``wide`` instead takes any number of
the current beat's bytes per cycle (``take``, up to ``beat_avail``), so a whole beat can
go in one cycle and the next follows one cycle later (the engine holds one beat). Latency:
a read command's first byte arrives 2 cycles after the first R beat.

Errors: a ``RRESP`` / ``BRESP`` of SLVERR or DECERR is latched in ``error`` (the first one
wins) until ``clear``. ``abort`` stops issuing new bursts and drops the rest of the stream;
bursts already issued are completed (their R beats drained, their W beats sent with
``WSTRB = 0``), so the bus is never left mid-transaction. ``idle`` is high when nothing is
in flight.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from convforge.errors import ConfigError
from convforge.hw.rtl.axi import Resp, axi4_signature

#: AXI4 ``AxBURST`` INCR (IHI 0022, A3.4.1).
BURST_INCR = 0b01
#: ``AxCACHE`` of every transaction: normal non-cacheable bufferable (IHI 0022, A4.4).
CACHE_NORMAL = 0b0011
#: Bursts never cross this boundary (IHI 0022, A3.4.1).
BOUNDARY_BYTES = 4096
#: Width of a command's byte count.
SPAN_BITS = 24


#: One item of the write engine's input stream.
WRITE_ITEM = data.StructLayout({"data": 8, "strobe": 1})


def _check(data_bits: int, max_burst: int) -> None:
    if not 1 <= max_burst <= 256:
        raise ConfigError(f"max_burst {max_burst}: AXI4 INCR bursts have 1..256 beats")
    if max_burst * data_bits // 8 > BOUNDARY_BYTES:
        raise ConfigError(f"max_burst {max_burst} beats of {data_bits} bits exceed {BOUNDARY_BYTES} bytes")


def _burst_beats(m: Module, addr: Signal, left: Signal, max_burst: int, lb: int, name: str) -> Signal:
    """Beats of the next burst from beat-aligned ``addr`` with ``left`` beats to go:
    ``min(left, max_burst, beats to the next 4 KiB boundary)``."""
    to_boundary = Signal(range(BOUNDARY_BYTES // (1 << lb) + 1), name=f"{name}_to4k")
    m.d.comb += to_boundary.eq((BOUNDARY_BYTES - addr[:12]) >> lb)
    beats = Signal(range(max(max_burst, BOUNDARY_BYTES // (1 << lb)) + 1), name=f"{name}_beats")
    capped = Mux(left < max_burst, left, max_burst)
    m.d.comb += beats.eq(Mux(capped < to_boundary, capped, to_boundary))
    return beats


def _span_beats(addr, nbytes, lb: int):
    """Beats covering ``nbytes`` from ``addr`` (beat-aligned start at or below ``addr``)."""
    return (addr[:lb] + nbytes + (1 << lb) - 1) >> lb


class ReadDma(wiring.Component):
    """AXI4 read engine: command ``(addr, nbytes)`` -> byte stream (see the module docstring).

    Parameters:
        addr_bits, data_bits: AXI address / data widths.
        max_burst: beats per burst (<= 256; 16 keeps AXI3 ports happy).
        max_outstanding: read bursts in flight.

    Ports:
        axi: the AR and R channels of an :func:`axi4_signature` (AW/W/B left to the writer).
        cmd_addr: In(addr_bits) bytes; cmd_bytes: In(SPAN_BITS) bytes (>= 1);
        cmd_valid: In(1); cmd_ready: Out(1) (high when idle).
        o: Out(stream of 8 bits) -- the bytes in address order.
        wide: In(1) -- the consumer takes ``take`` bytes this cycle instead of ``o``'s
            handshake; beat_data: Out(data_bits) the held beat, beat_pos: Out(log2 bytes)
            its next byte, beat_avail: Out(range(bytes + 1)) the span's bytes left in it
            (0 when none is held); take: In(range(bytes + 1)), at most ``beat_avail``.
        abort, clear: In(1) pulses; error: Out(2) latched :class:`Resp`; idle: Out(1).
        beat: Out(1) -- an R beat was accepted this cycle (byte counters).
    """

    def __init__(self, addr_bits: int, data_bits: int, max_burst: int = 16, max_outstanding: int = 4) -> None:
        _check(data_bits, max_burst)
        self.addr_bits, self.data_bits = addr_bits, data_bits
        self.max_burst, self.max_outstanding = max_burst, max_outstanding
        full = axi4_signature(addr_bits, data_bits).members
        ports = {n: full[n] for n in full if n[:2] in ("ar", "rr") or n[0] == "r"}
        super().__init__({
            "axi": Out(wiring.Signature(ports)),
            "cmd_addr": In(addr_bits), "cmd_bytes": In(SPAN_BITS), "cmd_valid": In(1), "cmd_ready": Out(1),
            "o": Out(stream.Signature(8)),
            "wide": In(1), "take": In(range(data_bits // 8 + 1)),
            "beat_data": Out(data_bits), "beat_pos": Out(range(data_bits // 8)),
            "beat_avail": Out(range(data_bits // 8 + 1)),
            "abort": In(1), "clear": In(1), "error": Out(2), "idle": Out(1), "beat": Out(1),
        })

    def elaborate(self, platform) -> Module:  # noqa: ARG002
        m = Module()
        lb = exact_log2(self.data_bits // 8)
        axi = self.axi
        ar_addr = Signal(self.addr_bits)
        ar_left = Signal(SPAN_BITS)          # beats not yet requested
        ar_valid = Signal()
        ar_len = Signal(8)
        inflight = Signal(SPAN_BITS)         # beats requested, not yet received
        bursts = Signal(range(self.max_outstanding + 1))
        out_left = Signal(SPAN_BITS)         # bytes still to deliver
        buf = Signal(self.data_bits)
        buf_valid = Signal()
        byte_idx = Signal(lb)
        skip = Signal(lb)                    # first byte of the next beat (only the first beat skips)

        idle = (ar_left == 0) & ~ar_valid & (inflight == 0) & ~buf_valid
        m.d.comb += [self.idle.eq(idle), self.cmd_ready.eq(idle)]

        with m.If(self.cmd_valid & idle):
            m.d.sync += [
                ar_addr.eq(self.cmd_addr & ~Const((1 << lb) - 1, self.addr_bits)),
                ar_left.eq(_span_beats(self.cmd_addr, self.cmd_bytes, lb)),
                out_left.eq(self.cmd_bytes), skip.eq(self.cmd_addr[:lb]),
            ]

        # -- AR: issue bursts while fewer than max_outstanding are in flight ---------------
        beats = _burst_beats(m, ar_addr, ar_left, self.max_burst, lb, "rd")
        m.d.comb += [axi.araddr.eq(ar_addr), axi.arlen.eq(ar_len), axi.arvalid.eq(ar_valid),
                     axi.arsize.eq(lb), axi.arburst.eq(BURST_INCR), axi.arcache.eq(CACHE_NORMAL),
                     axi.arprot.eq(0), axi.arid.eq(0)]
        r_last_beat = axi.rvalid & axi.rready & axi.rlast
        with m.If(~ar_valid & (ar_left != 0) & (bursts < self.max_outstanding) & ~self.abort):
            m.d.sync += [ar_valid.eq(1), ar_len.eq(beats - 1)]
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += [ar_valid.eq(0), ar_addr.eq(ar_addr + ((ar_len + 1) << lb)),
                         ar_left.eq(Mux(self.abort, 0, ar_left - (ar_len + 1)))]
        with m.Elif(self.abort):
            m.d.sync += ar_left.eq(0)
        r_beat = axi.rvalid & axi.rready
        m.d.comb += self.beat.eq(r_beat)
        issued = Mux(axi.arvalid & axi.arready, ar_len + 1, 0)
        m.d.sync += [inflight.eq(inflight + issued - r_beat),
                     bursts.eq(bursts + (axi.arvalid & axi.arready) - r_last_beat)]

        # -- R: one beat buffered, bytes out one per cycle ----------------------------------
        m.d.comb += axi.rready.eq(~buf_valid)
        with m.If(r_beat):
            m.d.sync += [buf.eq(axi.rdata), buf_valid.eq(1), byte_idx.eq(skip), skip.eq(0)]
            with m.If((axi.rresp != Resp.OKAY) & (self.error == 0)):
                m.d.sync += self.error.eq(axi.rresp)
        drop = self.abort | (out_left == 0)
        in_beat = (1 << lb) - byte_idx
        avail = Signal.like(self.beat_avail)
        m.d.comb += [self.o.payload.eq(buf.word_select(byte_idx, 8)),
                     self.o.valid.eq(buf_valid & ~drop),
                     avail.eq(Mux(buf_valid & ~drop, Mux(out_left < in_beat, out_left, in_beat), 0)),
                     self.beat_data.eq(buf), self.beat_pos.eq(byte_idx), self.beat_avail.eq(avail)]
        taken = Signal.like(self.take)      # bytes the consumer takes this cycle
        m.d.comb += taken.eq(Mux(self.wide, self.take, self.o.valid & self.o.ready))
        with m.If(buf_valid & drop):
            m.d.sync += [buf_valid.eq(0), out_left.eq(0)]
        with m.Elif(taken != 0):
            m.d.sync += [out_left.eq(out_left - taken), byte_idx.eq(byte_idx + taken)]
            with m.If(taken == avail):
                m.d.sync += buf_valid.eq(0)
        with m.If(self.clear):
            m.d.sync += self.error.eq(0)
        return m


class WriteDma(wiring.Component):
    """AXI4 write engine: command ``(addr, nbytes)`` + ``nbytes`` stream items -> bursts.

    Parameters: as :class:`ReadDma` (``max_outstanding`` does not apply: B is counted).

    Ports:
        axi: the AW, W and B channels of an :func:`axi4_signature`.
        cmd_addr, cmd_bytes, cmd_valid, cmd_ready: as :class:`ReadDma` (ready when no
            command is taking input and no burst is being sent; B may still be pending).
        i: In(stream of :data:`WRITE_ITEM`) -- one item per byte of the span.
        abort, clear, error, idle: as :class:`ReadDma` (``idle`` also waits for every B).
        wbytes: Out(range(data_bits // 8 + 1)) -- bytes (strobes) written this cycle.
    """

    def __init__(self, addr_bits: int, data_bits: int, max_burst: int = 16) -> None:
        _check(data_bits, max_burst)
        self.addr_bits, self.data_bits, self.max_burst = addr_bits, data_bits, max_burst
        full = axi4_signature(addr_bits, data_bits).members
        ports = {n: full[n] for n in full if n[0] in ("a", "w", "b") and not n.startswith("ar")}
        super().__init__({
            "axi": Out(wiring.Signature(ports)),
            "cmd_addr": In(addr_bits), "cmd_bytes": In(SPAN_BITS), "cmd_valid": In(1), "cmd_ready": Out(1),
            "i": In(stream.Signature(WRITE_ITEM)),
            "abort": In(1), "clear": In(1), "error": Out(2), "idle": Out(1),
            "wbytes": Out(range(data_bits // 8 + 1)),
        })

    def elaborate(self, platform) -> Module:  # noqa: ARG002
        m = Module()
        nb = self.data_bits // 8
        lb = exact_log2(nb)
        axi = self.axi
        aw_addr = Signal(self.addr_bits)
        aw_left = Signal(SPAN_BITS)
        aw_valid = Signal()
        aw_len = Signal(8)
        w_left = Signal(9)                   # W beats of the accepted AW still to send
        b_pending = Signal(SPAN_BITS)
        in_left = Signal(SPAN_BITS)
        beat = Signal(self.data_bits)
        strb = Signal(nb)
        byte_idx = Signal(lb)
        full = Signal()

        busy_cmd = (aw_left != 0) | aw_valid | (w_left != 0) | (in_left != 0) | full
        m.d.comb += [self.cmd_ready.eq(~busy_cmd), self.idle.eq(~busy_cmd & (b_pending == 0))]
        with m.If(self.cmd_valid & ~busy_cmd):
            m.d.sync += [
                aw_addr.eq(self.cmd_addr & ~Const(nb - 1, self.addr_bits)),
                aw_left.eq(_span_beats(self.cmd_addr, self.cmd_bytes, lb)),
                in_left.eq(self.cmd_bytes), byte_idx.eq(self.cmd_addr[:lb]), strb.eq(0),
            ]

        # -- AW: next burst once the previous one's W beats are out ----------------------------
        beats = _burst_beats(m, aw_addr, aw_left, self.max_burst, lb, "wr")
        m.d.comb += [axi.awaddr.eq(aw_addr), axi.awlen.eq(aw_len), axi.awvalid.eq(aw_valid),
                     axi.awsize.eq(lb), axi.awburst.eq(BURST_INCR), axi.awcache.eq(CACHE_NORMAL),
                     axi.awprot.eq(0), axi.awid.eq(0)]
        with m.If(~aw_valid & (aw_left != 0) & (w_left == 0) & ~self.abort):
            m.d.sync += [aw_valid.eq(1), aw_len.eq(beats - 1)]
        aw_fire = axi.awvalid & axi.awready
        with m.If(aw_fire):
            m.d.sync += [aw_valid.eq(0), aw_addr.eq(aw_addr + ((aw_len + 1) << lb)),
                         aw_left.eq(Mux(self.abort, 0, aw_left - (aw_len + 1)))]
        with m.Elif(self.abort):
            m.d.sync += aw_left.eq(0)

        # -- input items -> beat; a beat is sent when full, at the span's end, or (after an
        # abort) with whatever strobes it has while the burst still owes beats ------------------
        m.d.comb += self.i.ready.eq(~full & (in_left != 0) & ~self.abort)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [beat.word_select(byte_idx, 8).eq(self.i.payload.data),
                         strb.bit_select(byte_idx, 1).eq(self.i.payload.strobe),
                         byte_idx.eq(byte_idx + 1), in_left.eq(in_left - 1)]
            with m.If((byte_idx == nb - 1) | (in_left == 1)):
                m.d.sync += full.eq(1)
        with m.If(self.abort):
            m.d.sync += in_left.eq(0)
            with m.If((w_left == 0) & ~aw_valid):  # no burst owes beats: drop the partial beat
                m.d.sync += [full.eq(0), strb.eq(0), byte_idx.eq(0)]
        send = full | ((in_left == 0) & (w_left != 0))
        w_fire = axi.wvalid & axi.wready
        m.d.comb += [axi.wdata.eq(beat), axi.wstrb.eq(strb), axi.wvalid.eq(send & (w_left != 0)),
                     axi.wlast.eq(w_left == 1)]
        with m.If(w_fire):
            m.d.sync += [full.eq(0), strb.eq(0), byte_idx.eq(0)]
        with m.If(aw_fire):
            m.d.sync += w_left.eq(aw_len + 1)
        with m.Elif(w_fire):
            m.d.sync += w_left.eq(w_left - 1)
        m.d.comb += self.wbytes.eq(Mux(w_fire, sum(strb[k] for k in range(nb)), 0))

        # -- B: always ready, counted -----------------------------------------------------------
        m.d.comb += axi.bready.eq(1)
        b_fire = axi.bvalid & axi.bready
        m.d.sync += b_pending.eq(b_pending + aw_fire - b_fire)
        with m.If(b_fire & (axi.bresp != Resp.OKAY) & (self.error == 0)):
            m.d.sync += self.error.eq(axi.bresp)
        with m.If(self.clear):
            m.d.sync += self.error.eq(0)
        return m


class Scratchpad(wiring.Component):
    """The on-chip fusion scratchpad: a byte-wide ``amaranth.lib.memory`` RAM of ``nbytes``
    behind the same command / byte-stream interface as :class:`ReadDma` and
    :class:`WriteDma`, so the controller's one span path moves a view marked ``onchip``
    (:func:`convforge.hw.layouts.program.view_layout`) exactly as it moves a DDR view.

    Read: a command ``(addr, nbytes)`` streams ``mem[addr : addr + nbytes]`` on ``o``, one
    byte per cycle (synchronous read port, one cycle of latency, no bubbles while ``o`` is
    ready). Write: a command ``(addr, nbytes)`` takes ``nbytes`` :data:`WRITE_ITEM` items on
    ``i``, one per cycle; an item with ``strobe = 0`` leaves its byte unchanged. Addresses
    are byte offsets from the scratchpad's byte 0; the controller checks every view against
    ``nbytes`` before it issues a command (ADDRESS_RANGE otherwise).

    Parameters:
        nbytes: capacity in bytes (``EngineConfig.fuse_buffer_bytes``, >= 1).

    Ports:
        rd_addr, rd_bytes: In(SPAN_BITS); rd_valid: In(1); rd_ready: Out(1) (idle).
        o: Out(stream of 8 bits).
        wr_addr, wr_bytes: In(SPAN_BITS); wr_valid: In(1); wr_ready: Out(1) (no write
        command taking items).
        i: In(stream of :data:`WRITE_ITEM`).
        abort: In(1) -- drop the rest of both commands; idle: Out(1).
    """

    def __init__(self, nbytes: int) -> None:
        if nbytes < 1:
            raise ConfigError(f"scratchpad of {nbytes} bytes: needs at least 1 (EngineConfig.fuse_buffer_bytes)")
        self.nbytes = nbytes
        super().__init__({
            "rd_addr": In(SPAN_BITS), "rd_bytes": In(SPAN_BITS), "rd_valid": In(1), "rd_ready": Out(1),
            "o": Out(stream.Signature(8)),
            "wr_addr": In(SPAN_BITS), "wr_bytes": In(SPAN_BITS), "wr_valid": In(1), "wr_ready": Out(1),
            "i": In(stream.Signature(WRITE_ITEM)),
            "abort": In(1), "idle": Out(1),
        })

    def elaborate(self, platform) -> Module:  # noqa: ARG002
        m = Module()
        m.submodules.ram = ram = memory.Memory(shape=8, depth=self.nbytes, init=[])
        rd, wr = ram.read_port(), ram.write_port()
        ptr, left, have = Signal(SPAN_BITS), Signal(SPAN_BITS), Signal()
        wptr, wleft = Signal(SPAN_BITS), Signal(SPAN_BITS)
        rd_idle = (left == 0) & ~have
        m.d.comb += [self.rd_ready.eq(rd_idle), self.wr_ready.eq(wleft == 0),
                     self.idle.eq(rd_idle & (wleft == 0))]
        # -- read: the port's data register holds the byte on offer until it is taken --------
        advance = (left != 0) & (~have | self.o.ready) & ~self.abort
        m.d.comb += [rd.addr.eq(ptr), rd.en.eq(advance), self.o.payload.eq(rd.data),
                     self.o.valid.eq(have & ~self.abort)]
        with m.If(self.abort):
            m.d.sync += [left.eq(0), have.eq(0)]
        with m.Elif(advance):
            m.d.sync += [ptr.eq(ptr + 1), left.eq(left - 1), have.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += have.eq(0)
        with m.If(self.rd_valid & rd_idle & ~self.abort):
            m.d.sync += [ptr.eq(self.rd_addr), left.eq(self.rd_bytes)]
        # -- write: one item per cycle, strobe = write enable ----------------------------------
        m.d.comb += [self.i.ready.eq(wleft != 0), wr.addr.eq(wptr), wr.data.eq(self.i.payload.data),
                     wr.en.eq(self.i.valid & self.i.ready & self.i.payload.strobe & ~self.abort)]
        with m.If(self.abort):
            m.d.sync += wleft.eq(0)
        with m.Elif(self.i.valid & self.i.ready):
            m.d.sync += [wptr.eq(wptr + 1), wleft.eq(wleft - 1)]
        with m.If(self.wr_valid & (wleft == 0) & ~self.abort):
            m.d.sync += [wptr.eq(self.wr_addr), wleft.eq(self.wr_bytes)]
        return m
