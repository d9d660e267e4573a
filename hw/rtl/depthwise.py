"""3x3 depthwise convolution unit with a circular line buffer (INTEGER_SPEC §4).

Three modes, chosen per layer by the descriptor (only those in ``EngineConfig.dw_modes``
are built):

* ``regular``: 3x3 depthwise, stride 1 or 2, fixed dilation ``d`` in ``[1, D_max]``,
  zero padding ``d``.
* ``square`` (square-deformable): one dilation ``D`` in ``[0, D_max]`` per output pixel
  from the ``dilation`` stream; taps at ``(oy*s + (i-1)*D, ox*s + (j-1)*D)``, zero outside.
* ``bilinear`` (bilinear-deformable, DCNv1, groups = C): 18 int8 offsets per output pixel
  from the ``offsets`` stream (``F = frac_bits`` fractional bits, clamped to
  ``+-R*2**F``); each tap is the integer bilinear blend of four corners (``V`` carries
  ``2F`` fractional bits), stride 1 or 2, padding 1, dilation 1.

Then ``acc + bias -> requant (M, S) -> sat(lo, hi)`` per lane, by
:class:`convforge.hw.rtl.requant.Requant`.

Dataflow (what the unit expects of its neighbours)
--------------------------------------------------
A layer of ``C`` channels is processed in ``ceil(C / dw_lanes)`` **channel-group passes**.
For pass ``g`` (channels ``g*L .. g*L+L-1``, ``L = dw_lanes``):

1. ``params`` delivers ``min(L, C - g*L)`` :func:`channel_params_layout` words, lane 0
   first. Lanes of a tail group without a word get all-zero parameters (their output is
   ``sat(0, lo, hi)``; the host drops them).
2. ``pixels`` delivers the ``H*W`` input pixel-vectors of the group in row-major order
   (NHWC tiled by channel group; the tail group's padding lanes may hold anything).
3. ``dilation`` (square mode) delivers the ``Ho*Wo`` dilation-map values, row-major, and
   ``offsets`` (bilinear mode) the ``Ho*Wo`` offset words -- **again for every pass**
   (the maps are shared by all channels; the DMA re-reads them).
4. ``out`` emits the ``Ho*Wo`` output pixel-vectors of the group, row-major, with
   ``Ho = (H-1)//s + 1``, ``Wo = (W-1)//s + 1``.

One ``desc`` word (:func:`~convforge.hw.layouts.units.dw_descriptor_layout`) starts a layer; the unit accepts the next
descriptor after the last output vector of the last pass left. Streams may stall at
any time (valid gaps on the inputs, back-pressure on ``out``); the result does not change.

Ports
-----
* ``desc``: In(stream of :func:`~convforge.hw.layouts.units.dw_descriptor_layout`) -- per-layer configuration.
* ``params``: In(stream of :func:`channel_params_layout`) -- per channel: 9 weights
  (signed ``w_bits``, tap ``i*3+j``), bias (int32), ``m`` (uint15), ``s`` (uint6).
* ``pixels``: In(stream of ``act_vector_layout(L)``) -- ``L`` raw activation bytes (uint8, or
  int8 two's complement when ``desc.in_signed``).
* ``dilation``: In(stream of ``unsigned(8)``) -- square mode only; values above ``D_max``
  are clamped to ``D_max``.
* ``offsets``: In(stream of :func:`offsets_layout`) -- bilinear mode only; 18 int8,
  element ``2*(i*3+j)`` is ``dy``, ``+1`` is ``dx`` (torchvision order); values beyond
  ``+-R*2**F`` are clamped.
* ``out``: Out(stream of ``out_vector_layout(L)``) -- ``L`` signed 9-bit activations in
  ``[lo, hi]`` (the stored byte is the low 8 bits).
* ``busy``: Out(1) -- a layer is in progress.
* ``done``: Out(1) -- one-cycle pulse when the layer's last output vector was accepted
  (the unit is idle again and takes the next descriptor from that cycle on).

Latency and throughput
----------------------
* :data:`LATENCY` = 8 cycles from issuing an output pixel (its last tap in bilinear mode)
  to its vector on ``out``: line-buffer read, tap select, multiply, adder tree /
  accumulate, then the 4-cycle requant.
* An output pixel is issued once the input rows it can touch are in the line buffer
  (rows up to ``oy*s + d`` regular, ``+ D_max`` square, ``+ R + 2`` bilinear).
* Regular and square: **one output pixel-vector per cycle** in steady state
  (:data:`CYCLES_PER_OUTPUT` ``["regular"] = 1``); at stride 2 the input (4 pixels per
  output) is the limit. Bilinear: one tap (4 corners x L lanes) per cycle, so
  **9 cycles per output vector**.
* Per channel-group pass: ``n_params`` cycles to load parameters, plus a drain of the
  pipeline (at most :data:`LATENCY` + 1 cycles) before the next pass loads its parameters.

Line buffer
-----------
:func:`line_buffer_rows` rows of ``line_width`` pixel-vectors (one ``lib.memory`` per row,
each with one write port and three read ports: the three tap columns of an output pixel
are the same for its three tap rows, so three ports per row serve all nine taps -- and
the two corner columns of a bilinear tap). The ring holds the rows an output pixel can
touch plus two rows being written, so input and output overlap at stride 1 and 2.
"""

