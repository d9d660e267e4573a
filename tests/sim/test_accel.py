"""The accelerator top (CSR + controller + DMA + units) runs whole Programs in cocotb:
AxiLiteMaster on the CSRs, AxiRam as DDR, random pauses on all ten channels; bit-exact with
the emulator, every fault code it can raise provoked once, soft reset recovers."""

import random
import sys
from pathlib import Path

import numpy as np
import pytest

from convforge.hw.layouts import Opcode
from convforge.sim.regress_accel import (
    ACCEL_TEST_CONFIG,
    EngineRun,
    check_compiled,
    check_run,
    cycle_model_errors,
    fault_cases,
    measure_descriptors,
    random_program,
    run_compiled,
    run_engine,
)
from convforge.sw.compiler import compile

sys.path.insert(0, str(Path(__file__).parents[1] / "sw"))
from graphs import every_op_graph  # noqa: E402


def test_random_programs_of_every_built_kind_bit_exact_and_every_fault_flagged():
    cfg = ACCEL_TEST_CONFIG
    rng = random.Random(8)
    runs = []
    for i in range(3):
        image, n = random_program(cfg, rng, layers=8 + i)
        runs.append(EngineRun(f"program{i}", image, n))
    image, n = random_program(cfg, rng, layers=5)
    runs += fault_cases(cfg, image, n, rng)
    runs.append(EngineRun("after_soft_reset", image, n))
    run_engine(cfg, runs, seed=8)
    problems = [p for r in runs for p in check_run(cfg, r)]
    assert not problems, "\n".join(problems)


def test_depthwise_column_cache_bit_exact_at_every_border():
    # DW_REGULAR at stride 1, dilation 1 reads one new column per pixel (the column cache):
    # pads 0-2 (a new column left or right of the image, both at once on 1-2 px wide inputs),
    # widths 1-7, channel strides 1-3, upsampled and signed inputs, AXI pauses
    cfg = ACCEL_TEST_CONFIG
    rng = random.Random(31)
    runs = []
    for i in range(2):
        image, n = random_program(cfg, rng, layers=10, kinds=(Opcode.DW_REGULAR,),
                                  dw_shapes=[(1, pad, 1) for pad in (0, 1, 1, 2)])
        runs.append(EngineRun(f"column_cache{i}", image, n))
    run_engine(cfg, runs, seed=31)
    problems = [p for r in runs for p in check_run(cfg, r)]
    assert not problems, "\n".join(problems)


def test_compiled_every_op_network_every_tensor_bit_exact_with_reference_and_emulator():
    # stem (3x3 s2, 8-bit), split/concat/shuffle, depthwise s1/s2/dilated, square and
    # bilinear deformable, max pool, residual add + ReLU6, upsample, 8-bit 1x1 head
    cfg = ACCEL_TEST_CONFIG
    graph = every_op_graph(0, hw=(8, 8), ch=19)
    program = compile(graph, cfg, reuse_buffers=False)
    image = np.random.default_rng(7).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    run = run_compiled(cfg, program, image, seed=7)
    count, problems = check_compiled(graph, program, image, run)
    assert not problems, "\n".join(problems[:10])
    # the ShuffleNet branch's chain runs fused (auto): its two intermediates stay on chip
    assert count == len(graph.tensors) - 2 * program.cycles["fused_chains"] > 20


