"""Max pool and residual add units (INTEGER_SPEC §4), ``lanes`` channels per vector.

:class:`MaxPool` -- k x k max pool, stride s, padding p, over one block of pixels (a band
of rows of one channel group) held in an on-chip block buffer; padded taps are ignored.
:class:`ResidualAdd` -- ``y = sat(rshift_round(a*Ma + b*Mb, S), lo, hi)`` per lane.

Activations arrive as raw bytes; a per-tensor ``*_signed`` port says whether a byte is
int8 or uint8 (INTEGER_SPEC §2). Outputs are 9-bit signed lanes like the requant unit's
(:data:`convforge.hw.rtl.requant.ACT_OUT_SHAPE`).
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from convforge.hw.config import EngineConfig
from convforge.hw.rtl.requant import ACT_OUT_SHAPE, BOUND_SHAPE

#: Max pool pipeline: cycles from issuing a window's last tap to its output vector.
MAXPOOL_LATENCY = 2
#: Max pool: one tap per cycle, i.e. ``k*k`` cycles per output vector after the block
#: (``height * width`` cycles, one input vector per cycle) is loaded.
MAXPOOL_CYCLES_PER_OUTPUT = "k*k"
#: Residual add pipeline depth (multiply, sum, shift, round+saturate) and throughput.
ADD_LATENCY = 4
ADD_THROUGHPUT = 1


def act_in_layout(lanes: int) -> data.ArrayLayout:
    """Input vector: ``lanes`` raw activation bytes."""
    return data.ArrayLayout(unsigned(8), lanes)


def act_out_layout(lanes: int) -> data.ArrayLayout:
    """Output vector: ``lanes`` x signed 9 bits."""
    return data.ArrayLayout(ACT_OUT_SHAPE, lanes)


def pool_block_pixels(cfg: EngineConfig) -> int:
    """Block buffer capacity in pixels (``height * width`` of one call must fit)."""
    return cfg.pool_block_rows * cfg.line_width


def _extend(m: Module, byte, is_signed, name: str) -> Signal:
    v = Signal(signed(9), name=name)
    m.d.comb += v.eq(Mux(is_signed, byte.as_signed(), byte))
    return v


class MaxPool(wiring.Component):
    """Max pool over a block of ``height x width`` pixel vectors.

    Parameters:
        cfg: ``line_width`` (block capacity :func:`pool_block_pixels`) and ``dw_lanes``.
        lanes: channels per vector (default ``cfg.dw_lanes``).

    Ports:
        x: In(stream of :func:`act_in_layout`) -- the block in raster order.
        o: Out(stream of :func:`act_out_layout`) -- ``out_height x out_width`` vectors in
            raster order.
        height, width: In -- block size in pixels (``height*width`` <= capacity).
        out_height, out_width: In -- output size (the compiler's
            ``floor((H + 2p - k) / s) + 1``, or fewer rows for a band).
        kernel (1..``cfg.pool_k_max``), stride (1..``cfg.pool_s_max``), pad (top/left
            padding, 0..k-1): In.
        act_signed: In(1) -- input bytes are int8 (1) or uint8 (0).

    Output ``(oy, ox)`` is the max over taps ``(oy*s - pad + i, ox*s - pad + j)``,
    ``0 <= i, j < k``, inside the block; taps outside are ignored (bottom/right padding
    follows from ``out_height``/``out_width``). A window with no tap inside yields -256.
    Channel groups beyond ``lanes`` are separate blocks.

    Latency: :data:`MAXPOOL_LATENCY` cycles after a window's last tap.
    Throughput: the block loads at one vector per cycle, then ``k*k`` cycles per output
    vector (no overlap of load and compute; max pool is rare in the network).
    Flow control: back-pressure on ``o`` stalls the tap loop; ``x`` is ready only while
    loading.
    """

    def __init__(self, cfg: EngineConfig, lanes: int | None = None) -> None:
        self.cfg = cfg
        self.lanes = cfg.dw_lanes if lanes is None else lanes
        self.capacity = pool_block_pixels(cfg)
        dim = unsigned(self.capacity.bit_length())
        super().__init__({
            "x": In(stream.Signature(act_in_layout(self.lanes))),
            "o": Out(stream.Signature(act_out_layout(self.lanes))),
            "height": In(dim), "width": In(dim),
            "out_height": In(dim), "out_width": In(dim),
            "kernel": In(range(cfg.pool_k_max + 1)), "stride": In(range(cfg.pool_s_max + 1)),
            "pad": In(range(cfg.pool_k_max)),
            "act_signed": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cap = self.capacity
        m.submodules.block_buffer = mem = memory.Memory(
            shape=act_in_layout(self.lanes), depth=cap, init=[])
        wr = mem.write_port()
        rd = mem.read_port()

        loading = Signal(init=1)
        load_addr = Signal(range(cap + 1))
        load_col = Signal(range(cap + 1))
        load_row = Signal(range(cap + 1))
        m.d.comb += [self.x.ready.eq(loading), wr.en.eq(self.x.valid & loading),
                     wr.addr.eq(load_addr), wr.data.eq(self.x.payload)]
        with m.If(self.x.valid & loading):
            m.d.sync += load_addr.eq(load_addr + 1)
            with m.If(load_col == self.width - 1):
                m.d.sync += [load_col.eq(0), load_row.eq(load_row + 1)]
                with m.If(load_row == self.height - 1):
                    m.d.sync += [loading.eq(0), load_row.eq(0), load_addr.eq(0)]
            with m.Else():
                m.d.sync += load_col.eq(load_col + 1)

        # tap loop: (oy, ox, i, j), j fastest
        advance = ~self.o.valid | self.o.ready
        coord = signed(self.capacity.bit_length() + 2)
        oy, ox = Signal(range(cap + 1)), Signal(range(cap + 1))
        k_max = self.cfg.pool_k_max
        ti, tj = Signal(range(k_max)), Signal(range(k_max))
        wy0, wx0 = Signal(coord), Signal(coord)  # window origin oy*s - pad, ox*s - pad
        y, x = Signal(coord), Signal(coord)
        m.d.comb += [y.eq(wy0 + ti), x.eq(wx0 + tj)]
        inside = (y >= 0) & (y < self.height) & (x >= 0) & (x < self.width)
        issue = Signal()
        m.d.comb += [issue.eq(~loading & advance),
                     rd.addr.eq(y * self.width + x), rd.en.eq(advance)]
        last_j = tj == self.kernel - 1
        last_i = ti == self.kernel - 1
        last_x = ox == self.out_width - 1
        last_y = oy == self.out_height - 1
        with m.If(loading):
            m.d.sync += [wy0.eq(-self.pad), wx0.eq(-self.pad)]
        with m.Elif(issue):
            with m.If(~last_j):
                m.d.sync += tj.eq(tj + 1)
            with m.Else():
                m.d.sync += tj.eq(0)
                with m.If(~last_i):
                    m.d.sync += ti.eq(ti + 1)
                with m.Else():
                    m.d.sync += ti.eq(0)
                    with m.If(~last_x):
                        m.d.sync += [ox.eq(ox + 1), wx0.eq(wx0 + self.stride)]
                    with m.Else():
                        m.d.sync += [ox.eq(0), wx0.eq(-self.pad)]
                        with m.If(~last_y):
                            m.d.sync += [oy.eq(oy + 1), wy0.eq(wy0 + self.stride)]
                        with m.Else():
                            m.d.sync += [oy.eq(0), wy0.eq(-self.pad), loading.eq(1)]

        b_valid, b_inside, b_first, b_last = Signal(), Signal(), Signal(), Signal()
        with m.If(advance):
            m.d.sync += [b_valid.eq(issue), b_inside.eq(inside),
                         b_first.eq((ti == 0) & (tj == 0)), b_last.eq(last_i & last_j)]
        running = [Signal(ACT_OUT_SHAPE, name=f"max{c}") for c in range(self.lanes)]
        with m.If(advance):
            m.d.sync += self.o.valid.eq(b_valid & b_last)
        for c in range(self.lanes):
            tap = _extend(m, rd.data[c], self.act_signed, f"tap{c}")
            base = Mux(b_first, -256, running[c])
            new = Signal(ACT_OUT_SHAPE, name=f"new{c}")
            m.d.comb += new.eq(Mux(b_inside & (tap > base), tap, base))
            with m.If(advance & b_valid):
                m.d.sync += running[c].eq(new)
                with m.If(b_last):
                    m.d.sync += self.o.payload[c].eq(new)
        return m


class ResidualAdd(wiring.Component):
    """Residual add per lane: ``y = sat(rshift_round(a*Ma + b*Mb, S), lo, hi)``.

    Parameters:
        cfg: ``m_bits`` and ``s_bits``; default lanes ``cfg.dw_lanes``.
        lanes: channels per vector.

    Ports:
        a, b: In(stream of :func:`act_in_layout`) -- the two operands, consumed together.
        o: Out(stream of :func:`act_out_layout`).
        a_signed, b_signed: In(1) -- operand bytes are int8 (1) or uint8 (0).
        ma, mb: In(unsigned(m_bits)); s: In(unsigned(s_bits), 0..62); lo, hi: In(signed(9)).

    Latency: :data:`ADD_LATENCY` = 4 cycles. Throughput: one vector pair per cycle.
    Flow control: ``a`` and ``b`` transfer in the same cycle (each ready needs the other
    valid); back-pressure on ``o`` stalls the pipeline.
    """

    def __init__(self, cfg: EngineConfig, lanes: int | None = None) -> None:
        self.cfg = cfg
        self.lanes = cfg.dw_lanes if lanes is None else lanes
        super().__init__({
            "a": In(stream.Signature(act_in_layout(self.lanes))),
            "b": In(stream.Signature(act_in_layout(self.lanes))),
            "o": Out(stream.Signature(act_out_layout(self.lanes))),
            "a_signed": In(1), "b_signed": In(1),
            "ma": In(unsigned(cfg.m_bits)), "mb": In(unsigned(cfg.m_bits)),
            "s": In(unsigned(cfg.s_bits)),
            "lo": In(BOUND_SHAPE), "hi": In(BOUND_SHAPE),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        prod_shape = signed(9 + cfg.m_bits + 1)
        sum_bits = prod_shape.width + 1
        advance = ~self.o.valid | self.o.ready
        fire = self.a.valid & self.b.valid & advance
        m.d.comb += [self.a.ready.eq(advance & self.b.valid),
                     self.b.ready.eq(advance & self.a.valid)]
        valid = [Signal(name=f"valid{k}") for k in range(1, ADD_LATENCY)]
        with m.If(advance):
            m.d.sync += [valid[0].eq(fire), self.o.valid.eq(valid[-1])]
            m.d.sync += [valid[k].eq(valid[k - 1]) for k in range(1, len(valid))]
        # shift: s >= sum_bits rounds to 0 exactly like s == sum_bits (see requant.py)
        s_m1 = Signal(range(sum_bits), name="s_minus_1")
        round_on = Signal()
        m.d.comb += [s_m1.eq(Mux(self.s > sum_bits, sum_bits - 1,
                                 Mux(self.s == 0, 0, self.s - 1))),
                     round_on.eq(self.s != 0)]
        for c in range(self.lanes):
            av = _extend(m, self.a.payload[c], self.a_signed, f"a{c}")
            bv = _extend(m, self.b.payload[c], self.b_signed, f"b{c}")
            pa, pb = Signal(prod_shape, name=f"pa{c}"), Signal(prod_shape, name=f"pb{c}")
            total = Signal(signed(sum_bits), name=f"sum{c}")
            shifted = Signal(signed(sum_bits), name=f"shifted{c}")
            rounded = Signal(signed(sum_bits), name=f"rounded{c}")
            m.d.comb += rounded.eq(Mux(round_on, (shifted + 1) >> 1, shifted))
            with m.If(advance):
                m.d.sync += [pa.eq(av * self.ma), pb.eq(bv * self.mb),
                             total.eq(pa + pb),
                             shifted.eq(total >> s_m1),
                             self.o.payload[c].eq(Mux(rounded < self.lo, self.lo,
                                                      Mux(rounded > self.hi, self.hi, rounded)))]
        return m