from __future__ import annotations

from amaranth import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from convforge.hw.config import EngineConfig
from convforge.hw.layouts.units import CHANNEL_BITS, HEIGHT_BITS, DwMode, dw_descriptor_layout
from convforge.hw.layouts.vectors import act_vector_layout, out_vector_layout, requant_params_layout
from convforge.hw.rtl.requant import Requant

#: Cycles from issuing an output pixel (its last tap in bilinear mode) to its vector on ``out``.
LATENCY = 8
#: Steady-state cycles per output pixel-vector, per mode (stride 1, no stalls).
CYCLES_PER_OUTPUT = {"regular": 1, "square": 1, "bilinear": 9}




def reach(config: EngineConfig) -> tuple[int, int]:
    """Rows above and below the centre row ``oy*s`` that any built mode can touch."""
    up, down = 0, 0
    if "regular" in config.dw_modes or "square" in config.dw_modes:
        up, down = config.d_max, config.d_max
    if "bilinear" in config.dw_modes:
        # rows oy*s - 1 + i + floor(dy): i in 0..2, |dy| <= R; plus the +1 corner row
        up, down = max(up, config.offset_range + 1), max(down, config.offset_range + 2)
    return up, down


def line_buffer_rows(config: EngineConfig) -> int:
    """Rows in the circular line buffer: the reach window plus two rows being written."""
    up, down = reach(config)
    return up + down + 1 + 2


def channel_params_layout(config: EngineConfig) -> data.StructLayout:
    """One channel's parameters: 3x3 ``weights`` (tap ``i*3+j``) and its ``requant``
    parameters (:func:`~convforge.hw.layouts.vectors.requant_params_layout`)."""
    return data.StructLayout({
        "weights": data.ArrayLayout(signed(config.w_bits), 9),
        "requant": requant_params_layout(config),
    })


def offsets_layout(config: EngineConfig) -> data.ArrayLayout:
    """One output pixel's 18 int8 offsets (``2*(i*3+j)``: dy, ``+1``: dx; F frac bits)."""
    return data.ArrayLayout(signed(8), 18)


#: Dilation-map stream payload (one value per output pixel, pixels).
DILATION_SHAPE = unsigned(8)


def _wrap(v, n: int):
    """``v mod n`` for ``v`` in ``(-n, 2n)``."""
    return Mux(v < 0, v + n, Mux(v >= n, v - n, v))


