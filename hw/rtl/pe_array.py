"""Pointwise (1x1) convolution PE array: ``Ci_p x Co_p`` int8 x int(w_bits) MACs + requant.

For every pixel the unit computes, for each output channel ``o``,

    acc[o] = sum_c w[o, c] * x[c]          y[o] = requant(acc[o] + bias[o], M[o], S[o], lo, hi)

(INTEGER_SPEC §3/§4 with k = 1). Channels are processed in groups: ``ci_groups =
ceil(Ci / Ci_p)`` input chunks per pixel and ``co_groups = ceil(Co / Co_p)`` output
vectors per pixel. Channel counts not divisible by the parallelism are zero-padded by
the host: the weight tiles of padded input channels (and padded output lanes) are 0, so
whatever the padded activation lanes hold does not matter, and padded output lanes
carry ``sat(0)`` which the consumer ignores.

Data flow. One pixel (``ci_groups`` chunks of ``Ci_p`` activations) is loaded into one
half of a ping-pong pixel buffer while the other half is computed: for each output group
``co`` and input group ``ci`` (``ci`` fastest) the array multiplies the chunk by the
``Ci_p x Co_p`` weight tile at address ``co * ci_groups + ci``, sums over ``Ci_p`` and
accumulates over ``ci``; after the last ``ci`` the ``Co_p`` accumulators, with their
channels' ``(bias, M, S)``, enter the requant unit (:mod:`convforge.hw.rtl.requant`).
Loading overlaps compute, so the array does ``Ci_p * Co_p`` useful MACs every cycle
whenever the channel counts are multiples of the parallelism and the input keeps up.

Weights and per-channel parameters are loaded per layer through the ``w`` and ``p``
streams (addressed writes; the layer's tiles must fit ``weight_depth``, the compiler
splits larger layers by output channels). Loading must not overlap a pixel in flight.
"""

import math

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from convforge.hw.config import EngineConfig
from convforge.hw.rtl import requant as rq

#: Register stages from a compute issue to the requant input register (buffer read,
#: multiply, two adder-tree stages, accumulate).
ARRAY_STAGES = 5
#: Cycles from the issue of a pixel's last (co, ci) step to its output vector on ``o``.
LATENCY = ARRAY_STAGES + rq.LATENCY
#: Input chunks accepted per cycle; output vectors per cycle are 1 / ci_groups.
THROUGHPUT = 1


def cycles_per_pixel(ci: int, co: int, cfg: EngineConfig) -> int:
    """Steady-state cycles per pixel: ``ceil(ci / Ci_p) * ceil(co / Co_p)``."""
    return math.ceil(ci / cfg.pe_ci) * math.ceil(co / cfg.pe_co)


def mac_utilisation(ci: int, co: int, cfg: EngineConfig) -> float:
    """Useful MACs / available MACs in steady state (only tail padding is lost)."""
    return ci * co / (cfg.pe_ci * cfg.pe_co * cycles_per_pixel(ci, co, cfg))


def act_chunk_layout(cfg: EngineConfig) -> data.ArrayLayout:
    """``x`` payload: ``Ci_p`` raw activation bytes (int8 or uint8 per ``act_signed``)."""
    return data.ArrayLayout(unsigned(cfg.act_bits), cfg.pe_ci)


def weight_tile_layout(cfg: EngineConfig, w_bits: int | None = None) -> data.ArrayLayout:
    """One weight tile: ``Co_p`` rows (output lanes) of ``Ci_p`` signed weights."""
    wb = cfg.w_bits if w_bits is None else w_bits
    return data.ArrayLayout(data.ArrayLayout(signed(wb), cfg.pe_ci), cfg.pe_co)


def param_lane_layout(cfg: EngineConfig) -> data.StructLayout:
    """Per output channel: ``bias`` (int32), ``m`` (uint15), ``s`` (uint6)."""
    return data.StructLayout({"bias": signed(cfg.bias_bits), "m": unsigned(cfg.m_bits),
                              "s": unsigned(cfg.s_bits)})