def test_cycle_model_matches_the_rtl_layer_by_layer_on_the_every_op_network():
    # each descriptor alone on the buffer its frame gives it (measure_descriptors)
    from convforge.sw.runtime.emulator import Emulator

    cfg = ACCEL_TEST_CONFIG
    graph = every_op_graph(0, hw=(8, 8), ch=19)
    program = compile(graph, cfg, reuse_buffers=False)
    image = np.random.default_rng(7).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    rows = cycle_model_errors(cfg, measure_descriptors(cfg, program, image))
    kinds = {r["opcode"] for r in rows}
    assert kinds >= {"CONV_KXK", "CONV_PW", "DW_REGULAR", "DW_SQUARE", "DW_BILINEAR", "MAXPOOL", "ADD", "COPY"}
    # from the fields alone (the compiler): every layer but the deformable ones, whose cost
    # follows their maps (2x2 maps here: the border decides)
    deformable = ("DW_SQUARE", "DW_BILINEAR")
    off = [r for r in rows if r["opcode"] not in deformable and abs(r["error"]) > 0.05]
    assert not off, [(r["index"], r["opcode"], r["cycles"], r["model"]) for r in off]
    # with the maps (the emulator passes the taps it reads): every layer
    mem = program.new_buffer()
    program.place_image(mem, image)
    stats = Emulator(cfg).run(mem, program.program_offset, program.n_descriptors)
    off = [(r["index"], r["opcode"], r["cycles"], f["cycles"]) for r, f in zip(rows, stats.per_descriptor, strict=True)
           if abs(f["cycles"] / r["cycles"] - 1) > 0.02]
    assert not off, off
    rtl = sum(r["cycles"] for r in rows)
    assert abs(sum(r["model"] for r in rows) / rtl - 1) < 0.02 and abs(stats.cycles / rtl - 1) < 0.01


@pytest.mark.simulator("verilator")
def test_compiled_fused_chains_run_band_by_band_bit_exact_with_reference_and_emulator():
    # a dilated chain (halo 2) and a square-deformable stride-2 chain, each in several row
    # bands through the 1 KiB scratchpad: onchip views and band_top on the RTL's one span path
    from graphs import GraphBuilder

    from convforge.hw.layouts import DESCRIPTOR_BYTES, descriptor_layout
    from convforge.hw.packing import unpack_array
    from convforge.models.quant.qgraph import Layer

    cfg = ACCEL_TEST_CONFIG
    b = GraphBuilder(5, (8, 8))
    x = b.conv("input", 4, 3, 1, w_bits=8)
    x = b.conv(b.dw(b.conv(x, 16), dilation=2), 6)
    dmap = b.conv(x, 1, 1, 2, 0, relu="relu", lo_hi=(0, 2))
    y = b.conv(x, 12)
    bias, m, s = b._requant(12, 9, 4, False)
    z = b._out("sq", (12, 4, 4), True)
    b.layers.append(Layer("sq", "square_deform_dw", [y, dmap], [z], {"stride": 2, "d_max": 2, "w_bits": 4,
                                                                     "lo": -128, "hi": 127},
                          {"weight": b.rng.integers(-7, 8, (12, 1, 3, 3)), "bias": bias, "M": m, "S": s}))
    graph = b.graph({"out": b.conv(z, 4)})
    program = compile(graph, cfg, reuse_buffers=False, fuse="always")
    assert program.cycles["fused_chains"] == 2
    n = program.n_descriptors
    fields = unpack_array(descriptor_layout(cfg), program.image[:n * DESCRIPTOR_BYTES].reshape(n, -1))
    assert fields["dst"]["onchip"].sum() >= 8 and fields["band_top"].max() == 2
    image = np.random.default_rng(5).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    run = run_compiled(cfg, program, image, seed=5)
    count, problems = check_compiled(graph, program, image, run)
    assert not problems, "\n".join(problems[:10])
    assert count == len(graph.tensors) - 4


@pytest.mark.slow  # ~1-4 min of simulation (343k cycles at 3-20k cycles/s)
def test_shipped_tree_model_at_32x32_every_tensor_bit_exact_on_a_held_out_view():
    from convforge.models.data import get_dataset
    from convforge.models.quant.export import export_qgraph
    from convforge.models.train.checkpoint import load_checkpoint
    from convforge.models.train.inference import qat_model
    from convforge.models.train.zoo import CODENET_NAME, get_model

    path = get_model(CODENET_NAME).checkpoint
    graph = export_qgraph(qat_model(load_checkpoint(path), path).eval(), (32, 32))
    cfg = ACCEL_TEST_CONFIG
    program = compile(graph, cfg, reuse_buffers=False)
    image = get_dataset("trees:test", input_size=32)[0].image
    run = run_compiled(cfg, program, image, seed=32, pause_prob=0.05)
    count, problems = check_compiled(graph, program, image, run)
    assert not problems, "\n".join(problems[:10])
    assert count == len(graph.tensors) - 2 * program.cycles["fused_chains"] > 100
