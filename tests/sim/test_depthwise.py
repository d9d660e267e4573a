"""Depthwise unit: golden model against loops of the spec formulas, stream packing, and the
RTL in cocotb/Verilator bit-exact against the golden model (INTEGER_SPEC §7)."""

import numpy as np
import pytest

from convforge.errors import ShapeError
from convforge.hw.config import EngineConfig
from convforge.hw.packing import pack, unpack
from convforge.hw.rtl.depthwise import (
    CYCLES_PER_OUTPUT,
    DepthwiseUnit,
    descriptor_layout,
    line_buffer_rows,
)
from convforge.hw.rtl.depthwise_model import (
    DepthwiseLayer,
    golden_depthwise,
    output_size,
    pack_depthwise_streams,
    unpack_depthwise_output,
)
from convforge.hw.rtl.units import get_unit
from convforge.models.quant.intops import rshift_round, sat
from convforge.sim.regress import TEST_CONFIG
from convforge.sim.tb_depthwise import make_case, measure_throughput, regress


def _loop_reference(cfg: EngineConfig, case: dict) -> np.ndarray:
    """INTEGER_SPEC §3/§4 written out as plain Python integer loops (independent of the
    executor kernels the golden model calls)."""
    layer, x = case["layer"], case["x"]
    c, h, w = x.shape
    s = layer.stride
    ho, wo = output_size(h, s), output_size(w, s)
    f = cfg.frac_bits
    one = 1 << f

    def px(ch: int, yy: int, xx: int) -> int:
        return int(x[ch, yy, xx]) if 0 <= yy < h and 0 <= xx < w else 0

    out = np.zeros((c, ho, wo), dtype=np.int64)
    for ch in range(c):
        for oy in range(ho):
            for ox in range(wo):
                acc = 0
                for i in range(3):
                    for j in range(3):
                        wt = int(layer.weights[ch, i, j])
                        if layer.mode == "regular":
                            d = layer.dilation
                            acc += wt * px(ch, oy * s - d + i * d, ox * s - d + j * d)
                        elif layer.mode == "square":
                            d = int(case["dmap"][oy, ox])
                            acc += wt * px(ch, oy * s + (i - 1) * d, ox * s + (j - 1) * d)
                        else:
                            k = i * 3 + j
                            py = (oy * s - 1 + i) * one + int(case["offsets"][2 * k, oy, ox])
                            pxx = (ox * s - 1 + j) * one + int(case["offsets"][2 * k + 1, oy, ox])
                            y0, x0 = py // one, pxx // one
                            fy, fx = py - y0 * one, pxx - x0 * one
                            v = ((one - fy) * (one - fx) * px(ch, y0, x0) + (one - fy) * fx * px(ch, y0, x0 + 1)
                                 + fy * (one - fx) * px(ch, y0 + 1, x0) + fy * fx * px(ch, y0 + 1, x0 + 1))
                            acc += wt * v
                y = rshift_round((acc + int(layer.bias[ch])) * int(layer.M[ch]), int(layer.S[ch]))
                out[ch, oy, ox] = sat(y, layer.lo, layer.hi)
    return out


@pytest.mark.parametrize("mode", ["regular", "square", "bilinear"])
def test_golden_model_matches_spec_loops(mode):
    rng = np.random.default_rng(7)
    for _ in range(6):
        case = make_case(rng, TEST_CONFIG, mode)
        want = _loop_reference(TEST_CONFIG, case)
        got = golden_depthwise(TEST_CONFIG, case["layer"], case["x"], case["dmap"], case["offsets"])
        assert np.array_equal(got, want)


def test_square_deform_dilation_zero_samples_centre():
    cfg = TEST_CONFIG
    x = np.arange(2 * 5 * 6, dtype=np.int64).reshape(2, 5, 6)
    weights = np.ones((2, 3, 3), dtype=np.int64)
    zeros = np.zeros(2, dtype=np.int64)
    layer = DepthwiseLayer("square", 1, 1, False, weights, zeros, np.full(2, 1 << 14), np.full(2, 14), 0, 255)
    got = golden_depthwise(cfg, layer, x, dilation_map=np.zeros((5, 6), dtype=np.int64))
    assert np.array_equal(got, np.minimum(9 * x, 255))


