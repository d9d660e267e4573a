"""The simulation infrastructure itself: payload packing, build cache, stream player,
failure reporting with a waveform."""


import random

import pytest
from amaranth import Module, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from convforge.errors import LayoutError
from convforge.hw.packing import pack, unpack
from convforge.sim.player import Phase, play_streams
from convforge.sim.runner import build_design, parse_results
from convforge.sim.tools import ensure_simulator

LANES = data.ArrayLayout(signed(9), 3)
PAIR = data.StructLayout({"a": signed(5), "b": data.ArrayLayout(4, 2)})


class AddOffset(wiring.Component):
    """One-register stream stage: out[j] = in[j] + k (9-bit wrap)."""

    i: In(stream.Signature(LANES))
    o: Out(stream.Signature(LANES))
    k: In(signed(9))

    def elaborate(self, platform):
        m = Module()
        take = self.o.ready | ~self.o.valid
        m.d.comb += self.i.ready.eq(take)
        with m.If(take):
            m.d.sync += self.o.valid.eq(self.i.valid)
            m.d.sync += [self.o.payload[j].eq(self.i.payload[j] + self.k) for j in range(3)]
        return m


def wrap9(v: int) -> int:
    return (v + 256) % 512 - 256


def test_pack_unpack_roundtrip_uses_layout_offsets():
    rng = random.Random(1)
    for _ in range(200):
        v = [rng.randint(-256, 255) for _ in range(3)]
        assert unpack(LANES, pack(LANES, v)) == v
        s = {"a": rng.randint(-16, 15), "b": [rng.randint(0, 15), rng.randint(0, 15)]}
        assert unpack(PAIR, pack(PAIR, s)) == s
        # pack agrees with Amaranth's own constant encoding
        assert pack(PAIR, s) == PAIR.const(s).as_value().value
    with pytest.raises(LayoutError, match="does not fit"):
        pack(LANES, [256, 0, 0])


def test_parse_results_counts_missing_file_as_failure(tmp_path):
    passed, failed, msgs = parse_results(tmp_path / "nope.xml")
    assert (passed, failed) == (0, 1) and "no readable results" in msgs[0]


@pytest.fixture(scope="module")
def add_offset(tmp_path_factory):
    ensure_simulator("verilator")
    return build_design("infra_add_offset", component_factory=AddOffset)


@pytest.mark.simulator("verilator")
def test_player_random_gaps_and_backpressure_are_bit_exact(add_offset):
    rng = random.Random(7)
    vecs = [[rng.randint(-256, 255) for _ in range(3)] for _ in range(80)]
    phases = [
        Phase(f"k={k}", signals={"k": k}, inputs={"i": [pack(LANES, v) for v in vecs]},
              outputs={"o": len(vecs)},
              expect={"o": [pack(LANES, [wrap9(x + k) for x in v]) for v in vecs]})
        for k in (-256, 1, 255)
    ]
    res = play_streams(add_offset, phases, inputs=["i"], outputs=["o"], seed=5,
                       gap_prob=0.4, stall_prob=0.4)
    assert res.ok, res.tb.summary()
    got = [unpack(LANES, x) for x in res.outputs[1]["o"]]
    assert got == [[wrap9(x + 1) for x in v] for v in vecs]
    # with random stalls the phase needs more than one cycle per vector
    assert all(c > len(vecs) for c in res.cycles)
    # back-to-back: one vector per cycle plus the pipeline fill
    fast = play_streams(add_offset, phases[:1], inputs=["i"], outputs=["o"], seed=5,
                        gap_prob=0.0, stall_prob=0.0)
    assert fast.ok and fast.cycles[0] <= len(vecs) + 2


@pytest.mark.simulator("verilator")
def test_mismatch_fails_and_leaves_waveform(add_offset):
    phase = Phase("wrong", signals={"k": 1}, inputs={"i": [pack(LANES, [1, 2, 3])]},
                  outputs={"o": 1}, expect={"o": [pack(LANES, [1, 2, 3])]})
    res = play_streams(add_offset, [phase], inputs=["i"], outputs=["o"], seed=3)
    assert not res.ok and res.tb.failed == 1
    assert "differs from expected" in res.tb.failures[0]
    assert res.tb.waves is not None and res.tb.waves.stat().st_size > 0
    assert "waveform" in res.tb.summary()


@pytest.mark.simulator("verilator")
def test_build_is_cached(add_offset):
    again = build_design("infra_add_offset", verilog_text=add_offset.verilog_path.read_text())
    assert again.build_dir == add_offset.build_dir


class SubOffset(AddOffset):
    """Same ports as :class:`AddOffset`, different function: out[j] = in[j] - k."""

    def elaborate(self, platform):
        m = Module()
        take = self.o.ready | ~self.o.valid
        m.d.comb += self.i.ready.eq(take)
        with m.If(take):
            m.d.sync += self.o.valid.eq(self.i.valid)
            m.d.sync += [self.o.payload[j].eq(self.i.payload[j] - self.k) for j in range(3)]
        return m


@pytest.mark.simulator("verilator")
def test_two_designs_under_one_name_never_share_a_build(add_offset):
    """Regression: the memo used to key every factory build on the constant "factory"."""
    other = build_design("infra_add_offset", component_factory=SubOffset)
    assert other.build_dir != add_offset.build_dir
    assert other.verilog_path.read_text() != add_offset.verilog_path.read_text()
    # lambdas with the same code but different captured classes are different designs too
    builds = [build_design("infra_lambda", component_factory=lambda c=c: c()) for c in (AddOffset, SubOffset)]
    assert builds[0].build_dir != builds[1].build_dir
    # and the same factory again reuses its build
    assert build_design("infra_add_offset", component_factory=SubOffset).build_dir == other.build_dir
