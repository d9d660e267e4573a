"""The unit contract (issue 8): one latched descriptor per layer, busy/done, shared vector
layouts. Checked in Amaranth's own simulator on small instances (bit-exactness of the
results is the cocotb regressions' job, tests/sim)."""

import pytest
from amaranth.sim import Simulator

from convforge.hw.config import EngineConfig
from convforge.hw.layouts.units import (
    add_descriptor_layout,
    dw_descriptor_layout,
    pe_descriptor_layout,
    pool_descriptor_layout,
)
from convforge.hw.layouts.vectors import act_vector_layout, out_vector_layout, requant_params_layout
from convforge.hw.packing import pack, unpack
from convforge.hw.rtl.depthwise import DepthwiseUnit, channel_params_layout
from convforge.hw.rtl.pe_array import PEArray
from convforge.hw.rtl.pool_add import MaxPool, ResidualAdd
from convforge.hw.rtl.requant import requant_lane_layout

CFG = EngineConfig(pe_ci=2, pe_co=2, dw_lanes=2, line_width=16)


def _inspected(*units):
    """Units built only to look at their signatures (silences UnusedElaboratable)."""
    for u in units:
        u._MustUse__silence = True
    return units


def simulate_layer(dut, desc: int, inputs: dict[str, list[int]], n_out: int, second_desc: int | None = None,
              max_cycles: int = 2000) -> dict:
    """Feed ``desc`` then every input stream (always valid), sink ``o`` (always ready);
    record outputs, busy per cycle and done pulses until ``max_cycles``."""
    rec = {"out": [], "done": 0, "busy": [], "done_cycle": None, "last_out_cycle": None,
           "extra_accepted": 0, "second_accepted": False}

    async def bench(ctx):
        out = getattr(dut, "o", None) or dut.out
        ctx.set(out.ready, 1)
        assert ctx.get(dut.busy) == 0 and ctx.get(dut.desc.ready) == 1
        ctx.set(dut.desc.payload.as_value(), desc)
        ctx.set(dut.desc.valid, 1)
        await ctx.tick()
        ctx.set(dut.desc.valid, 0)
        queues = {name: list(vals) for name, vals in inputs.items()}
        if second_desc is not None:
            ctx.set(dut.desc.payload.as_value(), second_desc)
            ctx.set(dut.desc.valid, 1)
        for cycle in range(max_cycles):
            for name, q in queues.items():
                port = getattr(dut, name)
                ctx.set(port.valid, 1 if q else 0)
                if q:
                    ctx.set(port.payload.as_value(), q[0])
            accepted = {name: bool(q) and ctx.get(getattr(dut, name).ready) for name, q in queues.items()}
            if second_desc is not None and ctx.get(dut.desc.ready) and ctx.get(dut.desc.valid):
                rec["second_accepted"] = cycle
            if ctx.get(out.valid):
                rec["out"].append(ctx.get(out.payload.as_value()))
                rec["last_out_cycle"] = cycle
            rec["busy"].append(ctx.get(dut.busy))
            if ctx.get(dut.done):
                rec["done"] += 1
                rec["done_cycle"] = cycle
            await ctx.tick()
            for name, ok in accepted.items():
                if ok:
                    queues[name].pop(0)
            if rec["second_accepted"] is not False:
                break
        rec["left"] = {name: len(q) for name, q in queues.items()}

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(rec["out"]) == n_out, f"{len(rec['out'])} outputs, expected {n_out}"
    return rec


def _check_contract(rec: dict) -> None:
    assert rec["done"] == 1, "done must pulse exactly once per layer"
    assert rec["done_cycle"] > rec["last_out_cycle"], "done before the last output left"
    assert rec["busy"][0] == 1 and rec["busy"][rec["done_cycle"]] == 0
    assert all(rec["busy"][: rec["last_out_cycle"] + 1])


def test_residual_add_latches_its_descriptor_and_pulses_done_after_the_last_vector():
    lay = add_descriptor_layout(CFG)
    desc = pack(lay, {"count": 3, "a_signed": 1, "b_signed": 0, "ma": 1 << 14, "mb": 1 << 14,
                      "s": 14, "lo": -128, "hi": 127})
    vec = pack(act_vector_layout(CFG.dw_lanes), [5, 250])
    other = pack(lay, {"count": 1, "a_signed": 0, "b_signed": 0, "ma": 0, "mb": 0, "s": 0, "lo": 0, "hi": 0})
    rec = simulate_layer(ResidualAdd(CFG), desc, {"a": [vec] * 5, "b": [vec] * 5}, 3, second_desc=other)
    _check_contract(rec)
    assert rec["left"] == {"a": 2, "b": 2}, "the unit took more vector pairs than the descriptor's count"
    # a*Ma + b*Mb with Ma = Mb = 2**14, S = 14: a + b (a int8, b uint8): 5+5, -6+250 -> clamp 127
    assert [unpack(out_vector_layout(CFG.dw_lanes), v) for v in rec["out"]] == [[10, 127]] * 3
    # the second descriptor waited until done (the first layer's s/M were never replaced)
    assert rec["second_accepted"] == rec["done_cycle"]


