"""Fusion of 1x1 -> 3x3 depthwise -> 1x1 chains into on-chip row bands: the fuse pass alone
(band heights, halo rows, refusals), the scratchpad contents per band against the integer
reference, and random fused Programs bit-exact (hypothesis)."""

import re

import numpy as np
import pytest
from checks import assert_bit_exact, assert_plan_never_overlaps
from graphs import GraphBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convforge.errors import EmulatorFault
from convforge.hw.config import EngineConfig
from convforge.hw.layouts import DESCRIPTOR_BYTES, Fault, Opcode, descriptor_layout
from convforge.hw.packing import pack_array, unpack_array
from convforge.models.quant.executor import run_qgraph
from convforge.sw.compiler import compile
from convforge.sw.compiler.passes import Compilation, fuse, legalise, lower, tile
from convforge.sw.runtime.emulator import Emulator
from convforge.sw.runtime.program import read_view

HW = (16, 12)


def _chain_graph(stride=1, dilation=1, square=False, mid=24, seed=3):
    """stem -> 1x1 (mid ch) -> 3x3 depthwise (or square-deformable fed by a map computed
    from the stem) -> 1x1 (8 ch)."""
    b = GraphBuilder(seed, HW)
    x = b.conv("input", 8, 3, 1, w_bits=8)
    if square:
        # the map comes from x so the expanded tensor y has one reader (the square layer)
        dmap = b.conv(x, 1, 1, stride, 0, relu="relu", lo_hi=(0, 3))
    y = b.conv(x, mid)
    if square:
        c, h, w = b.tensors[y].shape
        from convforge.models.quant.qgraph import Layer

        bias, m, s = b._requant(c, 9, 4, False)
        z = b._out("sq", (c, (h - 1) // stride + 1, (w - 1) // stride + 1), True)
        b.layers.append(Layer("sq", "square_deform_dw", [y, dmap], [z],
                              {"stride": stride, "d_max": 3, "w_bits": 4, "lo": -128, "hi": 127},
                              {"weight": b.rng.integers(-7, 8, (c, 1, 3, 3)), "bias": bias, "M": m, "S": s}))
    else:
        z = b.dw(y, stride=stride, dilation=dilation)
    out = b.conv(z, 8)
    return b.graph({"out": out}), y, z, out


def _passes(graph, cfg, mode="always"):
    c = Compilation(graph, cfg, fuse=mode)
    legalise(c)
    lower(c)
    fuse(c)
    tile(c)
    return c


def _need(rows_a, rows_b, row_bytes=12 * 32):
    up = lambda n: -(-n // 64) * 64  # noqa: E731
    return up(rows_a * row_bytes) + up(rows_b * row_bytes)


@pytest.mark.parametrize(("stride", "dilation"), [(1, 1), (1, 2), (2, 1)])
def test_fuse_pass_chooses_the_band_that_fits_and_the_halo_rows(stride, dilation):
    g, y, z, out = _chain_graph(stride, dilation)
    ho = (HW[0] - 1) // stride + 1
    # 24 channels -> 32-byte pixels, 12 px -> 384-byte rows; the band of 3 output rows fits
    rows_a = min(HW[0], 2 * stride + 2 * dilation + 1)
    cfg = EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4, fuse_buffer_bytes=_need(rows_a, 3) // 64 * 64)
    assert _need(min(HW[0], 3 * stride + 2 * dilation + 1), 4) > cfg.fuse_buffer_bytes
    c = _passes(g, cfg)
    (chain,) = c.chains.values()
    assert (chain.band, chain.halo, chain.stride) == (3, dilation, stride)
    layers = [layer.name for layer in g.layers]
    assert (chain.a, chain.b, chain.d) == tuple(layers[1:4])
    steps = [s for s in c.steps if s.fused]
    assert len(steps) == 3 * -(-ho // 3) and all(s.layer in layers[1:4] for s in steps)
    for k, y0 in enumerate(range(0, ho, 3)):
        a, b, d = steps[3 * k:3 * k + 3]
        y1 = min(ho, y0 + 3)
        r0, r1 = max(0, y0 * stride - dilation), min(HW[0], (y1 - 1) * stride + dilation + 1)
        assert (a.src.row, a.src.height, a.dst.height) == (r0, r1 - r0, r1 - r0)
        assert (b.src.height, b.dst.height, b.band_top) == (r1 - r0, y1 - y0, y0 * stride - r0)
        assert (d.src.height, d.dst.row, d.dst.height) == (y1 - y0, y0, y1 - y0)
        assert c.regions[a.dst.view.region].space == c.regions[d.src.view.region].space == "scratch"
        assert c.regions[a.src.view.region].space == c.regions[d.dst.view.region].space == "ddr"
    line = next(ln for ln in c.report["fuse"] if ln.startswith(layers[1]))
    assert f"bands of up to 3 rows (halo {dilation}" in line


def test_fuse_refuses_when_one_row_band_does_not_fit_and_without_a_scratchpad():
    g, *_ = _chain_graph(1, 2)
    need = _need(5, 1)
    c = _passes(g, EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4, fuse_buffer_bytes=1024))
    assert not c.chains and not any(s.fused for s in c.steps)
    assert any(f"one output row needs {need} B" in ln and "fuse_buffer_bytes = 1024" in ln for ln in c.report["fuse"])
    for cfg, mode, why in ((EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4, fuse_buffer_bytes=0), "always",
                            "no scratchpad"),
                           (EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4), "never", "fusion disabled")):
        prog = compile(g, cfg, fuse=mode)
        assert any(why in ln for ln in prog.report)
        fields = unpack_array(descriptor_layout(cfg), prog.image[:prog.n_descriptors * DESCRIPTOR_BYTES]
                              .reshape(prog.n_descriptors, -1))
        assert not any(fields[v]["onchip"].any() for v in ("src", "src2", "dst")) and not fields["band_top"].any()
        assert set(prog.readable()) == set(g.tensors)


def test_a_chain_with_a_second_reader_is_not_fused():
    b = GraphBuilder(2, HW)
    x = b.conv("input", 8, 3, 1, w_bits=8)
    y = b.conv(x, 16)
    z = b.dw(y)
    out = b.conv(z, 8)
    g = b.graph({"out": out, "y": y})  # the expanded tensor is also an output
    c = _passes(g, EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4))
    assert not c.chains and any("other readers" in ln for ln in c.report["fuse"])