def test_streams_pack_and_unpack_with_the_unit_layouts():
    cfg = TEST_CONFIG
    rng = np.random.default_rng(3)
    case = make_case(rng, cfg, "bilinear")
    layer, x = case["layer"], case["x"]
    streams = pack_depthwise_streams(cfg, layer, x, case["dmap"], case["offsets"])
    groups = -(-layer.channels // cfg.dw_lanes)
    ho, wo = output_size(x.shape[1], layer.stride), output_size(x.shape[2], layer.stride)
    assert len(streams["params"]) == layer.channels
    assert len(streams["pixels"]) == groups * x.shape[1] * x.shape[2]
    assert len(streams["offsets"]) == groups * ho * wo
    desc = unpack(descriptor_layout(cfg), streams["desc"][0])
    assert (desc["width"], desc["height"], desc["channels"]) == (x.shape[2], x.shape[1], layer.channels)
    assert (desc["lo"], desc["hi"], desc["in_signed"]) == (layer.lo, layer.hi, int(layer.in_signed))
    # out payloads round-trip through the output layout, padding lanes dropped
    y = rng.integers(-256, 256, size=(layer.channels, ho, wo))
    padded = np.zeros((groups * cfg.dw_lanes, ho, wo), dtype=np.int64)
    padded[:layer.channels] = y
    from convforge.hw.rtl.depthwise import out_layout  # noqa: PLC0415

    payloads = [pack(out_layout(cfg), [int(v) for v in padded[g * cfg.dw_lanes:(g + 1) * cfg.dw_lanes, r, q]])
                for g in range(groups) for r in range(ho) for q in range(wo)]
    assert np.array_equal(unpack_depthwise_output(cfg, payloads, layer.channels, ho, wo), y)


def test_layer_outside_the_unit_is_refused():
    cfg = TEST_CONFIG
    layer = DepthwiseLayer("regular", 1, cfg.d_max + 1, False, np.zeros((1, 3, 3), np.int64),
                           np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), 0, 255)
    with pytest.raises(ShapeError, match="dilation"):
        golden_depthwise(cfg, layer, np.zeros((1, 4, 4), np.int64))
    wide = DepthwiseLayer("regular", 1, 1, False, np.zeros((1, 3, 3), np.int64),
                          np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), 0, 255)
    with pytest.raises(ShapeError, match="line_width"):
        pack_depthwise_streams(cfg, wide, np.zeros((1, 2, cfg.line_width + 1), np.int64))


def test_unit_is_registered_and_elaborates_for_each_mode_subset():
    assert get_unit("depthwise").regression == "convforge.sim.tb_depthwise:regress"
    from amaranth.back import rtlil  # noqa: PLC0415

    for modes in (("regular",), ("square",), ("bilinear",), ("regular", "bilinear")):
        cfg = EngineConfig(dw_lanes=2, line_width=8, dw_modes=modes)
        unit = DepthwiseUnit(cfg)
        assert ("dilation" in unit.signature.members) == ("square" in modes)
        assert ("offsets" in unit.signature.members) == ("bilinear" in modes)
        assert rtlil.convert(unit, name="depthwise")
    assert line_buffer_rows(EngineConfig()) == 8 + 9 + 3  # D_max 8 / R+1, R+2 with R = 7


@pytest.mark.simulator("verilator")
def test_rtl_bit_exact_random_cases_with_gaps_and_backpressure():
    """INTEGER_SPEC §7 cases of all three modes: random valid gaps on every input stream,
    random back-pressure on the output; every output integer compared."""
    result = regress(TEST_CONFIG, seed=2024, cases=45, gap_prob=0.3, stall_prob=0.3)
    assert result.ok, result.summary()
    assert result.passed == 45
    assert {k: v for k, v in result.figures.items() if k.startswith("cases_")} == {
        "cases_regular": 15, "cases_square": 15, "cases_bilinear": 15}


@pytest.mark.simulator("verilator")
def test_rtl_throughput_one_vector_per_cycle_regular_and_square():
    figures = measure_throughput(TEST_CONFIG)
    for mode in ("regular", "square", "bilinear"):
        assert figures[f"{mode}_s1"] <= CYCLES_PER_OUTPUT[mode] * 1.01, figures
    # stride 2 consumes 4 input pixels per output: input-bound at 1 pixel per cycle
    assert figures["regular_s2"] <= 4.05 and figures["square_s2"] <= 4.05, figures