def test_max_pool_takes_one_descriptor_per_block_and_reports_done():
    desc = pack(pool_descriptor_layout(), {"height": 2, "width": 2, "out_height": 1, "out_width": 1,
                                           "kernel": 2, "stride": 2, "pad": 0, "act_signed": 1})
    px = [pack(act_vector_layout(CFG.dw_lanes), [v, 255 - v]) for v in (1, 7, 3, 2)]
    rec = simulate_layer(MaxPool(CFG), desc, {"x": px}, 1, second_desc=desc)
    _check_contract(rec)
    assert unpack(out_vector_layout(CFG.dw_lanes), rec["out"][0]) == [7, -2]  # lane 1 as int8: -2, -8, -4, -3
    assert rec["second_accepted"] == rec["done_cycle"]


def test_pe_array_runs_the_descriptors_pixel_count_then_reports_done():
    pe = PEArray(CFG, weight_depth=16)
    desc = pack(pe_descriptor_layout(), {"pixels": 3, "ci_groups": 1, "co_groups": 2, "act_signed": 0,
                                         "lo": -128, "hi": 127})
    chunk = pack(act_vector_layout(CFG.pe_ci), [1, 2])
    rec = simulate_layer(pe, desc, {"x": [chunk] * 5}, 6)
    _check_contract(rec)
    assert rec["left"] == {"x": 2}


def test_depthwise_unit_reports_done_after_the_last_pass_and_matches_the_golden_model():
    import numpy as np

    from convforge.hw.rtl.depthwise_model import (
        DepthwiseLayer,
        golden_depthwise,
        pack_depthwise_streams,
        unpack_depthwise_output,
    )

    cfg = EngineConfig(pe_ci=2, pe_co=2, dw_lanes=2, line_width=16, dw_modes=("regular",))
    rng = np.random.default_rng(3)
    c, h, w = 3, 3, 4  # two channel-group passes
    layer = DepthwiseLayer("regular", 1, 1, True, rng.integers(-8, 8, (c, 3, 3)),
                           rng.integers(-500, 500, c), np.full(c, 1 << 14), np.full(c, 16), -128, 127)
    x = rng.integers(-128, 128, (c, h, w))
    streams = pack_depthwise_streams(cfg, layer, x)
    rec = simulate_layer(DepthwiseUnit(cfg), streams["desc"][0],
                    {"params": streams["params"], "pixels": streams["pixels"]}, 2 * h * w)
    _check_contract(rec)
    got = unpack_depthwise_output(cfg, rec["out"], c, h, w)
    assert np.array_equal(got, golden_depthwise(cfg, layer, x))


def test_vector_and_parameter_layouts_are_shared_by_every_unit():
    """One definition: the units' stream payloads are the shared layouts themselves."""
    lanes = CFG.dw_lanes
    (dw,) = _inspected(DepthwiseUnit(CFG))
    assert dw.pixels.payload.shape() == act_vector_layout(lanes)
    assert dw.out.payload.shape() == out_vector_layout(lanes)
    assert dw.desc.payload.shape() == dw_descriptor_layout(CFG)
    assert channel_params_layout(CFG)["requant"].shape == requant_params_layout(CFG)
    assert requant_lane_layout(CFG)["requant"].shape == requant_params_layout(CFG)
    add, pool, pe = _inspected(ResidualAdd(CFG), MaxPool(CFG), PEArray(CFG, weight_depth=16))
    assert add.a.payload.shape() == pool.x.payload.shape() == act_vector_layout(lanes)
    assert add.o.payload.shape() == pool.o.payload.shape() == out_vector_layout(lanes)
    assert pe.x.payload.shape() == act_vector_layout(CFG.pe_ci)
    assert pe.o.payload.shape() == out_vector_layout(CFG.pe_co)


@pytest.mark.parametrize("unit", ["pe", "add", "pool"])
def test_no_loose_per_layer_ports_remain(unit):
    (dut,) = _inspected({"pe": lambda: PEArray(CFG, weight_depth=16), "add": lambda: ResidualAdd(CFG),
                         "pool": lambda: MaxPool(CFG)}[unit]())
    names = set(dut.signature.members)
    assert {"desc", "busy", "done"} <= names
    assert not names & {"lo", "hi", "s", "ma", "mb", "ci_groups", "co_groups", "act_signed",
                        "a_signed", "b_signed", "height", "width", "kernel", "stride", "pad"}


def test_engine_refuses_a_pe_ci_that_is_not_a_power_of_two():
    from convforge.errors import ConfigError
    from convforge.hw.rtl.controller import Engine

    with pytest.raises(ConfigError, match=r"EngineConfig.pe_ci = 12: the RTL engine needs a power of two"):
        Engine(EngineConfig(pe_ci=12, pe_co=4, dw_lanes=4))
    Engine(EngineConfig(pe_ci=8, pe_co=12, dw_lanes=4))._MustUse__silence = True  # pe_co is free
