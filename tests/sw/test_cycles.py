"""The cycle model of the RTL engine: its terms follow the controller's states (the
comparison with RTL-measured cycles is in tests/sim/test_accel.py)."""

import math

import numpy as np
from graphs import GraphBuilder

from convforge.hw.config import EngineConfig
from convforge.hw.layouts import DESCRIPTOR_BYTES
from convforge.sw.compiler import compile
from convforge.sw.runtime.cycles import (
    BEAT_BUBBLE_CYCLES,
    MAC_PIPELINE_CYCLES,
    REQUANT_TAIL_CYCLES,
    SCRATCH_READ_LATENCY,
    SPAN_SETUP_CYCLES,
    STORE_LEAD_CYCLES,
    CycleCoefficients,
    deform_taps,
    descriptor_figures,
    frame_figures,
    mac_cycles,
)


def _view(pixel_stride, w, **kw):
    return {"offset": 0, "channel_offset": 0, "channel_stride": 1, "pixel_stride": pixel_stride,
            "row_stride": pixel_stride * w, "upsample": 0, "signed": 0, "onchip": 0, **kw}


def _pw_descriptor(ci=64, co=48, h=8, w=8):
    return {"opcode": 1, "in_channels": ci, "out_channels": co, "in_height": h, "in_width": w, "out_height": h,
            "out_width": w, "kernel": 1, "stride": 1, "pad": 0, "dilation": 1, "w_bits": 4, "tile_rows": h,
            "src": _view(ci, w), "src2": _view(ci, w), "dst": _view(co, w)}


