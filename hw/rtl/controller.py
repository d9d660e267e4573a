"""The accelerator's engine: controller, DMA, the PE array and the element units.

:class:`Engine` runs a whole Program (:mod:`convforge.hw.layouts.program`) from one
``start``: it fetches each descriptor over AXI from ``base_addr + prog_offset + 128*i``,
checks it, executes it, and stops at END (``done``) or at the first fault (``done`` with an
error code and the failing descriptor's index). It is the part of the accelerator top
(:mod:`convforge.hw.rtl.accel`) behind the CSR block; its control ports are the CSR
block's.

Every opcode of :class:`~convforge.hw.layouts.program.Opcode` is built: END, COPY, ADD
(the verified :class:`~convforge.hw.rtl.pool_add.ResidualAdd`, one lane), MAXPOOL (running
maximum, padded taps skipped), CONV_PW / CONV_KXK (the layer's weight tiles unpacked to one
byte per weight and its requant words loaded on chip, im2col columns gathered tap by tap by
the address generator into the activation buffer A, ``pe_ci`` columns per word, padded taps
zero; the PE array multiplies one ``pe_co x pe_ci`` tile by one word of A per cycle into
``pe_co`` accumulators, and each finished output group drains through the verified
:class:`~convforge.hw.rtl.requant.Requant`, one channel per cycle), DW_REGULAR / DW_SQUARE / DW_BILINEAR
(per-channel words on chip, per-channel accumulators, each tap -- for bilinear each of
its four neighbours with its ``(1-f)``/``f`` weight product -- accumulated as its span
streams in; then requant; DW_REGULAR at stride 1 and dilation 1 keeps the pixel's last
two input columns in a column cache and reads one new column per pixel, accumulating a
row's three taps per byte). Opcodes 9..15 are BAD_OPCODE.

Execution, per output pixel ``(y, x)`` of a descriptor: each operand's channel vector is
one DMA span ``[addr, addr + (C-1)*channel_stride + 1)`` with
``addr = base + offset + channel_offset + (y >> upsample)*row_stride + (x >> upsample)*pixel_stride``
(the view formula of :mod:`convforge.hw.layouts.program`); read spans are gathered into
an on-chip channel buffer (every ``channel_stride``-th byte), the result is scattered back
with write strobes. Max pool loads each in-bounds tap into the running maximum; ADD loads
``src`` and ``src2`` then streams both through the residual-add pipeline into the writer.
Cost: about ``span + 12`` cycles per span plus the AXI latency (one byte per cycle; a
``src`` span into buffer A -- PE layers, COPY, ADD -- from DDR at channel stride 1 moves a
beat per cycle, split where it crosses an A word), one 128-byte read per descriptor; PE
layers add about ``ceil(C_out/pe_co) * max(ceil(k*k*C_in/pe_ci),
min(pe_co, C_out) + 2)`` cycles per output pixel (``pe_ci * pe_co`` MACs per cycle while
issuing; a finished output group drains through requant, one channel per cycle, while the
next group issues) and the table loads, one byte per cycle; depthwise layers one MAC per
tap byte as it streams in (three per byte with the column cache), the pixel's first used
tap overwriting the accumulators (no clear pass), and their accumulators stream through
requant straight into the store span (the depthwise unit's lanes are not used yet).
Depthwise reads, stores and the drain still move one byte per cycle: they, not the PE
array, bound most layers. Exact figures: :mod:`convforge.sw.runtime.cycles`.

Fusion scratchpad: an operand view with the ``onchip`` flag addresses the
:class:`~convforge.hw.rtl.dma.Scratchpad` (``fuse_buffer_bytes``, offsets from its byte 0,
no base address) instead of DDR; the same span states (RCMD/RDATA, WCMD/WDATA) take their
bytes from it or give them to it, one byte per cycle, so a fused chain's row bands run on
the very datapath of every other descriptor. ``band_top`` (DW_REGULAR / DW_SQUARE) shifts
the input row of every tap down by that many rows (a band whose ``src`` starts mid-image).

Checks, in the emulator's order (:class:`convforge.sw.runtime.emulator.Emulator`):

* ``PROG_LENGTH`` = 0 or the descriptors reach past ``buf_bytes``: ADDRESS_RANGE, index 0;
* opcode 9..15: BAD_OPCODE; END: done; ``config_tag`` differs from this engine's:
  CONFIG_MISMATCH;
* destination ``upsample``, kernel or stride 0 (not COPY), channels 0 or above
  ``max_channels``, zero heights / widths / channel strides, ADD with differing
  input / output shapes, MAXPOOL with ``pad >= kernel`` or a window / stride beyond
  ``pool_k_max`` / ``pool_s_max``, a PE layer with ``k*k*C_in`` or ``C_out`` above
  ``max_channels``, dilation 0, ``w_bits`` outside 2..8, an accumulator bound
  (``acc_bound_bits``) wider than ``acc_bits``, CONV_PW with ``kernel != 1``, more weight
  bytes than ``weight_depth`` tiles hold, a depthwise layer with ``C_out != C_in``, a kernel
  other than 3, a stride other than 1 or 2 or rows wider than ``line_width``, a nonzero
  ``band_top`` on another opcode than DW_SQUARE or DW_REGULAR (there at most ``pad``):
  BAD_DESCRIPTOR (the emulator's refusals, one for one);
* any byte of an operand's whole view, of the weight tiles, requant words or depthwise
  words at or past ``buf_bytes`` (an ``onchip`` view: past ``fuse_buffer_bytes``, so any
  ``onchip`` view when the engine has no scratchpad): ADDRESS_RANGE;
* an AXI SLVERR / DECERR on a descriptor fetch or data transfer: AXI_SLVERR / AXI_DECERR;
* no AXI handshake for ``watchdog_cycles`` while a transfer is pending: TIMEOUT (done at
  once; should the bus answer later, the pending bursts are drained before the next start);
* the last of ``PROG_LENGTH`` descriptors executed without END: NO_END, that index.

After a fault or a ``soft_reset`` the DMA completes the bursts already issued (reads
drained, writes with ``WSTRB = 0``) before the engine accepts the next ``start``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from convforge.errors import ConfigError
from convforge.hw.config import EngineConfig
from convforge.hw.layouts.csr import ErrorCode
from convforge.hw.layouts.program import (
    DESCRIPTOR_BYTES,
    Opcode,
    config_tag,
    descriptor_layout,
    dw_channel_word_layout,
    requant_word_layout,
    view_layout,
    weight_tile_bytes,
)
from convforge.hw.rtl.axi import Resp, axi4_signature
from convforge.hw.rtl.csr import UNIT_BUSY_LAYOUT
from convforge.hw.rtl.dma import SPAN_BITS, ReadDma, Scratchpad, WriteDma
from convforge.hw.rtl.pool_add import ResidualAdd
from convforge.hw.rtl.requant import Requant

#: Opcodes this engine executes (END included); every other valid opcode is BAD_OPCODE.
BUILT_OPCODES = (Opcode.END, Opcode.COPY, Opcode.ADD, Opcode.MAXPOOL)
#: Default watchdog: cycles without an AXI handshake while a transfer is pending.
WATCHDOG_CYCLES = 1 << 20


def _tree_sum(values: list):
    """Sum ``values`` as a balanced adder tree (depth ``ceil(log2(len))``)."""
    while len(values) > 1:
        values = [a + b for a, b in zip(values[::2], values[1::2], strict=False)] + values[len(values) & ~1:]
    return values[0]


class Engine(wiring.Component):
    """Controller + DMA + units (see the module docstring).

    Parameters:
        cfg: the EngineConfig (AXI data width, ``max_channels`` = channel-buffer depth,
            the descriptor layout and its config tag).
        addr_bits: AXI address width (board fact: 32 on Zynq-7000, 40/49 on ZynqMP).
        max_burst: beats per burst; max_outstanding: read bursts in flight.
        watchdog_cycles: TIMEOUT after this many cycles without an AXI handshake.

    Ports:
        m_axi: Out(:func:`~convforge.hw.rtl.dma.axi4_signature`) -- DDR.
        start, soft_reset: In(1) pulses; base_addr: In(64) bytes; prog_offset: In(32)
            bytes from base; prog_length: In(32) descriptors; buf_bytes: In(32) size of the
            Program's buffer in bytes (every address must fall below base + buf_bytes).
        busy, done: Out(1); error_code: Out(8) (:class:`~convforge.hw.layouts.csr.ErrorCode`);
        error_index: Out(32) failing descriptor.
        unit_busy: Out(:data:`~convforge.hw.rtl.csr.UNIT_BUSY_LAYOUT`) -- one bit per unit,
            high in its busy cycles (the CSR BUSY_* counters).
        dma_rd_bytes, dma_wr_bytes: Out(range(axi_data_bits // 8 + 1)) -- bytes moved
            this cycle (whole R beats; strobed W bytes).
    """

    def __init__(self, cfg: EngineConfig, addr_bits: int = 32, max_burst: int = 16,
                 max_outstanding: int = 4, watchdog_cycles: int = WATCHDOG_CYCLES) -> None:
        if watchdog_cycles < 16:
            raise ConfigError(f"watchdog_cycles={watchdog_cycles}: needs at least 16 cycles")
        if cfg.pe_ci & (cfg.pe_ci - 1):
            raise ConfigError(f"EngineConfig.pe_ci = {cfg.pe_ci}: the RTL engine needs a power of two (its "
                              "activation buffer holds pe_ci channels per word); use 4, 8, 16 or 32")
        self.cfg = cfg
        self.addr_bits, self.max_burst, self.max_outstanding = addr_bits, max_burst, max_outstanding
        self.watchdog_cycles = watchdog_cycles
        nbytes = range(cfg.axi_data_bits // 8 + 1)
        super().__init__({
            "m_axi": Out(axi4_signature(addr_bits, cfg.axi_data_bits)),
            "start": In(1), "soft_reset": In(1),
            "base_addr": In(64), "prog_offset": In(32), "prog_length": In(32), "buf_bytes": In(32),
            "busy": Out(1), "done": Out(1), "error_code": Out(8), "error_index": Out(32),
            "unit_busy": Out(UNIT_BUSY_LAYOUT),
            "dma_rd_bytes": Out(nbytes), "dma_wr_bytes": Out(nbytes),
        })

    def elaborate(self, platform) -> Module:  # noqa: ARG002, PLR0915
        cfg = self.cfg
        m = Module()
        m.submodules.reader = reader = ReadDma(self.addr_bits, cfg.axi_data_bits, self.max_burst,
                                               self.max_outstanding)
        m.submodules.writer = writer = WriteDma(self.addr_bits, cfg.axi_data_bits, self.max_burst)
        for part in (reader, writer):
            for name, member in part.axi.signature.members.items():
                if member.flow == wiring.Out:
                    m.d.comb += getattr(self.m_axi, name).eq(getattr(part.axi, name))
                else:
                    m.d.comb += getattr(part.axi, name).eq(getattr(self.m_axi, name))
        # the fusion scratchpad (a 1-byte stand-in when the engine has none: every onchip view
        # is then out of range, so it is never addressed)
        m.submodules.scratch = scratch = Scratchpad(max(cfg.fuse_buffer_bytes, 1))
        dma_idle = reader.idle & writer.idle & scratch.idle
        m.d.comb += [self.dma_rd_bytes.eq(Mux(reader.beat, cfg.axi_data_bits // 8, 0)),
                     self.dma_wr_bytes.eq(writer.wbytes)]

        # -- latched frame parameters and the descriptor ------------------------------------
        layout = descriptor_layout(cfg)
        vlayout = view_layout(cfg)
        base = Signal(64)
        prog_off = Signal(32)
        n_desc = Signal(32)
        buf_bytes = Signal(32)
        idx = Signal(32)
        raw = Signal(DESCRIPTOR_BYTES * 8)
        desc = data.View(layout, raw)
        op = desc.opcode
        tag = config_tag(cfg)

        err = Signal(8)
        err_idx = Signal(32)
        done = Signal()
        pending = Signal()
        m.d.comb += [self.error_code.eq(err), self.error_index.eq(err_idx), self.done.eq(done)]

        ci, co = desc.in_channels, desc.out_channels
        hi_, wi, ho, wo = desc.in_height, desc.in_width, desc.out_height, desc.out_width
        k, st, pad = desc.kernel, desc.stride, desc.pad
        is_copy, is_add, is_pool = op == Opcode.COPY, op == Opcode.ADD, op == Opcode.MAXPOOL
        is_conv = (op == Opcode.CONV_PW) | (op == Opcode.CONV_KXK)
        is_dwr, is_dws, is_dwb = op == Opcode.DW_REGULAR, op == Opcode.DW_SQUARE, op == Opcode.DW_BILINEAR
        is_dw = is_dwr | is_dws | is_dwb
        c2 = Signal.like(co)            # channels of src2: ADD's b, the dilation map, the offset map
        m.d.comb += c2.eq(Mux(is_dws, 1, Mux(is_dwb, 18, co)))
        # pixels iterated: COPY over the input, the others over the output
        ph = Signal(16)
        pw = Signal(16)
        m.d.comb += [ph.eq(Mux(is_copy, hi_, ho)), pw.eq(Mux(is_copy, wi, wo))]
        dil = Signal(4)                 # tap spacing: the conv's dilation, 1 for max pool
        m.d.comb += dil.eq(Mux(is_conv | is_dwr | is_dwb, desc.dilation, 1))
        # PE layers: k*k*ci im2col columns, weight tiles, requant words
        ci_eff = Signal(range(15 * 15 * (1 << len(ci)) + 1))
        m.d.comb += ci_eff.eq(k * k * ci)
        wb = desc.w_bits
        tile_bytes = Signal(range(weight_tile_bytes(cfg, 8) + 1))
        with m.Switch(wb):
            for bits in range(1, 9):
                with m.Case(bits):
                    m.d.comb += tile_bytes.eq(weight_tile_bytes(cfg, bits))
        cig = Signal(range(cfg.max_channels + 1))
        cog = Signal(range(cfg.max_channels + 1))
        w_total = Signal(40)            # weight bytes of the layer: cig * cog * tile_bytes

        # -- checks ---------------------------------------------------------------------------
        def last_byte(v, h, w, c, name):
            """Offset (from base) of the view's last byte for an (h, w, c) logical shape."""
            out = Signal(52, name=name)
            up = v.upsample
            m.d.comb += out.eq(v.offset + v.channel_offset + ((h - 1) >> up) * v.row_stride
                               + ((w - 1) >> up) * v.pixel_stride + (c - 1) * v.channel_stride)
            return out

        src_last = last_byte(desc.src, hi_, wi, ci, "src_last")
        src2_last = last_byte(desc.src2, ho, wo, c2, "src2_last")
        dst_last = last_byte(desc.dst, Mux(is_copy | is_add, hi_, ho), Mux(is_copy | is_add, wi, wo),
                             Mux(is_conv, co, ci), "dst_last")
        def limit(view):
            return Mux(view.onchip, cfg.fuse_buffer_bytes, buf_bytes)

        out_of_range = Signal()
        m.d.comb += out_of_range.eq(
            (src_last >= limit(desc.src)) | (dst_last >= limit(desc.dst))
            | ((is_add | is_dws | is_dwb) & (src2_last >= limit(desc.src2)))
            | (is_dw & (desc.weights_offset + (ci << 4) > buf_bytes))
            | (is_conv & ((desc.weights_offset + w_total > buf_bytes)
                          | (desc.requant_offset + (co << 3) > buf_bytes))))
        bad_field = Signal()
        m.d.comb += bad_field.eq(
            desc.dst.upsample
            | (~is_copy & ((k == 0) | (st == 0)))
            | (ci == 0) | (ci > cfg.max_channels)
            | (hi_ == 0) | (wi == 0) | (ph == 0) | (pw == 0)
            | (desc.src.channel_stride == 0) | (desc.dst.channel_stride == 0)
            | (is_add & ((co != ci) | (ho != hi_) | (wo != wi)))
            | ((is_add | is_dws | is_dwb) & (desc.src2.channel_stride == 0))
            | (is_dw & (co != ci))
            | ((desc.band_top != 0) & ~(is_dws | (is_dwr & (desc.band_top <= pad))))
            | (is_pool & ((pad >= k) | (k > cfg.pool_k_max) | (st > cfg.pool_s_max)))
            | (is_dw & ((k != 3) | ((st != 1) & (st != 2)) | (wi > cfg.line_width)))
            | (is_conv & ((co == 0) | (co > cfg.max_channels) | (ci_eff > cfg.max_channels) | (desc.dilation == 0)
                          | (wb == 0) | (wb > 8) | ((op == Opcode.CONV_PW) & (k != 1))
                          | (desc.acc_bound_bits > cfg.acc_bits))))
        too_many_weights = Signal()
        m.d.comb += too_many_weights.eq(is_conv & (cig * cog > cfg.weight_depth))
        built = Signal()
        m.d.comb += built.eq(is_copy | is_add | is_pool | is_conv | is_dw)

        # -- channel buffers ------------------------------------------------------------------
        # A holds pe_ci bytes per word (byte-enable writes) so the PE array reads pe_ci im2col
        # columns per cycle; every other user reads and writes it a byte at a time
        lg_ci = exact_log2(cfg.pe_ci)
        m.submodules.buf_a = buf_a = memory.Memory(shape=unsigned(8 * cfg.pe_ci),
                                                   depth=-(-cfg.max_channels // cfg.pe_ci), init=[])
        m.submodules.buf_b = buf_b = memory.Memory(shape=unsigned(8), depth=max(cfg.max_channels, 18), init=[])
        a_rd, a_wr = buf_a.read_port(domain="comb"), buf_a.write_port(granularity=8)

        def a_read(index):
            """Byte ``index`` of A (combinational)."""
            m.d.comb += a_rd.addr.eq(index >> lg_ci)
            return a_rd.data.word_select(index[:lg_ci], 8) if lg_ci else a_rd.data

        def a_write(index, byte, enable=1):
            """Write ``byte`` to byte ``index`` of A when ``enable``."""
            lane = Const(1, cfg.pe_ci) << index[:lg_ci] if lg_ci else Const(1, 1)
            m.d.comb += [a_wr.addr.eq(index >> lg_ci), a_wr.data.eq(byte.replicate(cfg.pe_ci)),
                         a_wr.en.eq(Mux(enable, lane, 0))]
        b_rd, b_wr = buf_b.read_port(domain="comb"), buf_b.write_port()
        b_rd2 = buf_b.read_port(domain="comb")      # the second offset of a bilinear tap
        # depthwise: per-channel words (9 weights, bias, m, s) and accumulators
        dw_layout = dw_channel_word_layout(cfg)
        m.submodules.dwmem = dwmem = memory.Memory(shape=unsigned(128), depth=cfg.max_channels, init=[])
        dw_rd, dw_wr = dwmem.read_port(domain="comb"), dwmem.write_port()
        dw_word = data.View(dw_layout, dw_rd.data)
        dw_shift = Signal(128)
        m.submodules.accm = accm = memory.Memory(shape=signed(cfg.acc_bits), depth=cfg.max_channels, init=[])
        acc_rd, acc_wr = accm.read_port(domain="comb"), accm.write_port()

        # PE layers: the layer's weight tiles, one tile per word, each weight unpacked from the
        # Program's w_bits packing (weight_tile_layout) to one signed byte as it is loaded, so
        # the PE array reads a whole pe_co x pe_co tile per cycle whatever the layer's w_bits;
        # and the requant words (64 bits per output channel).
        n_tile = cfg.pe_ci * cfg.pe_co
        m.submodules.wmem = wmem = memory.Memory(shape=unsigned(8 * n_tile), depth=cfg.weight_depth, init=[])
        wt_rd, wt_wr = wmem.read_port(), wmem.write_port()
        stage = Signal(8 * weight_tile_bytes(cfg, 8))     # the packed tile being received
        stage_pos = Signal(range(weight_tile_bytes(cfg, 8) + 1))
        stage_full = Signal()                             # write the unpacked tile this cycle
        unpacked = Signal(8 * n_tile)

        def sign_extend8(v):
            return Cat(v, v[-1].replicate(8 - len(v))) if len(v) < 8 else v

        with m.Switch(wb):
            for bits in range(1, 9):
                with m.Case(bits):
                    m.d.comb += unpacked.eq(Cat(sign_extend8(stage[i * bits:(i + 1) * bits]) for i in range(n_tile)))
        rq_layout = requant_word_layout(cfg)
        m.submodules.rqmem = rqmem = memory.Memory(shape=unsigned(64), depth=cfg.max_channels, init=[])
        rq_rd, rq_wr = rqmem.read_port(), rqmem.write_port()
        rq_shift = Signal(64)
        rq_rst = Signal()
        m.submodules.requant = requant = ResetInserter(rq_rst)(Requant(cfg, lanes=1))
        m.d.comb += [requant.lo.eq(desc.lo), requant.hi.eq(desc.hi), requant.o.ready.eq(1)]

        radd_rst = Signal()
        m.submodules.radd = radd = ResetInserter(radd_rst)(ResidualAdd(cfg, lanes=1))
        # The unit latches its descriptor (unit contract) on the first cycle after each reset
        # (radd_rst in SEQ); the controller counts the vector pairs itself, so the unit's own
        # count is left open-ended and its `done` is not used.
        radd_desc = radd.desc.payload
        m.d.comb += [radd.desc.valid.eq(1), radd_desc.count.eq(0xFFFF_FFFF),
                     radd_desc.a_signed.eq(desc.src.signed), radd_desc.b_signed.eq(desc.src2.signed),
                     radd_desc.ma.eq(desc.add_ma), radd_desc.mb.eq(desc.add_mb), radd_desc.s.eq(desc.add_s),
                     radd_desc.lo.eq(desc.lo), radd_desc.hi.eq(desc.hi)]

        # -- the current move: one span of one operand --------------------------------------------
        oy, ox = Signal(16), Signal(16)
        my, mx = Signal(signed(24)), Signal(signed(24))
        sel = Signal(2)                 # 0 src, 1 src2, 2 dst
        phase = Signal(3)               # per pixel: 0 src, 1 src2 (PE layers: store + MAC), 2 store,
        #                                 3 next pixel, 4 depthwise taps
        tap_i, tap_j = Signal(4), Signal(4)
        tap_base = Signal(range(16 * 16 * (1 << len(ci))))  # conv: A index of the next tap's channel 0
        move_base = Signal.like(tap_base)                     # A index of the current move's channel 0
        nch = Signal.like(ci)                                 # channels of the current move
        m.d.comb += nch.eq(Mux(is_conv & (sel == 2), co, Mux(sel == 1, c2, ci)))
        first = Signal()                # no tap of this pixel loaded yet (max pool, depthwise)
        # depthwise: a channel's accumulator as this pixel sees it -- 0 until its first used tap
        # (so no clear pass; a bilinear pixel whose taps are all skipped requants 0)
        acc_now = Signal(signed(cfg.acc_bits))
        m.d.comb += acc_now.eq(Mux(first, 0, acc_rd.data))
        v = Signal(vlayout)
        with m.Switch(sel):
            with m.Case(0):
                m.d.comb += v.eq(desc.src)
            with m.Case(1):
                m.d.comb += v.eq(desc.src2)
            with m.Default():
                m.d.comb += v.eq(desc.dst)
        move_addr = Signal(self.addr_bits)
        on_chip = Signal()              # the current move addresses the scratchpad
        span = Signal(SPAN_BITS)
        pos = Signal(SPAN_BITS)
        cs_phase = Signal(8)
        ch = Signal(range(cfg.max_channels + 1))
        feed = Signal(range(cfg.max_channels + 1))
        last_pos = pos == span - 1
        cs_next = Mux(cs_phase + 1 == v.channel_stride, 0, cs_phase + 1)

        # max pool tap coordinates
        iy, ix = Signal(signed(24)), Signal(signed(24))
        m.d.comb += [iy.eq(oy * st - pad + tap_i * dil), ix.eq(ox * st - pad + tap_j * dil)]
        tap_inside = (iy >= 0) & (iy < hi_) & (ix >= 0) & (ix < wi)

        # depthwise taps: regular (iy, ix); square: dilation from the map (B[0]); bilinear:
        # four weighted neighbours of the offset position (offsets B[2t], B[2t+1]), INTEGER_SPEC §4
        nb = Signal(2)                  # bilinear neighbour (dy, dx) = (nb[1], nb[0])
        tap_t = Signal(4)
        m.d.comb += tap_t.eq(tap_i * 3 + tap_j)
        frac = desc.frac_bits
        one = Signal(9)
        m.d.comb += one.eq(1 << frac)
        lim = Signal(signed(16))
        m.d.comb += lim.eq(desc.offset_range << frac)

        def element(byte, is_signed):
            return Mux(is_signed, byte.as_signed(), byte)

        dmv = Signal(8)
        dm_raw = b_rd.data
        m.d.comb += dmv.eq(Mux(dm_raw > desc.d_max, desc.d_max, dm_raw))
        offs = []
        for port in (b_rd, b_rd2):
            raw_off = Signal(signed(9))
            m.d.comb += raw_off.eq(element(port.data, desc.src2.signed))
            off = Signal(signed(16))
            m.d.comb += off.eq(Mux(raw_off < -lim, -lim, Mux(raw_off > lim, lim, raw_off)))
            offs.append(off)
        py, px = Signal(signed(32)), Signal(signed(32))
        m.d.comb += [py.eq(((oy * st - pad + tap_i * dil).as_signed() << frac) + offs[0]),
                     px.eq(((ox * st - pad + tap_j * dil).as_signed() << frac) + offs[1])]
        y0, x0 = Signal(signed(32)), Signal(signed(32))
        m.d.comb += [y0.eq(py >> frac), x0.eq(px >> frac)]
        fy, fx = Signal(9), Signal(9)
        m.d.comb += [fy.eq(py - (y0 << frac)), fx.eq(px - (x0 << frac))]
        ty, tx = Signal(signed(32)), Signal(signed(32))
        coef = Signal(17)
        with m.If(is_dwb):
            m.d.comb += [ty.eq(y0 + nb[1]), tx.eq(x0 + nb[0]),
                         coef.eq(Mux(nb[1], fy, one - fy) * Mux(nb[0], fx, one - fx))]
        with m.Elif(is_dws):
            m.d.comb += [ty.eq(oy * st + tap_i * dmv - dmv + desc.band_top), tx.eq(ox * st + tap_j * dmv - dmv),
                         coef.eq(1)]
        with m.Else():
            m.d.comb += [ty.eq(iy + Mux(is_dwr, desc.band_top, 0)), tx.eq(ix), coef.eq(1)]
        dw_tap_used = (ty >= 0) & (ty < hi_) & (tx >= 0) & (tx < wi) & (coef != 0)
        coef_r = Signal.like(coef)
        tap_r = Signal(4)

        # DW_REGULAR at stride 1 and dilation 1 (`reuse`): a column cache keeps the pixel's
        # last two input columns, so each output pixel reads one new column (a span per row)
        # and accumulates a row's three taps per channel byte. One 24-bit word per (row,
        # channel), one byte per slot; the slot of tap column j is (slot0 + j) mod 3, and a
        # slot whose column lies outside the image (padding) contributes 0.
        reuse = Signal()
        m.d.comb += reuse.eq(is_dwr & (st == 1) & (desc.dilation == 1))
        m.submodules.colc = colc = memory.Memory(shape=unsigned(24), depth=3 * cfg.max_channels, init=[])
        cc_rd, cc_wr = colc.read_port(domain="comb"), colc.write_port(granularity=8)
        slot0 = Signal(2)
        live = Signal(3)                # per slot: its column is inside the image
        row_r, slot_r, prime_r = Signal(2), Signal(2), Signal()   # the current tap's row, slot,
        #                                 and whether it only fills the cache (a row's first pixel)

        slots = [Signal(2, name=f"slot{j}_of_pixel") for j in range(3)]
        for j, slot in enumerate(slots):
            m.d.comb += slot.eq(Mux(slot0 + j >= 3, slot0 + j - 3, slot0 + j))

        def slot_of(j):
            return slots[j] if isinstance(j, int) else Mux(j == 0, slots[0], Mux(j == 1, slots[1], slots[2]))

        def dw_accumulate(x, write):
            """Channel ``ch`` of the current tap: ``acc += w[tap] * coef * x`` (with the column
            cache, plus the row's two cached taps); writes the accumulator when ``write``."""
            m.d.comb += [dw_rd.addr.eq(ch), acc_rd.addr.eq(ch), cc_rd.addr.eq(row_r * cfg.max_channels + ch)]
            weights = dw_word.weights.as_value()
            cached = []
            for j in range(2):
                byte = cc_rd.data.word_select(slot_of(j), 8)
                cached.append(Mux(live.bit_select(slot_of(j), 1), element(byte, desc.src.signed), 0)
                              * weights.word_select(row_r * 3 + j, 8).as_signed())
            total = Signal(signed(cfg.acc_bits))
            m.d.comb += total.eq(acc_now + weights.word_select(tap_r, 8).as_signed() * coef_r * x
                                 + Mux(reuse, cached[0] + cached[1], 0))
            with m.If(write):
                m.d.comb += [acc_wr.addr.eq(ch), acc_wr.data.eq(total), acc_wr.en.eq(1)]

        # PE layers: division remainders, MAC loop counters and pipeline registers
        rem_i = Signal(signed(len(ci_eff) + 2))
        rem_o = Signal(signed(len(co) + 2))
        g = Signal(range(cfg.max_channels // cfg.pe_ci + 2))   # input group (pe_ci im2col columns)
        t = Signal(range(cfg.weight_depth + 1))                # tile (output group major)
        co_base = Signal(range(cfg.max_channels + cfg.pe_co + 1))
        issuing, v1, last1, first1, v2, last2, first2 = (Signal(name=n) for n in
                                                         ("issuing", "v1", "last1", "first1", "v2", "last2", "first2"))
        lanes = data.ArrayLayout(signed(cfg.acc_bits), cfg.pe_co)
        x_r = Signal(data.ArrayLayout(signed(9), cfg.pe_ci))   # stage 1: the group's activations
        dot = Signal(lanes)                                    # stage 2: row . columns per output lane
        acc = Signal(lanes)                                    # the group being accumulated
        held = Signal(lanes)                                   # the finished group, while it drains
        og = Signal(range(cfg.max_channels // cfg.pe_co + 2))  # output group being issued
        draining, dv_r = Signal(), Signal()
        d = Signal(range(cfg.pe_co))                           # channel of `held` being drained
        drain_acc = Signal(signed(cfg.acc_bits))               # the drain stage's accumulator
        pos_tile = Signal(range(cfg.weight_depth + 1))
        m.d.sync += stage_full.eq(0)
        with m.If(stage_full):
            m.d.sync += pos_tile.eq(pos_tile + 1)
            m.d.comb += [wt_wr.addr.eq(pos_tile), wt_wr.data.eq(unpacked), wt_wr.en.eq(1)]

        # -- watchdog -------------------------------------------------------------------------
        ax = self.m_axi
        handshake = ((ax.arvalid & ax.arready) | (ax.rvalid & ax.rready) | (ax.awvalid & ax.awready)
                     | (ax.wvalid & ax.wready) | (ax.bvalid & ax.bready))
        wd = Signal(range(self.watchdog_cycles + 1))
        with m.If(handshake | dma_idle):
            m.d.sync += wd.eq(0)
        with m.Elif(wd != self.watchdog_cycles):
            m.d.sync += wd.eq(wd + 1)
        hung = wd == self.watchdog_cycles
        dma_err = Signal(2)
        m.d.comb += dma_err.eq(Mux(reader.error != 0, reader.error, writer.error))

        abort = Signal()
        m.d.comb += [reader.abort.eq(abort), writer.abort.eq(abort), scratch.abort.eq(abort)]
        clear = Signal()
        m.d.comb += [reader.clear.eq(clear), writer.clear.eq(clear)]

        with m.If(self.start):
            m.d.sync += pending.eq(1)

        def fault(code, index=None):
            m.d.sync += [err.eq(code), err_idx.eq(idx if index is None else index)]
            m.next = "DRAIN"

        def start_move(selector, y, x):
            m.d.sync += [sel.eq(selector), my.eq(y), mx.eq(x)]
            m.next = "ADDR"

        def store_item(src_valid, src_byte) -> Signal:
            """Offer the store span its next item: the channel byte ``src_byte`` (when
            ``src_valid``) or a hole (channel stride > 1), to DDR (the write DMA) or to the
            scratchpad, one path; go to SEQ after the span's last item. Returns the signal
            that is high when a channel byte is taken this cycle."""
            take = cs_phase == 0
            item_valid, item_ready, taken = Signal(), Signal(), Signal()
            m.d.comb += [item_valid.eq(Mux(take, src_valid, 1)),
                         item_ready.eq(Mux(on_chip, scratch.i.ready, writer.i.ready)),
                         taken.eq(take & item_valid & item_ready)]
            for sink in (writer.i, scratch.i):
                m.d.comb += [sink.payload.data.eq(Mux(take, src_byte, 0)), sink.payload.strobe.eq(take)]
            m.d.comb += [writer.i.valid.eq(item_valid & ~on_chip), scratch.i.valid.eq(item_valid & on_chip)]
            with m.If(item_valid & item_ready):
                m.d.sync += [pos.eq(pos + 1), cs_phase.eq(cs_next)]
                with m.If(take):
                    m.d.sync += ch.eq(ch + 1)
                with m.If(last_pos):
                    m.next = "SEQ"
            return taken

        @contextmanager
        def state(name: str) -> Iterator[None]:
            """An FSM state whose last statements (which win) end the frame on an AXI error,
            a hung bus or a soft reset."""
            with m.State(name):
                yield
                if name not in ("IDLE", "RESET_DRAIN", "DRAIN"):
                    with m.If(dma_err != 0):
                        fault(Mux(dma_err == Resp.DECERR, ErrorCode.AXI_DECERR, ErrorCode.AXI_SLVERR))
                if name not in ("IDLE", "RESET_DRAIN", "HUNG"):
                    with m.If(hung):
                        m.d.sync += [err.eq(ErrorCode.TIMEOUT), err_idx.eq(idx), done.eq(1)]
                        m.next = "HUNG"
                with m.If(self.soft_reset):
                    m.d.sync += [done.eq(0), err.eq(0), err_idx.eq(0), pending.eq(0)]
                    m.next = "RESET_DRAIN"

        def load_word_table(name: str, offset, words, log2_bytes: int, shift: Signal, wr) -> None:
            """States ``name`` and ``name_DATA``: read ``words`` table words of ``2**log2_bytes``
            bytes from ``base + offset``, assemble each little-endian in ``shift`` and write it
            to ``wr`` at its word index; then go to SEQ. ``pos`` counts bytes (0 on entry)."""
            nbytes = words << log2_bytes
            with state(name):
                m.d.comb += [reader.cmd_valid.eq(1), reader.cmd_addr.eq(base + offset), reader.cmd_bytes.eq(nbytes)]
                with m.If(reader.cmd_ready):
                    m.next = f"{name}_DATA"
            with state(f"{name}_DATA"):
                word = Cat(shift[8:], reader.o.payload)
                m.d.comb += [reader.o.ready.eq(1), wr.addr.eq(pos >> log2_bytes), wr.data.eq(word)]
                with m.If(reader.o.valid):
                    m.d.sync += [shift.eq(word), pos.eq(pos + 1)]
                    with m.If(pos[:log2_bytes] == (1 << log2_bytes) - 1):
                        m.d.comb += wr.en.eq(1)
                    with m.If(pos == nbytes - 1):
                        m.next = "SEQ"

        with m.FSM(name="ctrl") as fsm:
            with state("IDLE"):
                with m.If(pending & dma_idle):
                    m.d.sync += [pending.eq(0), done.eq(0), err.eq(0), err_idx.eq(0), idx.eq(0),
                                 base.eq(self.base_addr), prog_off.eq(self.prog_offset),
                                 n_desc.eq(self.prog_length), buf_bytes.eq(self.buf_bytes)]
                    m.d.comb += clear.eq(1)
                    m.next = "PROGCHECK"
            with state("PROGCHECK"):
                with m.If((n_desc == 0) | (prog_off + (n_desc << 7) > buf_bytes)):
                    fault(ErrorCode.ADDRESS_RANGE, 0)
                with m.Else():
                    m.next = "FETCH"
            with state("FETCH"):
                m.d.comb += [reader.cmd_valid.eq(1),
                             reader.cmd_addr.eq(base + prog_off + (idx << 7)),
                             reader.cmd_bytes.eq(DESCRIPTOR_BYTES)]
                with m.If(reader.cmd_ready):
                    m.d.sync += pos.eq(0)
                    m.next = "FETCH_DATA"
            with state("FETCH_DATA"):
                m.d.comb += reader.o.ready.eq(1)
                with m.If(reader.o.valid):
                    m.d.sync += [raw.eq(Cat(raw[8:], reader.o.payload)), pos.eq(pos + 1)]
                    with m.If(pos == DESCRIPTOR_BYTES - 1):
                        m.next = "DECODE"
            with state("DECODE"):
                with m.If(op > max(int(o) for o in Opcode)):
                    fault(ErrorCode.BAD_OPCODE)
                with m.Elif(op == Opcode.END):
                    m.next = "FINISH"
                with m.Elif(desc.config_tag != tag):
                    fault(ErrorCode.CONFIG_MISMATCH)
                with m.Elif(~built):
                    fault(ErrorCode.BAD_OPCODE)
                with m.Elif(bad_field):
                    fault(ErrorCode.BAD_DESCRIPTOR)
                with m.Else():
                    m.d.sync += [cig.eq(0), cog.eq(0), rem_i.eq(ci_eff), rem_o.eq(co)]
                    m.next = "DIV"
            with state("DIV"):
                # ceil(ci_eff / pe_ci), ceil(co / pe_co) by repeated subtraction (<= max_channels cycles)
                with m.If(rem_i > 0):
                    m.d.sync += [rem_i.eq(rem_i - cfg.pe_ci), cig.eq(cig + 1)]
                with m.If(rem_o > 0):
                    m.d.sync += [rem_o.eq(rem_o - cfg.pe_co), cog.eq(cog + 1)]
                with m.If((rem_i <= 0) & (rem_o <= 0)):
                    m.d.sync += w_total.eq(cig * cog * tile_bytes)
                    m.next = "CHECK"
            with state("CHECK"):
                with m.If(too_many_weights):
                    fault(ErrorCode.BAD_DESCRIPTOR)
                with m.Elif(out_of_range):
                    fault(ErrorCode.ADDRESS_RANGE)
                with m.Else():
                    m.d.sync += [oy.eq(0), ox.eq(0), phase.eq(0), tap_i.eq(0), tap_j.eq(0), first.eq(1),
                                 tap_base.eq(0), pos.eq(0), stage_pos.eq(0), pos_tile.eq(0), slot0.eq(0)]
                    with m.If(is_conv):
                        m.next = "LOADW"
                    with m.Elif(is_dw):
                        m.next = "LOADDW"
                    with m.Else():
                        m.next = "SEQ"
            load_word_table("LOADDW", desc.weights_offset, ci, 4, dw_shift, dw_wr)
            with state("LOADW"):
                m.d.comb += [reader.cmd_valid.eq(1), reader.cmd_addr.eq(base + desc.weights_offset),
                             reader.cmd_bytes.eq(w_total)]
                with m.If(reader.cmd_ready):
                    m.next = "LOADW_DATA"
            with state("LOADW_DATA"):
                # bytes into the staging tile; a complete tile is unpacked into wmem next cycle
                m.d.comb += reader.o.ready.eq(1)
                with m.If(reader.o.valid):
                    m.d.sync += [stage.word_select(stage_pos, 8).eq(reader.o.payload), pos.eq(pos + 1)]
                    with m.If(stage_pos == tile_bytes - 1):
                        m.d.sync += [stage_pos.eq(0), stage_full.eq(1)]
                    with m.Else():
                        m.d.sync += stage_pos.eq(stage_pos + 1)
                    with m.If(pos == w_total - 1):
                        m.d.sync += pos.eq(0)
                        m.next = "LOADRQ"
            load_word_table("LOADRQ", desc.requant_offset, co, 3, rq_shift, rq_wr)
            with state("SEQ"):
                m.d.comb += [radd_rst.eq(1), rq_rst.eq(1)]
                with m.Switch(phase):
                    with m.Case(0):
                        with m.If(is_dw):
                            m.d.sync += phase.eq(1)
                        with m.Elif(is_pool | is_conv):
                            with m.If(tap_i == k):
                                m.d.sync += phase.eq(Mux(is_conv, 1, 2))
                            with m.Else():
                                with m.If(tap_j == k - 1):
                                    m.d.sync += [tap_j.eq(0), tap_i.eq(tap_i + 1)]
                                with m.Else():
                                    m.d.sync += tap_j.eq(tap_j + 1)
                                m.d.sync += move_base.eq(tap_base)
                                with m.If(is_conv):
                                    m.d.sync += tap_base.eq(tap_base + ci)
                                with m.If(tap_inside):
                                    start_move(0, iy, ix)
                                with m.Elif(is_conv):  # padded tap: its columns are zero
                                    m.d.sync += ch.eq(0)
                                    m.next = "ZFILL"
                        with m.Else():
                            m.d.sync += phase.eq(Mux(is_add, 1, 2))
                            start_move(0, oy, ox)
                    with m.Case(1):
                        m.d.sync += phase.eq(2)
                        with m.If(is_conv):
                            # the store span opens first: the MAC state drains into it
                            m.d.sync += [g.eq(0), t.eq(0), og.eq(0), co_base.eq(0), issuing.eq(1),
                                         draining.eq(0), d.eq(0), v1.eq(0), v2.eq(0), dv_r.eq(0), phase.eq(3)]
                            start_move(2, oy, ox)
                        with m.Elif(is_dw):
                            # with the column cache only a row's first pixel visits columns 0 and 1
                            m.d.sync += [phase.eq(4), tap_i.eq(0), tap_j.eq(Mux(reuse & (ox != 0), 2, 0)), nb.eq(0)]
                            with m.If(~is_dwr):
                                start_move(1, oy, ox)
                        with m.Else():
                            start_move(1, oy, ox)
                    with m.Case(4):  # depthwise taps (bilinear: 4 neighbours each)
                        m.d.comb += [b_rd.addr.eq(Mux(is_dwb, tap_t << 1, 0)), b_rd2.addr.eq((tap_t << 1) + 1)]
                        with m.If(tap_i == 3):
                            m.d.sync += phase.eq(2)
                        with m.Else():
                            with m.If(~is_dwb | (nb == 3)):
                                m.d.sync += nb.eq(0)
                                with m.If(tap_j == 2):
                                    m.d.sync += [tap_j.eq(Mux(reuse & (ox != 0), 2, 0)), tap_i.eq(tap_i + 1)]
                                with m.Else():
                                    m.d.sync += tap_j.eq(tap_j + 1)
                            with m.Else():
                                m.d.sync += nb.eq(nb + 1)
                            m.d.sync += [coef_r.eq(coef), tap_r.eq(tap_t), row_r.eq(tap_i), slot_r.eq(slot_of(tap_j)),
                                         prime_r.eq(tap_j != 2)]
                            row_in, col_in = (ty >= 0) & (ty < hi_), (tx >= 0) & (tx < wi)
                            with m.If(reuse):
                                with m.Switch(slot_of(tap_j)):
                                    for slot in range(3):
                                        with m.Case(slot):
                                            m.d.sync += live[slot].eq(col_in)
                                with m.If(row_in & col_in):
                                    start_move(0, ty, tx)
                                with m.Elif(row_in & (tap_j == 2)):
                                    # the new column is padding: the row's cached taps alone
                                    m.d.sync += ch.eq(0)
                                    m.next = "DWZ"
                            with m.Elif(dw_tap_used):
                                start_move(0, ty, tx)
                    with m.Case(2):
                        m.d.sync += phase.eq(3)
                        start_move(2, oy, ox)
                    with m.Case(3):
                        m.d.sync += [phase.eq(0), tap_i.eq(0), tap_j.eq(0), first.eq(1), tap_base.eq(0),
                                     move_base.eq(0), nb.eq(0), slot0.eq(slot_of(1))]
                        with m.If(ox == pw - 1):
                            m.d.sync += ox.eq(0)
                            with m.If(oy == ph - 1):
                                m.next = "BARRIER"
                            with m.Else():
                                m.d.sync += oy.eq(oy + 1)
                        with m.Else():
                            m.d.sync += ox.eq(ox + 1)
            with state("ADDR"):
                up = v.upsample
                m.d.sync += [
                    on_chip.eq(v.onchip),
                    move_addr.eq(Mux(v.onchip, 0, base) + v.offset + v.channel_offset
                                 + (my.as_unsigned() >> up) * v.row_stride + (mx.as_unsigned() >> up) * v.pixel_stride),
                    span.eq((nch - 1) * v.channel_stride + 1),
                    pos.eq(0), cs_phase.eq(0), ch.eq(0), feed.eq(0),
                ]
                with m.If(sel == 2):
                    m.next = "WCMD"
                with m.Else():
                    m.next = "RCMD"
            with state("RCMD"):
                m.d.comb += [reader.cmd_valid.eq(~on_chip), reader.cmd_addr.eq(move_addr), reader.cmd_bytes.eq(span),
                             scratch.rd_valid.eq(on_chip), scratch.rd_addr.eq(move_addr), scratch.rd_bytes.eq(span)]
                with m.If(Mux(on_chip, scratch.rd_ready, reader.cmd_ready)):
                    m.next = "RDATA"
            with state("RDATA"):
                # the span's bytes from DDR (the read DMA) or from the scratchpad: one path
                byte = Signal(8)
                byte_valid = Signal()
                m.d.comb += [byte.eq(Mux(on_chip, scratch.o.payload, reader.o.payload)),
                             byte_valid.eq(Mux(on_chip, scratch.o.valid, reader.o.valid)),
                             reader.o.ready.eq(~on_chip), scratch.o.ready.eq(on_chip)]
                cur = a_read(ch)
                bigger = Mux(v.signed, byte.as_signed() > cur.as_signed(), byte > cur)
                # depthwise: acc[c] += w[c][tap] * coef * x (a column-cache fill only stores x)
                dw_tap = is_dw & (sel == 0)
                fill = reuse & prime_r
                accept = byte_valid & (cs_phase == 0)
                dw_accumulate(element(byte, desc.src.signed), dw_tap & accept & ~fill)
                m.d.comb += [cc_wr.addr.eq(row_r * cfg.max_channels + ch), cc_wr.data.eq(byte.replicate(3)),
                             cc_wr.en.eq(Mux(dw_tap & accept & reuse, Const(1, 3) << slot_r, 0))]
                # a src span into A (PE layers, COPY, ADD's a) from DDR at channel stride 1 goes
                # wide: each cycle the held beat's bytes up to the end of A's word (a rotation
                # into A's lanes)
                wide = (is_conv | is_copy | is_add) & (sel == 0) & ~on_chip & (v.channel_stride == 1)
                a_idx = move_base + ch
                lane0 = a_idx[:lg_ci] if lg_ci else Const(0, 1)
                room = cfg.pe_ci - lane0
                n_wide = Signal(range(max(cfg.pe_ci, cfg.axi_data_bits // 8) + 1))
                m.d.comb += n_wide.eq(Mux(reader.beat_avail < room, reader.beat_avail, room))
                lb = exact_log2(cfg.axi_data_bits // 8)
                with m.If(wide):
                    lanes = range(cfg.pe_ci)
                    m.d.comb += [reader.wide.eq(1), reader.take.eq(n_wide), a_wr.addr.eq(a_idx >> lg_ci),
                                 a_wr.data.eq(Cat(reader.beat_data.word_select((reader.beat_pos + lane - lane0)[:lb], 8)
                                                  for lane in lanes)),
                                 a_wr.en.eq(Cat((lane >= lane0) & (lane < lane0 + n_wide) for lane in lanes))]
                    m.d.sync += [pos.eq(pos + n_wide), ch.eq(ch + n_wide)]
                    with m.If((n_wide != 0) & (pos + n_wide == span)):
                        m.next = "SEQ"
                with m.Else():
                    with m.If(byte_valid):
                        m.d.sync += [pos.eq(pos + 1), cs_phase.eq(cs_next)]
                        with m.If(cs_phase == 0):
                            m.d.sync += ch.eq(ch + 1)
                            with m.If(sel == 1):
                                m.d.comb += [b_wr.addr.eq(ch), b_wr.data.eq(byte), b_wr.en.eq(1)]
                            with m.Elif(~dw_tap):
                                a_write(move_base + ch, byte, ~is_pool | first | bigger)
                        with m.If(last_pos):
                            with m.If((sel == 0) & ~(is_dw & fill)):
                                m.d.sync += first.eq(0)
                            m.next = "SEQ"
            with state("DWZ"):
                # column cache, right border: the new column is padding, so each channel adds
                # the row's two cached taps alone (one channel per cycle, no DMA)
                dw_accumulate(0, 1)
                m.d.sync += ch.eq(ch + 1)
                with m.If(ch == ci - 1):
                    m.d.sync += first.eq(0)
                    m.next = "SEQ"
            with state("WCMD"):
                m.d.comb += [writer.cmd_valid.eq(~on_chip), writer.cmd_addr.eq(move_addr), writer.cmd_bytes.eq(span),
                             scratch.wr_valid.eq(on_chip), scratch.wr_addr.eq(move_addr), scratch.wr_bytes.eq(span)]
                with m.If(Mux(on_chip, scratch.wr_ready, writer.cmd_ready)):
                    m.next = "WDATA"
                    with m.If(is_conv):
                        m.next = "MAC"
            with state("WDATA"):
                # the source of channel bytes: ADD's pipeline, else buffer A in order
                m.d.comb += b_rd.addr.eq(Mux(is_add, feed, ch))
                a_byte = a_read(Mux(is_add, feed, ch))
                m.d.comb += [radd.a.payload[0].eq(a_byte), radd.b.payload[0].eq(b_rd.data),
                             radd.a.valid.eq(is_add & (feed < ci)), radd.b.valid.eq(is_add & (feed < ci))]
                with m.If(radd.a.valid & radd.a.ready):
                    m.d.sync += feed.eq(feed + 1)
                # depthwise: every channel's accumulator through requant, straight into the span
                m.d.comb += [acc_rd.addr.eq(feed), dw_rd.addr.eq(feed),
                             requant.i.payload[0].acc.eq(acc_now),
                             requant.i.payload[0].requant.bias.eq(dw_word.bias),
                             requant.i.payload[0].requant.m.eq(dw_word.m), requant.i.payload[0].requant.s.eq(dw_word.s),
                             requant.i.valid.eq(is_dw & (feed < ci))]
                with m.If(requant.i.valid & requant.i.ready):
                    m.d.sync += feed.eq(feed + 1)
                src_valid = Mux(is_add, radd.o.valid, Mux(is_dw, requant.o.valid, 1))
                src_byte = Mux(is_add, radd.o.payload[0][:8], Mux(is_dw, requant.o.payload[0][:8], a_byte))
                taken = store_item(src_valid, src_byte)
                m.d.comb += [radd.o.ready.eq(is_add & taken), requant.o.ready.eq(~is_dw | taken)]
            with state("ZFILL"):
                a_write(move_base + ch, Const(0, 8))
                m.d.sync += ch.eq(ch + 1)
                with m.If(ch == ci - 1):
                    m.next = "SEQ"
            with state("MAC"):
                # the PE array: pe_co output lanes x pe_ci im2col columns per cycle, one tile
                # per cycle, a 3-stage pipeline: issue (A word g, tile t) -> row . columns per
                # lane -> accumulate. A finished output group is copied to `held` and drains
                # through requant straight into the store span (opened before this state),
                # one channel per cycle as the span takes them, while the next group issues;
                # only a group's last column waits until `held` is free (no finished group
                # in the pipeline, the drain's last channel read or the drain over).
                drain_adv = Signal()            # the drain stage moves (requant takes its vector)
                m.d.comb += drain_adv.eq(~dv_r | requant.i.ready)
                last_drain = draining & ((d == cfg.pe_co - 1) | (co_base + d == co - 1))
                hold_busy = (draining & ~(last_drain & drain_adv)) | (v1 & last1) | (v2 & last2)
                issue = Signal()
                m.d.comb += [issue.eq(issuing & ((g != cig - 1) | ~hold_busy)),
                             a_rd.addr.eq(g), wt_rd.addr.eq(t)]
                m.d.sync += [v1.eq(issue), last1.eq(g == cig - 1), first1.eq(g == 0)]
                for c in range(cfg.pe_ci):
                    byte = a_rd.data.word_select(c, 8)
                    inside = (g << lg_ci) + c < ci_eff      # columns past k*k*C_in are 0
                    m.d.sync += x_r[c].eq(Mux(inside, Mux(desc.src.signed, byte.as_signed(), byte), 0))
                with m.If(issue):
                    m.d.sync += t.eq(t + 1)
                    with m.If(g == cig - 1):
                        m.d.sync += [g.eq(0), og.eq(og + 1)]
                        with m.If(og == cog - 1):
                            m.d.sync += issuing.eq(0)
                    with m.Else():
                        m.d.sync += g.eq(g + 1)
                tile = data.View(data.ArrayLayout(data.ArrayLayout(signed(8), cfg.pe_ci), cfg.pe_co), wt_rd.data)
                for r in range(cfg.pe_co):
                    m.d.sync += dot[r].eq(_tree_sum([x_r[c] * tile[r][c] for c in range(cfg.pe_ci)]))
                m.d.sync += [v2.eq(v1), last2.eq(last1), first2.eq(first1)]
                with m.If(v2):
                    for r in range(cfg.pe_co):
                        total = Signal(signed(cfg.acc_bits), name=f"total{r}")
                        m.d.comb += total.eq(Mux(first2, 0, acc[r]) + dot[r])
                        m.d.sync += acc[r].eq(total)
                        with m.If(last2):
                            m.d.sync += held[r].eq(total)
                    with m.If(last2):
                        m.d.sync += [draining.eq(1), d.eq(0)]
                # drain: channel co_base + d of the finished group (its accumulator and requant
                # word) into the drain stage, then into requant; the stage holds while requant
                # is back-pressured by the store span
                m.d.comb += [rq_rd.addr.eq(co_base + d), rq_rd.en.eq(drain_adv)]
                with m.If(drain_adv):
                    m.d.sync += [dv_r.eq(draining), drain_acc.eq(held[d])]
                    with m.If(last_drain):
                        m.d.sync += [draining.eq(0), co_base.eq(co_base + cfg.pe_co)]
                    with m.Elif(draining):
                        m.d.sync += d.eq(d + 1)
                rq = data.View(rq_layout, rq_rd.data)
                m.d.comb += [requant.i.payload[0].acc.eq(drain_acc), requant.i.payload[0].requant.bias.eq(rq.bias),
                             requant.i.payload[0].requant.m.eq(rq.m), requant.i.payload[0].requant.s.eq(rq.s),
                             requant.i.valid.eq(dv_r)]
                m.d.comb += requant.o.ready.eq(store_item(requant.o.valid, requant.o.payload[0][:8]))
            with state("BARRIER"):
                with m.If(writer.idle):
                    with m.If(idx + 1 == n_desc):
                        fault(ErrorCode.NO_END)
                    with m.Else():
                        m.d.sync += idx.eq(idx + 1)
                        m.next = "FETCH"
            with state("FINISH"):
                with m.If(dma_idle):
                    m.d.sync += done.eq(1)
                    m.next = "IDLE"
            with state("DRAIN"):
                m.d.comb += abort.eq(1)
                with m.If(dma_idle):
                    m.d.sync += done.eq(1)
                    m.next = "IDLE"
            with state("HUNG"):
                # the frame has ended with TIMEOUT; should the bus come back, drain it
                m.d.comb += abort.eq(1)
                with m.If(dma_idle):
                    m.next = "IDLE"
            with state("RESET_DRAIN"):
                m.d.comb += abort.eq(1)
                with m.If(dma_idle):
                    m.next = "IDLE"

        busy_state = ~fsm.ongoing("IDLE") & ~fsm.ongoing("RESET_DRAIN") & ~fsm.ongoing("HUNG")
        exec_state = (fsm.ongoing("SEQ") | fsm.ongoing("ADDR") | fsm.ongoing("RCMD") | fsm.ongoing("RDATA")
                      | fsm.ongoing("WCMD") | fsm.ongoing("WDATA") | fsm.ongoing("ZFILL") | fsm.ongoing("DWZ")
                      | fsm.ongoing("MAC")
                      | fsm.ongoing("LOADW") | fsm.ongoing("LOADW_DATA") | fsm.ongoing("LOADRQ")
                      | fsm.ongoing("LOADRQ_DATA") | fsm.ongoing("LOADDW") | fsm.ongoing("LOADDW_DATA"))
        m.d.comb += [self.busy.eq(busy_state),
                     self.unit_busy.pool.eq(exec_state & is_pool), self.unit_busy.add.eq(exec_state & is_add),
                     self.unit_busy.pw.eq(exec_state & is_conv), self.unit_busy.dw.eq(exec_state & is_dw),
                     self.unit_busy.dma.eq(~dma_idle)]
        return m
