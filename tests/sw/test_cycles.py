"""The cycle model: unit figures from the RTL, DMA at the board's bandwidth, ping-pong overlap."""

import math

from graphs import GraphBuilder

from convforge.hw.config import EngineConfig
from convforge.hw.rtl import pe_array
from convforge.sw.compiler import compile
from convforge.sw.runtime.cycles import CycleCoefficients, descriptor_figures, frame_figures


def _pw_descriptor(ci=64, co=48, h=8, w=8):
    view = {"offset": 0, "channel_offset": 0, "channel_stride": 1, "pixel_stride": 64, "row_stride": 64 * w,
            "upsample": 0, "signed": 0}
    return {"opcode": 1, "in_channels": ci, "out_channels": co, "in_height": h, "in_width": w, "out_height": h,
            "out_width": w, "kernel": 1, "stride": 1, "w_bits": 4, "tile_rows": h, "src": view, "src2": view,
            "dst": {**view, "pixel_stride": 48}}


def test_pointwise_compute_follows_the_pe_array_figures():
    cfg = EngineConfig()
    f = descriptor_figures(_pw_descriptor(), cfg, ddr_gbps=1000.0)
    tiles = math.ceil(64 / 16) * math.ceil(48 / 16)
    assert f["compute_cycles"] == 64 * pe_array.cycles_per_pixel(64, 48, cfg) + pe_array.LATENCY + tiles
    assert f["macs"] == 64 * 64 * 48
    assert f["ddr_bytes"] == 64 * 64 + 64 * 48 + tiles * 128 + 48 * 8 + 128


def test_dma_bound_passes_slow_down_with_less_bandwidth_and_overlap_hides_the_smaller_part():
    cfg = EngineConfig()
    fast = descriptor_figures(_pw_descriptor(), cfg, ddr_gbps=100.0)
    slow = descriptor_figures(_pw_descriptor(), cfg, ddr_gbps=0.5)
    assert slow["dma_cycles"] > fast["dma_cycles"] and slow["cycles"] > fast["cycles"]
    for f in (fast, slow):
        big, small = max(f["compute_cycles"], f["dma_cycles"]), min(f["compute_cycles"], f["dma_cycles"])
        assert big < f["cycles"] <= big + small + CycleCoefficients().descriptor_overhead


def test_coefficients_calibrate_the_model():
    cfg = EngineConfig()
    base = descriptor_figures(_pw_descriptor(), cfg)
    tuned = descriptor_figures(_pw_descriptor(), cfg, coeff=CycleCoefficients(descriptor_overhead=132))
    assert tuned["cycles"] == base["cycles"] + 100


def test_frame_figures_give_fps_and_utilisation_of_the_peak():
    b = GraphBuilder(0, hw=(32, 32))
    g = b.graph({"y": b.conv(b.conv("input", 32, 3, 2, w_bits=8), 64)})
    prog = compile(g, EngineConfig())
    c = prog.cycles
    assert math.isclose(c["fps"], 250e6 / c["cycles"])
    assert 0 < c["mac_utilisation"] < 1
    assert c["macs"] == 16 * 16 * (27 * 32 + 32 * 64)
    assert frame_figures([], EngineConfig())["fps"] == 0.0