@pytest.mark.parametrize(("stride", "dilation", "square"), [(1, 1, False), (1, 2, False), (2, 1, False),
                                                             (1, 0, True), (2, 0, True)])
def test_scratchpad_holds_the_reference_rows_of_every_band(stride, dilation, square):
    g, y, z, out = _chain_graph(stride, dilation, square)
    cfg = EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4, fuse_buffer_bytes=4096)
    prog = compile(g, cfg, fuse="always")
    assert prog.tensors[y].fused and prog.tensors[z].fused and not prog.tensors[out].fused
    assert_plan_never_overlaps(prog)
    image = np.random.default_rng(stride).integers(0, 256, (*HW, 3), dtype=np.uint8)
    ref = {t: v.numpy()[0].transpose(1, 2, 0) for t, v in run_qgraph(g, image, keep_all=True).items()}
    scratch = {r["name"].removeprefix("s:"): r for r in prog.regions if r["space"] == "scratch"}
    emu = Emulator(cfg)
    mem = prog.new_buffer()
    prog.place_image(mem, image)
    layout = descriptor_layout(cfg)
    fields = unpack_array(layout, mem[:prog.n_descriptors * DESCRIPTOR_BYTES].reshape(prog.n_descriptors, -1))
    checked = []

    producer = {g.layers[k].outputs[0]: g.layers[k].name for k in range(len(g.layers))}

    def check(i):
        note = prog.descriptors[i]["note"]  # "fused band: rows y0..y1 (input rows r0..r1)"
        for t in (y, z):
            if prog.descriptors[i]["layer"] != producer[t]:
                continue
            r = scratch[t]
            rows = int(fields["dst"]["row_stride"][i])
            assert int(fields["dst"]["onchip"][i]) == 1 and int(fields["dst"]["offset"][i]) == r["offset"]
            h = int(fields["out_height"][i])
            got = read_view(emu.scratch, r["offset"], 1, rows // r["width"], rows, False, prog.tensors[t].signed,
                            h, r["width"], r["channels"])
            # the expanded tensor holds the band's input rows (with the halo), the 3x3's output the band
            first = int(re.search(r"input rows (\d+)" if t == y else r"band: rows (\d+)", note).group(1))
            assert np.array_equal(got, ref[t][first:first + h]), (t, i)
            checked.append((t, first, h))

    emu.run(mem, 0, prog.n_descriptors, on_descriptor=check)
    assert np.array_equal(prog.read(mem, out), ref[out].transpose(2, 0, 1))
    with pytest.raises(ValueError, match="fused chain .* --fuse never"):
        prog.read(mem, y)
    ho = ref[z].shape[0]
    assert sum(h for t, _, h in checked if t == z) == ho and len({t for t, _, _ in checked}) == 2
    assert any(h < ho for t, _, h in checked if t == z), "one band only: the test would not see the halo"