def ci_groups_max(cfg: EngineConfig) -> int:
    """Input-channel groups of the widest pass (``EngineConfig.max_channels``)."""
    return math.ceil(cfg.max_channels / cfg.pe_ci)


def co_groups_max(cfg: EngineConfig) -> int:
    """Output-channel groups of the widest pass (``EngineConfig.max_channels``)."""
    return math.ceil(cfg.max_channels / cfg.pe_co)


def weight_load_layout(cfg: EngineConfig, weight_depth: int | None = None,
                       w_bits: int | None = None) -> data.StructLayout:
    """``w`` payload: tile address (``co * ci_groups + ci``) and the tile."""
    weight_depth = cfg.weight_depth if weight_depth is None else weight_depth
    return data.StructLayout({"addr": unsigned(max(1, (weight_depth - 1).bit_length())),
                              "tile": weight_tile_layout(cfg, w_bits)})


def param_load_layout(cfg: EngineConfig) -> data.StructLayout:
    """``p`` payload: output group index and ``Co_p`` lanes of :func:`param_lane_layout`."""
    return data.StructLayout({"addr": unsigned(max(1, (co_groups_max(cfg) - 1).bit_length())),
                              "lanes": data.ArrayLayout(param_lane_layout(cfg), cfg.pe_co)})


