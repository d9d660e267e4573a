"""Each compiler pass on small graphs, and what legalise refuses."""

import numpy as np
import pytest
from checks import assert_bit_exact, assert_plan_never_overlaps
from graphs import GraphBuilder, every_op_graph

from convforge.errors import CompileError
from convforge.hw.config import EngineConfig
from convforge.hw.layouts import Opcode
from convforge.sw.compiler import compile
from convforge.sw.compiler.passes import Compilation, accumulator_bound, fuse, legalise, lower, tile

SMALL = EngineConfig(pe_ci=8, pe_co=4, dw_lanes=4)


def _shuffle_unit():
    b = GraphBuilder(1)
    x = b.conv("input", 8, 3, 2, w_bits=8)
    s0, s1 = b.split(x, [4, 4])
    y = b.conv(b.dw(b.conv(s1, 6)), 4)
    out = b.shuffle(b.concat(s0, y), groups=2)
    return b.graph({"out": b.conv(out, 4)}), y, out


def test_legalise_records_bounds_and_opcodes():
    g = every_op_graph(0)
    c = Compilation(g, SMALL)
    legalise(c)
    assert c.opcodes[g.layers[0].name] == Opcode.CONV_KXK
    assert set(c.opcodes.values()) == {Opcode.CONV_KXK, Opcode.CONV_PW, Opcode.DW_REGULAR, Opcode.DW_SQUARE,
                                       Opcode.DW_BILINEAR}
    layer = g.layers[0]
    w = np.abs(layer.params["weight"]).reshape(layer.params["weight"].shape[0], -1).sum(1) * 255
    assert c.bounds[layer.name][1] == w.max()
    assert c.report["legalise"]


def test_lower_writes_the_shuffled_concat_in_place_and_copies_the_pass_through_half():
    g, y, out = _shuffle_unit()
    c = Compilation(g, SMALL)
    legalise(c)
    lower(c)
    # the branch output is written with channel stride 2 straight into the shuffled buffer
    (piece,) = c.place[y]
    assert piece.view.channel_stride == 2 and piece.view.channel_offset == 1
    assert piece.view.region == c.place[out][0].view.region
    # the pass-through half is a view of the split input: an explicit copy
    copies = [src for moves in c.pending.values() for src, _ in moves]
    assert copies == [g.layers[1].outputs[0]]


def test_tile_splits_output_channels_to_fit_the_weight_buffer():
    b = GraphBuilder(2)
    x = b.conv(b.conv("input", 40, 3, 1, w_bits=8), 40)
    g = b.graph({"x": x})
    cfg = EngineConfig(pe_ci=4, pe_co=4, dw_lanes=4, weight_depth=16)
    c = Compilation(g, cfg)
    legalise(c)
    lower(c)
    tile(c)
    passes = [s for s in c.steps if s.layer == g.layers[1].name]
    # ci 40 -> 10 input groups; 16 tiles hold one output group of 4 channels
    assert [s.out_range for s in passes] == [(i, i + 4) for i in range(0, 40, 4)]
    assert all(s.tile_rows >= 1 for s in c.steps)
    assert_bit_exact(g, compile(g, cfg), np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))


def test_fuse_fuses_the_shuffle_units_branch_written_into_the_shuffled_concat():
    g, y, _ = _shuffle_unit()
    c = Compilation(g, SMALL)
    legalise(c)
    lower(c)
    fuse(c)
    (chain,) = c.chains.values()
    assert chain.d == next(layer.name for layer in g.layers if layer.outputs[0] == y)
    assert any("fits in bands of up to" in line for line in c.report["fuse"])
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert_bit_exact(g, compile(g, SMALL, fuse="always"), image)


def test_allocate_reuses_dead_buffers_and_never_overlaps_live_ones():
    g = every_op_graph(3)
    reuse, keep = compile(g, SMALL), compile(g, SMALL, reuse_buffers=False)
    assert reuse.buffer_bytes < keep.buffer_bytes
    for p in (reuse, keep):
        assert_plan_never_overlaps(p)


@pytest.mark.parametrize("cfg", [SMALL, EngineConfig(), EngineConfig(pe_ci=4, pe_co=4, dw_lanes=8, weight_depth=16,
                                                                      axi_data_bits=64)])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_op_graph_is_bit_exact_on_every_tensor(cfg, seed):
    g = every_op_graph(seed, hw=(16, 18), ch=19)
    img = np.random.default_rng(seed).integers(0, 256, (16, 18, 3), dtype=np.uint8)
    prog = compile(g, cfg, fuse="always")
    assert prog.cycles["fused_chains"] == 1  # the ShuffleNet unit's branch
    assert assert_bit_exact(g, prog, img) == len(prog.readable()) == len(g.tensors) - 2


def test_program_without_reuse_keeps_every_tensor_readable_after_the_run():
    from convforge.sw.runtime.emulator import Emulator

    g = every_op_graph(4)
    prog = compile(g, SMALL, reuse_buffers=False, fuse="never")
    img = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mem = prog.new_buffer()
    prog.place_image(mem, img)
    Emulator(SMALL).run(mem, 0, prog.n_descriptors)
    from convforge.models.quant.executor import run_qgraph

    ref = run_qgraph(g, img, keep_all=True)
    assert all(np.array_equal(prog.read(mem, t)[None], ref[t].numpy()) for t in g.tensors)