def test_pointwise_layer_adds_up_its_spans_mac_groups_and_tables():
    cfg = EngineConfig()                      # PE 16x16, 128-bit AXI
    coeff = CycleCoefficients()
    f = descriptor_figures(_pw_descriptor(), cfg, ddr_gbps=1000.0)
    npx, beat = 64, 16
    # per pixel: 64 input bytes (4 beats) and 48 output bytes (3 beats), both beat-aligned;
    # the input goes into buffer A wide, one beat (= one 16-byte A word) per cycle
    reads = npx * (SPAN_SETUP_CYCLES + coeff.read_latency + 4 + 3 * BEAT_BUBBLE_CYCLES)
    writes = npx * SPAN_SETUP_CYCLES          # the store's data phase overlaps the MAC state
    tiles, wbytes, rqbytes = 4 * 3, 4 * 3 * 128, 48 * 8
    tables = sum(1 + coeff.read_latency + b + (b // beat - 1) * BEAT_BUBBLE_CYCLES for b in (wbytes, rqbytes))
    assert f["dma_cycles"] == reads + writes + tables
    # 3 output groups of 4 columns: the next group issues while the previous drains its 16
    groups = 2 * (16 + MAC_PIPELINE_CYCLES) + 4 + MAC_PIPELINE_CYCLES + 16
    steps = 4                                 # one tap + 3 pixel phases
    # the drain streams into the store span: 48 bytes + 2 bubbles, which the drain outlasts
    store = 4 + STORE_LEAD_CYCLES + 48 + 2 * BEAT_BUBBLE_CYCLES
    assert store < groups + REQUANT_TAIL_CYCLES
    assert f["compute_cycles"] == max(4, 3) + 1 + npx * (steps + groups + REQUANT_TAIL_CYCLES)
    assert f["fetch_cycles"] == coeff.read_latency + DESCRIPTOR_BYTES + 7 * BEAT_BUBBLE_CYCLES + 7
    assert f["cycles"] == f["fetch_cycles"] + f["dma_cycles"] + f["compute_cycles"]
    assert f["macs"] == npx * 64 * 48 and tiles == 12
    assert f["ddr_read_bytes"] == npx * 64 + wbytes + rqbytes + DESCRIPTOR_BYTES
    assert f["ddr_write_bytes"] == npx * 48


def test_a_store_slower_than_the_drain_sets_the_pace():
    cfg = EngineConfig()
    d = _pw_descriptor(ci=16, co=48)
    packed = descriptor_figures(d, cfg)
    # channel stride 2 (a channel shuffle's store): 95 items per pixel, more than the drain's
    strided = descriptor_figures({**d, "dst": {**d["dst"], "channel_stride": 2, "pixel_stride": 96,
                                               "row_stride": 96 * 8}}, cfg)
    store = 1 + STORE_LEAD_CYCLES + 95 + 5 * BEAT_BUBBLE_CYCLES      # 95 bytes from aligned: 6 beats
    drain = 2 * (16 + MAC_PIPELINE_CYCLES) + 1 + MAC_PIPELINE_CYCLES + 16 + REQUANT_TAIL_CYCLES
    assert store > drain
    assert strided["compute_cycles"] - packed["compute_cycles"] == 64 * (store - drain)
    assert strided["ddr_write_bytes"] == packed["ddr_write_bytes"]


def test_misaligned_spans_cost_a_bubble_per_extra_beat_and_onchip_spans_have_no_beats():
    cfg = EngineConfig()
    aligned = descriptor_figures(_pw_descriptor(), cfg)
    shifted = _pw_descriptor()
    shifted["src"] = {**shifted["src"], "offset": 8}      # every 64-byte span now touches 5 beats
    # ... and each of the 4 boundaries between them falls mid A word: 8 pieces instead of 4
    assert descriptor_figures(shifted, cfg)["dma_cycles"] == aligned["dma_cycles"] + 64 * (BEAT_BUBBLE_CYCLES + 4)
    # a byte-serial span (channel stride 2: no wide path) pays only the extra beat's bubble
    strided = _pw_descriptor(ci=32)
    strided["src"] = {**strided["src"], "channel_stride": 2}
    shifted = {**strided, "src": {**strided["src"], "offset": 8}}
    assert (descriptor_figures(shifted, cfg)["dma_cycles"]
            == descriptor_figures(strided, cfg)["dma_cycles"] + 64 * BEAT_BUBBLE_CYCLES)
    onchip = _pw_descriptor()
    onchip["src"] = {**onchip["src"], "onchip": 1}
    f = descriptor_figures(onchip, cfg)
    assert f["scratch_bytes"] == 64 * 64 and f["ddr_read_bytes"] < aligned["ddr_read_bytes"]
    # the scratchpad's byte stream: no beats, no bubbles, no wide path (64 cycles a span)
    ddr_span = CycleCoefficients().read_latency + 4 + 3 * BEAT_BUBBLE_CYCLES
    assert f["dma_cycles"] == aligned["dma_cycles"] + 64 * (SCRATCH_READ_LATENCY + 64 - ddr_span)


def test_padded_taps_zero_fill_instead_of_reading():
    cfg = EngineConfig()
    d = {**_pw_descriptor(ci=8, co=16), "opcode": 2, "kernel": 3, "pad": 1}
    f = descriptor_figures(d, cfg)
    inside = sum(len([y for y in range(8) if 0 <= y - 1 + i < 8]) for i in range(3)) ** 2
    padded = 64 * 9 - inside
    no_pad = descriptor_figures({**d, "pad": 0, "in_height": 10, "in_width": 10}, cfg)
    # the same pixels and taps; every padded tap is a zero fill of C_in cycles instead of a read
    assert f["compute_cycles"] - no_pad["compute_cycles"] == padded * 8
    assert f["dma_cycles"] < no_pad["dma_cycles"]


def test_read_latency_and_a_slow_ddr_port_slow_the_spans():
    cfg = EngineConfig()
    base = descriptor_figures(_pw_descriptor(), cfg)
    slow_bus = descriptor_figures(_pw_descriptor(), cfg, coeff=CycleCoefficients(read_latency=40))
    spans = 64 + 2                            # one read span per pixel, two table loads
    assert slow_bus["cycles"] - base["cycles"] == 36 * (spans + 1)   # and the descriptor fetch
    starved = descriptor_figures(_pw_descriptor(), cfg, ddr_gbps=0.01)
    assert starved["dma_cycles"] > base["dma_cycles"]
    assert math.isclose(starved["dma_cycles"], math.ceil(starved["ddr_bytes"] / (0.01e3 / cfg.clock_mhz)))


def test_frame_figures_give_fps_and_utilisation_of_the_peak():
    b = GraphBuilder(0, hw=(32, 32))
    g = b.graph({"y": b.conv(b.conv("input", 32, 3, 2, w_bits=8), 64)})
    prog = compile(g, EngineConfig())
    c = prog.cycles
    assert math.isclose(c["fps"], 250e6 / c["cycles"])
    assert 0 < c["mac_utilisation"] < 1
    assert c["macs"] == 16 * 16 * (27 * 32 + 32 * 64)
    assert frame_figures([], EngineConfig())["fps"] == 0.0


def _dw_descriptor(opcode, h=6, w=6, c=8):
    view = _view(c, w)
    return {"opcode": opcode, "in_channels": c, "out_channels": c, "in_height": h, "in_width": w, "out_height": h,
            "out_width": w, "kernel": 3, "stride": 1, "pad": 1, "dilation": 1, "band_top": 0, "d_max": 4,
            "frac_bits": 4, "tile_rows": h, "src": view, "src2": _view(18, w), "dst": view}


def test_deformable_taps_follow_the_map():
    sq = _dw_descriptor(4)
    ys, xs = deform_taps(sq, np.zeros((6, 6), dtype=np.uint8))           # dilation 0: 9 reads of the centre
    assert ys.size == 9 * 36 and np.array_equal(np.unique(ys), np.arange(6))
    far = deform_taps(sq, np.full((6, 6), 4, dtype=np.uint8))             # dilation 4: border taps skipped
    assert far[0].size == sum(len([t for t in (y - 4, y, y + 4) if 0 <= t < 6]) for y in range(6)) ** 2
    bl = _dw_descriptor(5)
    whole = np.zeros((6, 6, 18), dtype=np.int8)                            # integer offsets: one neighbour
    assert deform_taps(bl, whole)[0].size == sum(len([t for t in (y - 1, y, y + 1) if 0 <= t < 6])
                                                for y in range(6)) ** 2
    half = np.full((6, 6, 18), 8, dtype=np.int8)                           # +0.5 px: all four where inside
    assert deform_taps(bl, half)[0].size > 2 * deform_taps(bl, whole)[0].size
    cfg = EngineConfig()
    more = descriptor_figures(sq, cfg, taps=deform_taps(sq, np.zeros((6, 6), dtype=np.uint8)))
    fewer = descriptor_figures(sq, cfg, taps=far)
    assert more["cycles"] > fewer["cycles"] and more["compute_cycles"] == fewer["compute_cycles"]


def test_mac_groups_overlap_the_drain_with_the_next_issue():
    # short groups: the drain (plus the pipeline) spaces them; long groups: their issue does
    assert mac_cycles(2, [16, 16, 5]) == 2 * (16 + MAC_PIPELINE_CYCLES) + 2 + MAC_PIPELINE_CYCLES + 5
    assert mac_cycles(30, [16, 16]) == 30 + 30 + MAC_PIPELINE_CYCLES + 16
    # one group: issue, pipeline, drain -- nothing to overlap
    assert mac_cycles(7, [3]) == 7 + MAC_PIPELINE_CYCLES + 3
