"""Requantisation + activation per output lane (INTEGER_SPEC §3).

    y[c] = sat( rshift_round( (acc[c] + bias[c]) * M[c], S[c] ), lo, hi )

One vector of ``lanes`` channels enters per cycle, each lane carrying its own
accumulator and its channel's ``(bias, M, S)``; ``(lo, hi)`` are per-layer ports (the
activation is folded into them: ReLU -> ``lo = 0``, ReLU6 -> ``hi``, etc.).

Widths: ``acc + bias`` needs ``max(acc_bits, 32) + 1`` bits (``SUM_BITS``), the product
with the 15-bit unsigned ``M`` ``SUM_BITS + 16`` bits (``PROD_BITS``; two DSP48 per lane
for 33 x 15). The round-half-up shift is computed without the wide ``2**(S-1)``
constant: ``rshift_round(v, s) = ((v >> (s-1)) + 1) >> 1`` for ``s > 0`` (exact for
floor division), and shifts ``s >= PROD_BITS`` give the same result as
``s = PROD_BITS`` (always 0), so the barrel shifter is only ``log2(PROD_BITS)`` deep.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from convforge.hw.config import EngineConfig
from convforge.hw.layouts.vectors import ACT_OUT_SHAPE, BOUND_SHAPE, out_vector_layout, requant_params_layout

#: Pipeline depth in cycles from an accepted input vector to its output vector (no stalls).
LATENCY = 4
#: Vectors accepted per cycle when the output is not back-pressured.
THROUGHPUT = 1


def requant_lane_layout(cfg: EngineConfig) -> data.StructLayout:
    """One lane of the input vector: accumulator ``acc`` (signed ``acc_bits``) and its
    channel's ``requant`` parameters (:func:`~convforge.hw.layouts.vectors.requant_params_layout`)."""
    return data.StructLayout({
        "acc": signed(cfg.acc_bits),
        "requant": requant_params_layout(cfg),
    })


def requant_in_layout(cfg: EngineConfig, lanes: int) -> data.ArrayLayout:
    """Input payload: ``lanes`` x :func:`requant_lane_layout`."""
    return data.ArrayLayout(requant_lane_layout(cfg), lanes)


def sum_bits(cfg: EngineConfig) -> int:
    """Width of ``acc + bias``."""
    return max(cfg.acc_bits, cfg.bias_bits) + 1


def prod_bits(cfg: EngineConfig) -> int:
    """Width of ``(acc + bias) * M``."""
    return sum_bits(cfg) + cfg.m_bits + 1


class Requant(wiring.Component):
    """Pipelined requant + activation for ``lanes`` output channels.

    Parameters:
        cfg: ``acc_bits``, ``bias_bits``, ``m_bits``, ``s_bits`` and (default lanes)
            ``pe_co``.
        lanes: channels per vector (default ``cfg.pe_co``).

    Ports:
        i: In(stream of :func:`requant_in_layout`) -- per lane ``acc`` (signed
            acc_bits), ``bias`` (int32), ``m`` (uint15), ``s`` (uint6, 0..62).
        o: Out(stream of ``out_vector_layout(lanes)``) -- per lane the activation,
            signed 9 bits, within ``[lo, hi]``.
        lo, hi: In(signed(9)) -- clamp bounds, held stable while vectors are in flight.

    Latency: :data:`LATENCY` = 4 cycles (sum, multiply, shift, round+saturate registers).
    Throughput: :data:`THROUGHPUT` = 1 vector per cycle. Flow control: the whole pipeline
    stalls while ``o`` is valid and not ready (``i.ready = ~o.valid | o.ready``); order is
    preserved.
    """

    def __init__(self, cfg: EngineConfig, lanes: int | None = None) -> None:
        self.cfg = cfg
        self.lanes = cfg.pe_co if lanes is None else lanes
        super().__init__({
            "i": In(stream.Signature(requant_in_layout(cfg, self.lanes))),
            "o": Out(stream.Signature(out_vector_layout(self.lanes))),
            "lo": In(BOUND_SHAPE),
            "hi": In(BOUND_SHAPE),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        pbits = prod_bits(cfg)
        # s >= pbits gives 0 just like s == pbits (see module docstring).
        s_cap_bits = pbits.bit_length()

        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        valid = [Signal(name=f"valid{k}") for k in range(1, LATENCY)]
        with m.If(advance):
            m.d.sync += valid[0].eq(self.i.valid)
            m.d.sync += [valid[k].eq(valid[k - 1]) for k in range(1, len(valid))]
            m.d.sync += self.o.valid.eq(valid[-1])

        for lane in range(self.lanes):
            x = self.i.payload[lane]
            acc_sum = Signal(signed(sum_bits(cfg)), name=f"sum{lane}")
            mult1 = Signal(unsigned(cfg.m_bits), name=f"m{lane}")
            s1 = Signal(unsigned(cfg.s_bits), name=f"s1_{lane}")
            prod = Signal(signed(pbits), name=f"prod{lane}")
            s2m1 = Signal(unsigned(s_cap_bits), name=f"s2m1_{lane}")
            round2 = Signal(name=f"round2_{lane}")
            shifted = Signal(signed(pbits), name=f"shifted{lane}")
            round_on = Signal(name=f"round{lane}")
            y = Signal(ACT_OUT_SHAPE, name=f"y{lane}")

            rounded = Signal(signed(pbits), name=f"rounded{lane}")
            m.d.comb += rounded.eq(Mux(round_on, (shifted + 1) >> 1, shifted))
            with m.If(advance):
                # stage 1: acc + bias
                m.d.sync += [acc_sum.eq(x.acc + x.requant.bias), mult1.eq(x.requant.m), s1.eq(x.requant.s)]
                # stage 2: * M (registered operands and product: DSP pipeline)
                m.d.sync += [prod.eq(acc_sum * mult1),
                             s2m1.eq(Mux(s1 > pbits, pbits - 1, Mux(s1 == 0, 0, s1 - 1))),
                             round2.eq(s1 != 0)]
                # stage 3: v >> (s-1); the final +1 >> 1 rounds half up
                m.d.sync += [shifted.eq(prod >> s2m1), round_on.eq(round2)]
                # stage 4: round, saturate
                m.d.sync += y.eq(Mux(rounded < self.lo, self.lo,
                                     Mux(rounded > self.hi, self.hi, rounded)))
            m.d.comb += self.o.payload[lane].eq(y)
        return m
