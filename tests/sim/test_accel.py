"""The accelerator top (CSR + controller + DMA + units) runs whole Programs in cocotb:
AxiLiteMaster on the CSRs, AxiRam as DDR, random pauses on all ten channels; bit-exact with
the emulator, every fault code it can raise provoked once, soft reset recovers."""

import random
import sys
from pathlib import Path

import numpy as np
import pytest

from convforge.sim.regress_accel import (
    ACCEL_TEST_CONFIG,
    EngineRun,
    check_compiled,
    check_run,
    fault_cases,
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
    assert count == len(graph.tensors) > 20


@pytest.mark.slow  # ~4 min of simulation (720k cycles at ~3k cycles/s)
def test_shipped_tree_model_at_32x32_every_tensor_bit_exact_on_a_held_out_view():
    from convforge.models.data import get_dataset
    from convforge.models.quant.export import export_qgraph
    from convforge.models.train.checkpoint import load_checkpoint
    from convforge.models.train.inference import qat_model
    from convforge.models.train.zoo import default_checkpoint

    path = default_checkpoint()
    graph = export_qgraph(qat_model(load_checkpoint(path), path).eval(), (32, 32))
    cfg = ACCEL_TEST_CONFIG
    program = compile(graph, cfg, reuse_buffers=False)
    image = get_dataset("trees:test", input_size=32)[0].image
    run = run_compiled(cfg, program, image, seed=32, pause_prob=0.05)
    count, problems = check_compiled(graph, program, image, run)
    assert not problems, "\n".join(problems[:10])
    assert count == len(graph.tensors) > 100
