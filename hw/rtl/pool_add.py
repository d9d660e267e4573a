"""Max pool and residual add units (INTEGER_SPEC §4), ``lanes`` channels per vector.

:class:`MaxPool` -- k x k max pool, stride s, padding p, over one block of pixels (a band
of rows of one channel group) held in an on-chip block buffer; padded taps are ignored.
:class:`ResidualAdd` -- ``y = sat(rshift_round(a*Ma + b*Mb, S), lo, hi)`` per lane.

Activations arrive as raw bytes; a per-tensor ``*_signed`` port says whether a byte is
int8 or uint8 (INTEGER_SPEC §2). Outputs are 9-bit signed lanes like the requant unit's
(:data:`convforge.hw.layouts.vectors.ACT_OUT_SHAPE`).
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from convforge.hw.config import EngineConfig
from convforge.hw.layouts.units import add_descriptor_layout, pool_descriptor_layout
from convforge.hw.layouts.vectors import ACT_OUT_SHAPE, act_vector_layout, out_vector_layout

#: Max pool pipeline: cycles from issuing a window's last tap to its output vector.
MAXPOOL_LATENCY = 2
#: Max pool: one tap per cycle, i.e. ``k*k`` cycles per output vector after the block
#: (``height * width`` cycles, one input vector per cycle) is loaded.
MAXPOOL_CYCLES_PER_OUTPUT = "k*k"
#: Residual add pipeline depth (multiply, sum, shift, round+saturate) and throughput.
ADD_LATENCY = 4
ADD_THROUGHPUT = 1


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
        x: In(stream of ``act_vector_layout(lanes)``) -- the block in raster order.
        o: Out(stream of ``out_vector_layout(lanes)``) -- ``out_height x out_width`` vectors in
            raster order.
        desc: In(stream of :func:`~convforge.hw.layouts.units.pool_descriptor_layout`) --
            one per block, accepted while idle and latched: ``height``, ``width`` (block
            size, ``height*width`` <= capacity), ``out_height``, ``out_width`` (the
            compiler's ``floor((H + 2p - k) / s) + 1``, or fewer rows for a band),
            ``kernel`` (1..``cfg.pool_k_max``), ``stride`` (1..``cfg.pool_s_max``), ``pad`` (0..k-1),
            ``act_signed`` (input bytes int8 when 1, uint8 when 0).
        busy: Out(1) -- a block is in progress. done: Out(1) -- one-cycle pulse after its
            last output vector was accepted.

    Output ``(oy, ox)`` is the max over taps ``(oy*s - pad + i, ox*s - pad + j)``,
    ``0 <= i, j < k``, inside the block; taps outside are ignored (bottom/right padding
    follows from ``out_height``/``out_width``). A window with no tap inside yields -256.
    Channel groups beyond ``lanes`` are separate blocks.

    Latency: :data:`MAXPOOL_LATENCY` cycles after a window's last tap.
    Throughput: the block loads at one vector per cycle, then ``k*k`` cycles per output
    vector (no overlap of load and compute; max pool is rare in the network).
    Flow control: back-pressure on ``o`` stalls the tap loop; ``x`` is ready only while
    loading; the next descriptor is accepted from the cycle of ``done`` on.
    """

    def __init__(self, cfg: EngineConfig, lanes: int | None = None) -> None:
        self.cfg = cfg
        self.lanes = cfg.dw_lanes if lanes is None else lanes
        self.capacity = pool_block_pixels(cfg)
        super().__init__({
            "desc": In(stream.Signature(pool_descriptor_layout())),
            "x": In(stream.Signature(act_vector_layout(self.lanes))),
            "o": Out(stream.Signature(out_vector_layout(self.lanes))),
            "busy": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cap = self.capacity
        m.submodules.block_buffer = mem = memory.Memory(
            shape=act_vector_layout(self.lanes), depth=cap, init=[])
        wr = mem.write_port()
        rd = mem.read_port()

        desc = Signal(pool_descriptor_layout())
        loading, computing, draining = Signal(), Signal(), Signal()
        m.d.sync += self.done.eq(0)
        m.d.comb += [self.desc.ready.eq(~self.busy), self.busy.eq(loading | computing | draining)]
        with m.If(self.desc.valid & self.desc.ready):
            m.d.sync += [desc.eq(self.desc.payload), loading.eq(1)]
        load_addr = Signal(range(cap + 1))
        load_col = Signal(range(cap + 1))
        load_row = Signal(range(cap + 1))
        m.d.comb += [self.x.ready.eq(loading), wr.en.eq(self.x.valid & loading),
                     wr.addr.eq(load_addr), wr.data.eq(self.x.payload)]
        with m.If(self.x.valid & loading):
            m.d.sync += load_addr.eq(load_addr + 1)
            with m.If(load_col == desc.width - 1):
                m.d.sync += [load_col.eq(0), load_row.eq(load_row + 1)]
                with m.If(load_row == desc.height - 1):
                    m.d.sync += [loading.eq(0), computing.eq(1), load_row.eq(0), load_addr.eq(0)]
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
        inside = (y >= 0) & (y < desc.height) & (x >= 0) & (x < desc.width)
        issue = Signal()
        m.d.comb += [issue.eq(computing & advance),
                     rd.addr.eq(y * desc.width + x), rd.en.eq(advance)]
        last_j = tj == desc.kernel - 1
        last_i = ti == desc.kernel - 1
        last_x = ox == desc.out_width - 1
        last_y = oy == desc.out_height - 1
        with m.If(loading):
            m.d.sync += [wy0.eq(-desc.pad), wx0.eq(-desc.pad)]
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
                        m.d.sync += [ox.eq(ox + 1), wx0.eq(wx0 + desc.stride)]
                    with m.Else():
                        m.d.sync += [ox.eq(0), wx0.eq(-desc.pad)]
                        with m.If(~last_y):
                            m.d.sync += [oy.eq(oy + 1), wy0.eq(wy0 + desc.stride)]
                        with m.Else():
                            m.d.sync += [oy.eq(0), wy0.eq(-desc.pad), computing.eq(0), draining.eq(1)]

        b_valid, b_inside, b_first, b_last = Signal(), Signal(), Signal(), Signal()
        with m.If(advance):
            m.d.sync += [b_valid.eq(issue), b_inside.eq(inside),
                         b_first.eq((ti == 0) & (tj == 0)), b_last.eq(last_i & last_j)]
        running = [Signal(ACT_OUT_SHAPE, name=f"max{c}") for c in range(self.lanes)]
        with m.If(advance):
            m.d.sync += self.o.valid.eq(b_valid & b_last)
        # the last window issued: done once its vector left (nothing in the tap pipeline)
        with m.If(draining & ~b_valid & ~self.o.valid):
            m.d.sync += [draining.eq(0), self.done.eq(1)]
        for c in range(self.lanes):
            tap = _extend(m, rd.data[c], desc.act_signed, f"tap{c}")
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
        desc: In(stream of :func:`~convforge.hw.layouts.units.add_descriptor_layout`) --
            one per layer: ``count`` vector pairs, operand signedness, ``ma``, ``mb``,
            ``s`` (0..62), ``lo``, ``hi``. Accepted only while idle and latched for the layer.
        a, b: In(stream of ``act_vector_layout(lanes)``) -- the two operands, consumed together.
        o: Out(stream of ``out_vector_layout(lanes)``).
        busy: Out(1) -- a layer is in progress (descriptor latched, outputs outstanding).
        done: Out(1) -- one-cycle pulse after the layer's last output vector was accepted.

    Latency: :data:`ADD_LATENCY` = 4 cycles. Throughput: one vector pair per cycle within a
    layer; the next descriptor is accepted from the cycle of ``done`` on (the pipeline drains
    between layers: ``count + ADD_LATENCY + 2`` cycles per layer without stalls).
    Flow control: ``a`` and ``b`` transfer in the same cycle (each ready needs the other
    valid); back-pressure on ``o`` stalls the pipeline. Every stage reads the latched
    descriptor, so a layer's parameters cannot change under vectors in flight.
    """

    def __init__(self, cfg: EngineConfig, lanes: int | None = None) -> None:
        self.cfg = cfg
        self.lanes = cfg.dw_lanes if lanes is None else lanes
        super().__init__({
            "desc": In(stream.Signature(add_descriptor_layout(cfg))),
            "a": In(stream.Signature(act_vector_layout(self.lanes))),
            "b": In(stream.Signature(act_vector_layout(self.lanes))),
            "o": Out(stream.Signature(out_vector_layout(self.lanes))),
            "busy": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        desc = Signal(add_descriptor_layout(cfg))
        in_left = Signal(32)
        out_left = Signal(32)
        busy = self.busy
        m.d.sync += self.done.eq(0)
        m.d.comb += self.desc.ready.eq(~busy)
        with m.If(self.desc.valid & self.desc.ready):
            m.d.sync += [desc.eq(self.desc.payload), in_left.eq(self.desc.payload.count),
                         out_left.eq(self.desc.payload.count), busy.eq(1)]

        prod_shape = signed(9 + cfg.m_bits + 1)
        sum_bits = prod_shape.width + 1
        advance = ~self.o.valid | self.o.ready
        taking = busy & (in_left != 0)
        fire = taking & self.a.valid & self.b.valid & advance
        m.d.comb += [self.a.ready.eq(taking & advance & self.b.valid),
                     self.b.ready.eq(taking & advance & self.a.valid)]
        with m.If(fire):
            m.d.sync += in_left.eq(in_left - 1)
        with m.If(busy & (out_left == 0)):
            m.d.sync += [busy.eq(0), self.done.eq(1)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += out_left.eq(out_left - 1)
        valid = [Signal(name=f"valid{k}") for k in range(1, ADD_LATENCY)]
        with m.If(advance):
            m.d.sync += [valid[0].eq(fire), self.o.valid.eq(valid[-1])]
            m.d.sync += [valid[k].eq(valid[k - 1]) for k in range(1, len(valid))]
        # shift: s >= sum_bits rounds to 0 exactly like s == sum_bits (see requant.py)
        s_m1 = Signal(range(sum_bits), name="s_minus_1")
        round_on = Signal()
        m.d.comb += [s_m1.eq(Mux(desc.s > sum_bits, sum_bits - 1, Mux(desc.s == 0, 0, desc.s - 1))),
                     round_on.eq(desc.s != 0)]
        for c in range(self.lanes):
            av = _extend(m, self.a.payload[c], desc.a_signed, f"a{c}")
            bv = _extend(m, self.b.payload[c], desc.b_signed, f"b{c}")
            pa, pb = Signal(prod_shape, name=f"pa{c}"), Signal(prod_shape, name=f"pb{c}")
            total = Signal(signed(sum_bits), name=f"sum{c}")
            shifted = Signal(signed(sum_bits), name=f"shifted{c}")
            rounded = Signal(signed(sum_bits), name=f"rounded{c}")
            m.d.comb += rounded.eq(Mux(round_on, (shifted + 1) >> 1, shifted))
            with m.If(advance):
                m.d.sync += [pa.eq(av * desc.ma), pb.eq(bv * desc.mb),
                             total.eq(pa + pb),
                             shifted.eq(total >> s_m1),
                             self.o.payload[c].eq(Mux(rounded < desc.lo, desc.lo,
                                                      Mux(rounded > desc.hi, desc.hi, rounded)))]
        return m