class PEArray(wiring.Component):
    """Pointwise PE array with ping-pong pixel buffer, weight buffer and requant.

    Parameters:
        cfg: ``pe_ci`` (Ci_p), ``pe_co`` (Co_p), ``w_bits``, ``act_bits``, ``acc_bits``,
            requant widths.
        weight_depth: weight buffer depth in tiles (default ``cfg.weight_depth``).
        w_bits: weight width (default ``cfg.w_bits``; ``cfg.first_w_bits`` for a build
            that runs the 8-bit first layer).
        mac_in_luts: build the ``int8 x int4`` multipliers from LUTs (default): one DSP
            slice per 13-bit product would spend 256 of the ZU3EG's 360 DSPs on a 16x16
            array; DSPs stay free for the wider requant and depthwise arithmetic.

    Ports:
        x: In(stream of :func:`act_chunk_layout`) -- per pixel ``ci_groups`` chunks.
        o: Out(stream of requant out layout, ``Co_p`` lanes of signed 9 bits) -- per
            pixel ``co_groups`` vectors, output group order.
        w: In(stream of :func:`weight_load_layout`) -- weight tile writes (always ready).
        p: In(stream of :func:`param_load_layout`) -- per-group (bias, M, S) writes.
        ci_groups, co_groups: In -- the layer's group counts (1..max), stable per layer.
        act_signed: In(1) -- activations are int8 (1) or uint8 (0).
        lo, hi: In(signed(9)) -- the layer's clamp bounds.

    Latency: :data:`LATENCY` cycles from issuing a pixel's last step to its last vector.
    Throughput: one ``Ci_p x Co_p`` tile of MACs per cycle; a pixel takes
    :func:`cycles_per_pixel` cycles; ``x`` accepts one chunk per cycle while a buffer
    half is free. Flow control: back-pressure on ``o`` stalls the whole array.
    """

    def __init__(self, cfg: EngineConfig, weight_depth: int | None = None,
                 w_bits: int | None = None, mac_in_luts: bool = True) -> None:
        self.cfg = cfg
        self.mac_in_luts = mac_in_luts
        self.weight_depth = cfg.weight_depth if weight_depth is None else weight_depth
        self.w_bits = cfg.w_bits if w_bits is None else w_bits
        super().__init__({
            "x": In(stream.Signature(act_chunk_layout(cfg))),
            "o": Out(stream.Signature(rq.requant_out_layout(cfg.pe_co))),
            "w": In(stream.Signature(weight_load_layout(cfg, weight_depth, self.w_bits))),
            "p": In(stream.Signature(param_load_layout(cfg))),
            "ci_groups": In(unsigned(ci_groups_max(cfg).bit_length())),
            "co_groups": In(unsigned(co_groups_max(cfg).bit_length())),
            "act_signed": In(1),
            "lo": In(rq.BOUND_SHAPE),
            "hi": In(rq.BOUND_SHAPE),
        })

    def _product(self, act, weight):
        """``act * weight``. With ``mac_in_luts`` as a sum of shifted partial products
        (two's complement: the weight's top bit has negative weight), which synthesis
        maps to LUTs and carry chains instead of one DSP slice per MAC."""
        if not self.mac_in_luts:
            return act * weight
        wb = self.w_bits
        terms = [Mux(weight[k], act << k, 0) for k in range(wb - 1)]
        return sum(terms) - Mux(weight[wb - 1], act << (wb - 1), 0)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        ci_p, co_p = cfg.pe_ci, cfg.pe_co
        g_max = ci_groups_max(cfg)

        m.submodules.requant = requant = rq.Requant(cfg, lanes=co_p)
        m.d.comb += [requant.lo.eq(self.lo), requant.hi.eq(self.hi)]
        wiring.connect(m, requant.o, wiring.flipped(self.o))

        # -- buffers -----------------------------------------------------------------
        m.submodules.pixel_buffer = pix_mem = memory.Memory(
            shape=act_chunk_layout(cfg), depth=2 * g_max, init=[])
        m.submodules.weight_buffer = w_mem = memory.Memory(
            shape=weight_tile_layout(cfg, self.w_bits), depth=self.weight_depth, init=[])
        m.submodules.param_buffer = p_mem = memory.Memory(
            shape=data.ArrayLayout(param_lane_layout(cfg), co_p), depth=co_groups_max(cfg),
            init=[])

        w_wr = w_mem.write_port()
        m.d.comb += [self.w.ready.eq(1), w_wr.en.eq(self.w.valid),
                     w_wr.addr.eq(self.w.payload.addr), w_wr.data.eq(self.w.payload.tile)]
        p_wr = p_mem.write_port()
        m.d.comb += [self.p.ready.eq(1), p_wr.en.eq(self.p.valid),
                     p_wr.addr.eq(self.p.payload.addr), p_wr.data.eq(self.p.payload.lanes)]

        # -- loader: fill one half of the pixel buffer per pixel -------------------------
        full = Signal(2)
        fill_bank = Signal()
        fill_idx = Signal(range(g_max))
        pix_wr = pix_mem.write_port()
        can_fill = ~full.bit_select(fill_bank, 1)
        m.d.comb += [self.x.ready.eq(can_fill),
                     pix_wr.addr.eq(fill_bank * g_max + fill_idx),
                     pix_wr.data.eq(self.x.payload),
                     pix_wr.en.eq(self.x.valid & can_fill)]
        set_full = Signal(2)
        clear_full = Signal(2)
        with m.If(self.x.valid & can_fill):
            with m.If(fill_idx == self.ci_groups - 1):
                m.d.sync += [fill_idx.eq(0), fill_bank.eq(~fill_bank)]
                m.d.comb += set_full.eq(Mux(fill_bank, 0b10, 0b01))
            with m.Else():
                m.d.sync += fill_idx.eq(fill_idx + 1)
        m.d.sync += full.eq((full | set_full) & ~clear_full)

        # -- compute issue: one (co, ci) step per cycle ----------------------------------
        rq_valid = Signal()
        advance = ~rq_valid | requant.i.ready
        comp_bank = Signal()
        ci_idx = Signal(range(g_max))
        co_idx = Signal(range(co_groups_max(cfg)))
        w_addr = Signal(range(self.weight_depth))
        issue = Signal()
        m.d.comb += issue.eq(advance & full.bit_select(comp_bank, 1))
        last_ci = ci_idx == self.ci_groups - 1
        last_co = co_idx == self.co_groups - 1
        with m.If(issue):
            with m.If(last_ci):
                m.d.sync += ci_idx.eq(0)
                with m.If(last_co):
                    m.d.sync += [co_idx.eq(0), w_addr.eq(0), comp_bank.eq(~comp_bank)]
                    m.d.comb += clear_full.eq(Mux(comp_bank, 0b10, 0b01))
                with m.Else():
                    m.d.sync += [co_idx.eq(co_idx + 1), w_addr.eq(w_addr + 1)]
            with m.Else():
                m.d.sync += [ci_idx.eq(ci_idx + 1), w_addr.eq(w_addr + 1)]

        pix_rd = pix_mem.read_port()
        w_rd = w_mem.read_port()
        m.d.comb += [pix_rd.addr.eq(comp_bank * g_max + ci_idx), pix_rd.en.eq(advance),
                     w_rd.addr.eq(w_addr), w_rd.en.eq(advance)]

        # control pipeline: valid / first / last / co travel with the data
        def ctl(name, value, shape=1):
            sig = Signal(shape, name=name)
            with m.If(advance):
                m.d.sync += sig.eq(value)
            return sig

        v1, f1, l1 = ctl("v1", issue), ctl("f1", ci_idx == 0), ctl("l1", last_ci)
        c1 = ctl("c1", co_idx, co_idx.shape())
        v2, f2, l2, c2 = ctl("v2", v1), ctl("f2", f1), ctl("l2", l1), ctl("c2", c1, c1.shape())
        v3, f3, l3, c3 = ctl("v3", v2), ctl("f3", f2), ctl("l3", l2), ctl("c3", c2, c2.shape())
        v4, f4, l4, c4 = ctl("v4", v3), ctl("f4", f3), ctl("l4", l3), ctl("c4", c3, c3.shape())

        # stage 2: products (activation as 9-bit signed: int8 sign-, uint8 zero-extended)
        act_signed = self.act_signed
        prod_shape = signed(cfg.act_bits + 1 + self.w_bits)
        acts = []
        for c in range(ci_p):
            a = Signal(signed(cfg.act_bits + 1), name=f"act{c}")
            byte = pix_rd.data[c]
            m.d.comb += a.eq(Mux(act_signed, byte.as_signed(), byte))
            acts.append(a)
        tree_groups = [list(range(i, min(i + 4, ci_p))) for i in range(0, ci_p, 4)]
        part_shape = signed(prod_shape.width + 2)
        sum_shape = signed(prod_shape.width + max(1, math.ceil(math.log2(ci_p))) + 1)
        acc_shape = signed(cfg.acc_bits)
        p_rd = p_mem.read_port()
        m.d.comb += [p_rd.addr.eq(c4), p_rd.en.eq(advance)]
        for o in range(co_p):
            prods = []
            for c in range(ci_p):
                p = Signal(prod_shape, name=f"prod{o}_{c}")
                with m.If(advance):
                    m.d.sync += p.eq(self._product(acts[c], w_rd.data[o][c]))
                prods.append(p)
            # stage 3: partial sums of 4; stage 4: full sum over Ci_p
            parts = []
            for k, grp in enumerate(tree_groups):
                s = Signal(part_shape, name=f"part{o}_{k}")
                with m.If(advance):
                    m.d.sync += s.eq(sum(prods[c] for c in grp))
                parts.append(s)
            total = Signal(sum_shape, name=f"sum{o}")
            with m.If(advance):
                m.d.sync += total.eq(sum(parts))
            # stage 5: accumulate over ci; the requant input register takes the final value
            acc = Signal(acc_shape, name=f"acc{o}")
            acc_next = Signal(acc_shape, name=f"acc_next{o}")
            m.d.comb += acc_next.eq(Mux(f4, total, acc + total))
            with m.If(advance & v4):
                m.d.sync += acc.eq(acc_next)
            lane = requant.i.payload[o]
            acc_out = Signal(acc_shape, name=f"acc_out{o}")
            with m.If(advance & v4 & l4):
                m.d.sync += acc_out.eq(acc_next)
            m.d.comb += [lane.acc.eq(acc_out),
                         lane.bias.eq(p_rd.data[o].bias), lane.m.eq(p_rd.data[o].m),
                         lane.s.eq(p_rd.data[o].s)]
        with m.If(advance):
            m.d.sync += rq_valid.eq(v4 & l4)
        m.d.comb += requant.i.valid.eq(rq_valid)
        return m