# -- refusals -------------------------------------------------------------------------------
def _refused(graph, cfg, *needles):
    with pytest.raises(CompileError) as err:
        compile(graph, cfg)
    for n in needles:
        assert n in str(err.value), str(err.value)


def test_grouped_convolution_is_refused_by_name():
    b = GraphBuilder(5)
    x = b.conv("input", 8, 3, 1)
    y = b.conv(x, 8, 3, 1, groups=2)
    _refused(b.graph({"y": y}), SMALL, b.layers[-1].name, "groups")


def test_row_wider_than_the_line_buffer_is_refused():
    b = GraphBuilder(6, hw=(8, 40))
    y = b.dw(b.conv("input", 4))
    _refused(b.graph({"y": y}), EngineConfig(line_width=32), b.layers[-1].name, "EngineConfig.line_width")


def test_accumulator_bound_beyond_acc_bits_is_refused():
    b = GraphBuilder(7)
    y = b.conv("input", 4, 3, 1, w_bits=8)
    _refused(b.graph({"y": y}), EngineConfig(acc_bits=16), b.layers[-1].name, "EngineConfig.acc_bits", "§6")


def test_channels_beyond_the_engine_and_missing_modes_are_refused():
    b = GraphBuilder(8)
    y = b.square(b.conv("input", 20))
    g = b.graph({"y": y})
    _refused(g, EngineConfig(dw_modes=("regular", "bilinear")), b.layers[-1].name, "dw_modes")
    b = GraphBuilder(9)
    y = b.maxpool(b.conv("input", 4), k=5, s=1, p=2)
    _refused(b.graph({"y": y}), EngineConfig(), "EngineConfig.pool_k_max")


def test_invalid_qgraph_is_refused_before_anything_is_written():
    b = GraphBuilder(10)
    y = b.conv("input", 4)
    g = b.graph({"y": y})
    g.layers[0].inputs = ["nowhere"]
    _refused(g, SMALL, "not valid", "nowhere")


def test_accumulator_bound_counts_bilinear_fraction_bits():
    b = GraphBuilder(11)
    y = b.bilinear(b.conv("input", 4))
    layer = b.layers[-1]
    bound, gemm = accumulator_bound(layer, False)
    w = np.abs(layer.params["weight"]).reshape(4, -1).sum(1) * 255 << 8
    assert gemm == w.max() and bound >= gemm
    del y


def test_layers_wider_than_max_channels_are_split_into_passes():
    b = GraphBuilder(12, hw=(8, 8))
    x = b.conv("input", 40)
    y = b.dw(x)
    z = b.add(b.maxpool(y, 3, 1, 1), b.dw(x, stride=1, dilation=2), relu="none")
    g = b.graph({"z": z})
    cfg = EngineConfig(pe_ci=4, pe_co=4, dw_lanes=4, max_channels=16)
    prog = compile(g, cfg)
    per_layer = {}
    for d in prog.descriptors[:-1]:
        per_layer.setdefault(d["layer"], []).append(tuple(d["out_channels"]))
    assert per_layer[g.layers[1].name] == [(0, 16), (16, 32), (32, 40)]
    assert_bit_exact(g, prog, np.random.default_rng(12).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    b = GraphBuilder(13, hw=(8, 8))
    wide = b.conv(b.conv("input", 20), 4)
    _refused(b.graph({"w": wide}), cfg, b.layers[-1].name, "EngineConfig.max_channels")
    b = GraphBuilder(14, hw=(8, 8))
    deep = b.conv(b.conv("input", 16), 4, 3, 1)
    _refused(b.graph({"d": deep}), EngineConfig(pe_ci=4, pe_co=4, dw_lanes=4, weight_depth=16), b.layers[-1].name,
             "EngineConfig.weight_depth")


def test_every_op_graph_covers_the_spec_corner_cases():
    """INTEGER_SPEC §7: dilation maps holding 0 and D_max, offsets at +-R*2**F and fractional,
    full activation ranges, channel counts not divisible by the lanes."""
    from convforge.models.quant.executor import run_qgraph

    g = every_op_graph(0, hw=(16, 18), ch=19)
    ref = run_qgraph(g, np.random.default_rng(0).integers(0, 256, (16, 18, 3), dtype=np.uint8), keep_all=True)
    square = next(layer for layer in g.layers if layer.op == "square_deform_dw")
    dmap = ref[square.inputs[1]]
    assert int(dmap.min()) == 0 and int(dmap.max()) == square.attrs["d_max"]
    bil = next(layer for layer in g.layers if layer.op == "bilinear_deform")
    off, lim = ref[bil.inputs[1]], bil.attrs["R"] << bil.attrs["F"]
    assert int(off.min()) == -lim and int(off.max()) == lim and bool(((off % 16) != 0).any())
    assert any(int(ref[t].min()) == -128 and int(ref[t].max()) == 127 for t in g.tensors if g.tensors[t].signed)
    assert 19 % SMALL.pe_ci and 19 % SMALL.dw_lanes