def test_emulator_refuses_band_top_on_other_opcodes_and_onchip_views_past_the_scratchpad():
    g, *_ = _chain_graph()
    cfg = EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4, fuse_buffer_bytes=4096)
    prog = compile(g, cfg, fuse="always")
    layout = descriptor_layout(cfg)
    n = prog.n_descriptors
    for change, code in (({"band_top": 1}, Fault.BAD_DESCRIPTOR), ({"dst": {"offset": 4096}}, Fault.ADDRESS_RANGE)):
        mem = prog.new_buffer()
        fields = unpack_array(layout, mem[:n * DESCRIPTOR_BYTES].reshape(n, -1))
        i = next(k for k in range(n) if int(fields["opcode"][k]) == Opcode.CONV_PW and fields["dst"]["onchip"][k])
        for key, value in change.items():
            if isinstance(value, dict):
                for sub, v in value.items():
                    fields[key][sub][i] = v
            else:
                fields[key][i] = value
        mem[:n * DESCRIPTOR_BYTES] = pack_array(layout, fields).reshape(-1)
        with pytest.raises(EmulatorFault) as err:
            Emulator(cfg).run(mem, 0, n)
        assert (err.value.code, err.value.index) == (code, i)


# -- random fused Programs ---------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), hw=st.sampled_from([(8, 8), (12, 10), (9, 14)]),
       blocks=st.lists(st.tuples(st.integers(2, 40), st.sampled_from(["dw", "dw2", "dilated", "square"]),
                                 st.integers(1, 20)), min_size=1, max_size=3),
       scratch=st.sampled_from([1024, 2048, 8192, 65536]), lanes=st.sampled_from([(8, 4, 4), (4, 8, 3)]))
def test_random_fused_programs_are_bit_exact(seed, hw, blocks, scratch, lanes):
    b = GraphBuilder(seed, hw)
    x = b.conv("input", 6, 3, 1, w_bits=8)
    rng = b.rng
    for mid, kind, co in blocks:
        relu = ("relu", "none", "relu6")[int(rng.integers(0, 3))]
        if kind == "square":
            d_max = int(rng.integers(1, 9))
            dmap = b.conv(x, 1, 1, 1, 0, relu="relu", lo_hi=(0, d_max))   # the map before the chain
            y = b.conv(x, mid, relu=relu)
            c, h, w = b.tensors[y].shape
            from convforge.models.quant.qgraph import Layer

            bias, m, s = b._requant(c, 9, 4, b.tensors[y].signed)
            lo, hi, sig = b._range(relu)
            z = b._out(f"sq{len(b.layers)}", (c, h, w), sig)
            b.layers.append(Layer(z, "square_deform_dw", [y, dmap], [z],
                                  {"stride": 1, "d_max": d_max, "w_bits": 4, "lo": lo, "hi": hi},
                                  {"weight": rng.integers(-7, 8, (c, 1, 3, 3)), "bias": bias, "M": m, "S": s}))
        else:
            y = b.conv(x, mid, relu=relu)
            z = b.dw(y, stride=2 if kind == "dw2" else 1,
                     dilation=int(rng.integers(2, 5)) if kind == "dilated" else 1, relu=relu)
        x = b.conv(z, co, relu=relu)
    g = b.graph({"out": x})
    cfg = EngineConfig(pe_ci=lanes[0], pe_co=lanes[1], dw_lanes=lanes[2], weight_depth=128,
                       fuse_buffer_bytes=scratch)
    prog = compile(g, cfg, fuse="always")
    image = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    image[0, 0], image[-1, -1] = 0, 255
    assert_bit_exact(g, prog, image)
    fused = {t for t, p in prog.tensors.items() if p.fused}
    assert len(fused) == 2 * prog.cycles["fused_chains"]
    if scratch == 65536:  # every block is a fusable chain (>= 2 channels: depthwise) and fits
        assert prog.cycles["fused_chains"] == len(blocks)


def test_auto_fuses_only_where_the_cycle_model_predicts_fewer_cycles():
    g, *_ = _chain_graph(1, 1)
    cfg = EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4, fuse_buffer_bytes=4096)
    always, auto, never = (compile(g, cfg, fuse=m) for m in ("always", "auto", "never"))
    assert always.cycles["fused_chains"] == 1 and never.cycles["fused_chains"] == 0
    assert auto.cycles["cycles"] <= min(always.cycles["cycles"], never.cycles["cycles"])
    if auto.cycles["fused_chains"] == 0:
        assert any("not fused (cycle model:" in ln for ln in auto.report)
    with pytest.raises(Exception, match="fuse='sometimes': choose one of auto, always, never"):
        compile(g, cfg, fuse="sometimes")


def test_fuse_buffer_bytes_is_validated_and_travels_in_the_csr_words():
    from convforge.errors import ConfigError

    for bad in (1000, 512, 1 << 23, -64):
        with pytest.raises(ConfigError, match="EngineConfig.fuse_buffer_bytes"):
            EngineConfig(fuse_buffer_bytes=bad)
    cfg = EngineConfig(fuse_buffer_bytes=4096)
    assert EngineConfig.from_csr_words(cfg.to_csr_words()) == cfg
    assert cfg.csr_differences(EngineConfig().to_csr_words())[0].startswith("fuse_buffer_bytes: here 4096")