class DepthwiseUnit(wiring.Component):
    """Depthwise 3x3 unit: ``dw_lanes`` channel lanes x 9 MACs, modes from ``dw_modes``.

    See the module docstring for the ports, the stream contract, :data:`LATENCY` and the
    throughput (:data:`CYCLES_PER_OUTPUT`).

    Parameters:
        config: ``dw_lanes``, ``line_width``, ``d_max``, ``frac_bits``, ``offset_range``,
            ``w_bits``, ``acc_bits``, ``dw_modes`` and the requant widths.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.modes = tuple(config.dw_modes)
        members = {
            "desc": In(stream.Signature(dw_descriptor_layout(config))),
            "params": In(stream.Signature(channel_params_layout(config))),
            "pixels": In(stream.Signature(act_vector_layout(config.dw_lanes))),
        }
        if "square" in self.modes:
            members["dilation"] = In(stream.Signature(DILATION_SHAPE))
        if "bilinear" in self.modes:
            members["offsets"] = In(stream.Signature(offsets_layout(config)))
        members["out"] = Out(stream.Signature(out_vector_layout(config.dw_lanes)))
        members["busy"] = Out(1)
        members["done"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):  # noqa: C901 (one datapath, read top to bottom)
        m = Module()
        cfg = self.config
        lanes = cfg.dw_lanes
        abits = cfg.act_bits
        fb = cfg.frac_bits
        one = 1 << fb
        rf = cfg.offset_range << fb
        n_rows = line_buffer_rows(cfg)
        has_sq = "square" in self.modes
        has_bil = "bilinear" in self.modes
        addr_bits = max(1, (cfg.line_width - 1).bit_length())
        row_shape = signed(HEIGHT_BITS + 3)
        col_shape = signed(cfg.line_width.bit_length() + 3)
        slot_shape = unsigned(max(1, (n_rows - 1).bit_length()))

        m.submodules.requant = requant = Requant(cfg, lanes)
        wiring.connect(m, wiring.flipped(self.out), requant.o)

        # -- layer and pass state --------------------------------------------------------
        desc = Signal(dw_descriptor_layout(cfg))
        height, width = desc.height, desc.width
        stride2 = desc.stride == 2
        out_h = Mux(stride2, (height + 1) >> 1, height)
        out_w = Mux(stride2, (width + 1) >> 1, width)
        stride = Mux(stride2, 2, 1)
        mode_sq = Const(0)
        mode_bil = Const(0)
        if has_sq:
            mode_sq = desc.mode == DwMode.SQUARE
        if has_bil:
            mode_bil = desc.mode == DwMode.BILINEAR
        m.d.comb += [requant.lo.eq(desc.lo), requant.hi.eq(desc.hi)]

        # rows above / below the centre row the layer can touch
        up = Signal(range(n_rows + 1))
        down = Signal(range(n_rows + 1))
        m.d.comb += [up.eq(desc.dilation), down.eq(desc.dilation)]
        if has_sq:
            with m.If(mode_sq):
                m.d.comb += [up.eq(cfg.d_max), down.eq(cfg.d_max)]
        if has_bil:
            with m.If(mode_bil):
                m.d.comb += [up.eq(cfg.offset_range + 1), down.eq(cfg.offset_range + 2)]

        ch_left = Signal(CHANNEL_BITS)
        n_load = Signal(range(lanes + 1))
        m.d.comb += n_load.eq(Mux(ch_left > lanes, lanes, ch_left))
        lane_idx = Signal(range(lanes))

        weights = [[Signal(signed(cfg.w_bits), name=f"w{c}_{t}") for t in range(9)] for c in range(lanes)]
        p_rq = [Signal(requant_params_layout(cfg), name=f"requant{c}") for c in range(lanes)]

        # write side: next input pixel (wy, wx) goes to ring slot w_slot
        wy = Signal(HEIGHT_BITS + 1)
        wx = Signal(range(cfg.line_width + 1))
        w_slot = Signal(slot_shape)
        # issue side: output pixel (oy, ox), centre (cy, cx) = (oy*s, ox*s), centre slot
        oy = Signal(HEIGHT_BITS + 1)
        ox = Signal(range(cfg.line_width + 1))
        cy = Signal(row_shape)
        cx = Signal(col_shape)
        c_slot = Signal(slot_shape)
        tap_i = Signal(range(3))
        tap_j = Signal(range(3))
        tap_k = Signal(range(9))
        inflight = Signal(range(LATENCY + 8))

        advance = requant.i.ready
        issue = Signal()
        pixel_done = Signal()  # the issue completes an output pixel
        running = Signal()

        # -- line buffer --------------------------------------------------------------
        write_en = Signal()
        rd = []  # rd[slot][port] -> read data (one pixel-vector, raw bits)
        rd_addr = [Signal(addr_bits, name=f"rd_addr{j}") for j in range(3)]
        for r in range(n_rows):
            mem = Memory(shape=act_vector_layout(lanes), depth=cfg.line_width, init=[])
            m.submodules[f"line{r}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(wx), wp.data.eq(self.pixels.payload),
                         wp.en.eq(write_en & (w_slot == r))]
            ports = []
            for j in range(3):
                rp = mem.read_port()
                m.d.comb += [rp.addr.eq(rd_addr[j]), rp.en.eq(advance)]
                ports.append(rp.data.as_value())
            rd.append(ports)

        # -- control FSM ----------------------------------------------------------------
        rows_ready = Signal()
        m.d.comb += rows_ready.eq((wy == height) | (wy > cy + down))
        write_room = Signal()
        m.d.comb += write_room.eq((wy < height) & (wy < cy - up + n_rows))

        m.d.sync += self.done.eq(0)
        with m.FSM(name="dw_fsm"):
            with m.State("IDLE"):
                m.d.comb += self.desc.ready.eq(1)
                with m.If(self.desc.valid & (self.desc.payload.channels != 0)):
                    m.d.sync += [desc.eq(self.desc.payload), ch_left.eq(self.desc.payload.channels)]
                    m.next = "CLEAR"
            with m.State("CLEAR"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += lane_idx.eq(0)
                for c in range(lanes):
                    m.d.sync += p_rq[c].eq(0)
                    m.d.sync += [w.eq(0) for w in weights[c]]
                m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [self.busy.eq(1), self.params.ready.eq(1)]
                with m.If(self.params.valid):
                    pw = self.params.payload
                    for c in range(lanes):
                        with m.If(lane_idx == c):
                            m.d.sync += p_rq[c].eq(pw.requant)
                            m.d.sync += [weights[c][t].eq(pw.weights[t]) for t in range(9)]
                    m.d.sync += lane_idx.eq(lane_idx + 1)
                    with m.If(lane_idx == n_load - 1):
                        m.d.sync += [wy.eq(0), wx.eq(0), w_slot.eq(0), oy.eq(0), ox.eq(0),
                                     cy.eq(0), cx.eq(0), c_slot.eq(0),
                                     tap_i.eq(0), tap_j.eq(0), tap_k.eq(0)]
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), running.eq(1)]
                with m.If((oy == out_h) & (wy == height)):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                with m.If(inflight == 0):
                    m.d.sync += ch_left.eq(ch_left - n_load)
                    with m.If(ch_left > lanes):
                        m.next = "CLEAR"
                    with m.Else():
                        m.d.sync += self.done.eq(1)
                        m.next = "IDLE"

        # -- write side ------------------------------------------------------------------
        m.d.comb += self.pixels.ready.eq(running & write_room)
        m.d.comb += write_en.eq(self.pixels.valid & self.pixels.ready)
        with m.If(write_en):
            with m.If(wx == width - 1):
                m.d.sync += [wx.eq(0), wy.eq(wy + 1), w_slot.eq(_wrap(w_slot + 1, n_rows))]
            with m.Else():
                m.d.sync += wx.eq(wx + 1)

        # -- issue stage (S0): tap rows, slots, columns -----------------------------------
        side_valid = Signal()
        m.d.comb += side_valid.eq(1)
        if has_sq:
            with m.If(mode_sq):
                m.d.comb += side_valid.eq(self.dilation.valid)
        if has_bil:
            with m.If(mode_bil):
                m.d.comb += side_valid.eq(self.offsets.valid)
        m.d.comb += issue.eq(running & (oy < out_h) & rows_ready & side_valid & advance)

        row_slot = [Signal(slot_shape, name=f"row_slot{i}") for i in range(3)]
        row_ok = [Signal(name=f"row_ok{i}") for i in range(3)]
        col_ok = [Signal(name=f"col_ok{j}") for j in range(3)]
        cw = [Signal(unsigned(2 * fb + 1), name=f"corner_w{n}") for n in range(4)]

        # regular / square: one dilation for the whole pixel
        dil = Signal(range(cfg.d_max + 1))
        m.d.comb += dil.eq(desc.dilation)
        if has_sq:
            with m.If(mode_sq):
                d_in = self.dilation.payload
                m.d.comb += dil.eq(Mux(d_in > cfg.d_max, cfg.d_max, d_in))
        for i in range(3):
            r = Signal(row_shape, name=f"tap_row{i}")
            m.d.comb += [r.eq(cy + (i - 1) * dil), row_ok[i].eq((r >= 0) & (r < height)),
                         row_slot[i].eq(_wrap(c_slot + (i - 1) * dil, n_rows))]
        for j in range(3):
            col = Signal(col_shape, name=f"tap_col{j}")
            m.d.comb += [col.eq(cx + (j - 1) * dil), col_ok[j].eq((col >= 0) & (col < width)),
                         rd_addr[j].eq(col[:addr_bits])]

        if has_bil:
            with m.If(mode_bil):
                dy_raw = Signal(signed(8))
                dx_raw = Signal(signed(8))
                with m.Switch(tap_k):
                    for k in range(9):
                        with m.Case(k):
                            m.d.comb += [dy_raw.eq(self.offsets.payload[2 * k]),
                                         dx_raw.eq(self.offsets.payload[2 * k + 1])]
                dy = Mux(dy_raw > rf, rf, Mux(dy_raw < -rf, -rf, dy_raw))
                dx = Mux(dx_raw > rf, rf, Mux(dx_raw < -rf, -rf, dx_raw))
                py = Signal(signed(row_shape.width + fb + 1))
                px = Signal(signed(col_shape.width + fb + 1))
                m.d.comb += [py.eq(((cy - 1 + tap_i) << fb) + dy), px.eq(((cx - 1 + tap_j) << fb) + dx)]
                y0 = Signal(row_shape)
                x0 = Signal(col_shape)
                fy = Signal(unsigned(fb))
                fx = Signal(unsigned(fb))
                m.d.comb += [y0.eq(py >> fb), x0.eq(px >> fb), fy.eq(py[:fb]), fx.eq(px[:fb])]
                slot_a = Signal(slot_shape)
                m.d.comb += slot_a.eq(_wrap(c_slot + (y0 - cy), n_rows))
                m.d.comb += [
                    row_slot[0].eq(slot_a), row_slot[1].eq(_wrap(slot_a + 1, n_rows)),
                    row_ok[0].eq((y0 >= 0) & (y0 < height)), row_ok[1].eq((y0 + 1 >= 0) & (y0 + 1 < height)),
                    col_ok[0].eq((x0 >= 0) & (x0 < width)), col_ok[1].eq((x0 + 1 >= 0) & (x0 + 1 < width)),
                    rd_addr[0].eq(x0[:addr_bits]), rd_addr[1].eq((x0 + 1)[:addr_bits]),
                    cw[0].eq((one - fy) * (one - fx)), cw[1].eq((one - fy) * fx),
                    cw[2].eq(fy * (one - fx)), cw[3].eq(fy * fx),
                ]

        # counters
        m.d.comb += pixel_done.eq(issue)
        if has_bil:
            with m.If(mode_bil):
                m.d.comb += pixel_done.eq(issue & (tap_k == 8))
                with m.If(issue):
                    with m.If(tap_k == 8):
                        m.d.sync += [tap_i.eq(0), tap_j.eq(0), tap_k.eq(0)]
                    with m.Else():
                        m.d.sync += tap_k.eq(tap_k + 1)
                        with m.If(tap_j == 2):
                            m.d.sync += [tap_j.eq(0), tap_i.eq(tap_i + 1)]
                        with m.Else():
                            m.d.sync += tap_j.eq(tap_j + 1)
            m.d.comb += self.offsets.ready.eq(pixel_done & mode_bil)
        if has_sq:
            m.d.comb += self.dilation.ready.eq(issue & mode_sq)
        with m.If(pixel_done):
            with m.If(ox == out_w - 1):
                m.d.sync += [ox.eq(0), cx.eq(0), oy.eq(oy + 1), cy.eq(cy + stride),
                             c_slot.eq(_wrap(c_slot + stride, n_rows))]
            with m.Else():
                m.d.sync += [ox.eq(ox + 1), cx.eq(cx + stride)]

        out_taken = self.out.valid & self.out.ready
        m.d.sync += inflight.eq(inflight + pixel_done - out_taken)

        # -- S1: line-buffer data arrives; select the 3x3 taps (or 2x2 corners) ----------
        v1 = Signal()
        s1_slot = [Signal(slot_shape, name=f"s1_slot{i}") for i in range(3)]
        s1_ok = [[Signal(name=f"s1_ok{i}{j}") for j in range(3)] for i in range(3)]
        s1_bil, s1_k, s1_first, s1_last = Signal(), Signal(range(9)), Signal(), Signal()
        s1_cw = [Signal(unsigned(2 * fb + 1), name=f"s1_cw{n}") for n in range(4)]
        with m.If(advance):
            m.d.sync += [v1.eq(issue), s1_bil.eq(mode_bil), s1_k.eq(tap_k),
                         s1_first.eq(tap_k == 0), s1_last.eq(pixel_done)]
            m.d.sync += [s1_slot[i].eq(row_slot[i]) for i in range(3)]
            m.d.sync += [s1_ok[i][j].eq(row_ok[i] & col_ok[j]) for i in range(3) for j in range(3)]
            m.d.sync += [s1_cw[n].eq(cw[n]) for n in range(4)]

        x_shape = signed(abits + 1)
        v2 = Signal()
        s2_x = [[[Signal(x_shape, name=f"s2_x{c}_{i}{j}") for j in range(3)] for i in range(3)] for c in range(lanes)]
        s2_bil, s2_k, s2_first, s2_last = Signal(), Signal(range(9)), Signal(), Signal()
        s2_cw = [Signal(unsigned(2 * fb + 1), name=f"s2_cw{n}") for n in range(4)]
        with m.If(advance):
            m.d.sync += [v2.eq(v1), s2_bil.eq(s1_bil), s2_k.eq(s1_k), s2_first.eq(s1_first),
                         s2_last.eq(s1_last)]
            m.d.sync += [s2_cw[n].eq(s1_cw[n]) for n in range(4)]
            for i in range(3):
                for j in range(3):
                    word = Signal(act_vector_layout(lanes), name=f"s1_tap{i}{j}")
                    m.d.comb += word.eq(Mux(s1_ok[i][j], Array(rd[r][j] for r in range(n_rows))[s1_slot[i]], 0))
                    for c in range(lanes):
                        byte = word[c]
                        m.d.sync += s2_x[c][i][j].eq(Mux(desc.in_signed, byte.as_signed(), byte))

        # -- S2: products (regular / square) or bilinear blend V ---------------------------
        v3 = Signal()
        s3_bil, s3_first, s3_last = Signal(), Signal(), Signal()
        prod_shape = signed(x_shape.width + cfg.w_bits)
        v_shape = signed(x_shape.width + 2 * fb + 3)
        s3_prod = [[Signal(prod_shape, name=f"s3_p{c}_{t}") for t in range(9)] for c in range(lanes)]
        s3_v = [Signal(v_shape, name=f"s3_v{c}") for c in range(lanes)]
        s3_w = [Signal(signed(cfg.w_bits), name=f"s3_w{c}") for c in range(lanes)]
        with m.If(advance):
            m.d.sync += [v3.eq(v2), s3_bil.eq(s2_bil), s3_first.eq(s2_first), s3_last.eq(s2_last)]
            for c in range(lanes):
                m.d.sync += [s3_prod[c][i * 3 + j].eq(s2_x[c][i][j] * weights[c][i * 3 + j])
                             for i in range(3) for j in range(3)]
                if has_bil:
                    x = s2_x[c]
                    m.d.sync += s3_v[c].eq(s2_cw[0] * x[0][0] + s2_cw[1] * x[0][1]
                                           + s2_cw[2] * x[1][0] + s2_cw[3] * x[1][1])
                    m.d.sync += s3_w[c].eq(Array(weights[c])[s2_k])

        # -- S3: adder tree (regular / square) or accumulate over 9 taps (bilinear) --------
        v4 = Signal()
        acc = [Signal(signed(cfg.acc_bits), name=f"acc{c}") for c in range(lanes)]
        run_sum = [Signal(signed(cfg.acc_bits), name=f"run_sum{c}") for c in range(lanes)]
        with m.If(advance):
            m.d.sync += v4.eq(v3 & (~s3_bil | s3_last))
            for c in range(lanes):
                tree = s3_prod[c]
                total = ((tree[0] + tree[1]) + (tree[2] + tree[3])) + ((tree[4] + tree[5]) + (tree[6] + tree[7])) \
                    + tree[8]
                if has_bil:
                    term = Signal(signed(v_shape.width + cfg.w_bits), name=f"bil_term{c}")
                    m.d.comb += term.eq(s3_w[c] * s3_v[c])
                    partial = Mux(s3_first, 0, run_sum[c]) + term
                    with m.If(v3 & s3_bil):
                        m.d.sync += run_sum[c].eq(partial)
                    m.d.sync += acc[c].eq(Mux(s3_bil, partial, total))
                else:
                    m.d.sync += acc[c].eq(total)

        m.d.comb += requant.i.valid.eq(v4)
        for c in range(lanes):
            lane = requant.i.payload[c]
            m.d.comb += [lane.acc.eq(acc[c]), lane.requant.eq(p_rq[c])]
        return m
