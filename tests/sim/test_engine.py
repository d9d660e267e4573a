"""The accelerator engine (controller + DMA + units) runs whole Programs in cocotb against
cocotbext-axi's AxiRam with random pauses on all five channels: bit-exact with the
emulator, every fault code it can raise provoked once, soft reset recovers."""

import random

from convforge.sim.regress_engine import (
    ENGINE_TEST_CONFIG,
    EngineRun,
    check_run,
    fault_cases,
    random_program,
    run_engine,
)


def test_random_copy_add_maxpool_programs_bit_exact_and_every_fault_flagged():
    cfg = ENGINE_TEST_CONFIG
    rng = random.Random(8)
    runs = []
    for i in range(3):
        image, n = random_program(cfg, rng, layers=4 + i)
        runs.append(EngineRun(f"program{i}", image, n))
    image, n = random_program(cfg, rng, layers=5)
    runs += fault_cases(cfg, image, n, rng)
    runs.append(EngineRun("after_soft_reset", image, n))
    run_engine(cfg, runs, seed=8)
    problems = [p for r in runs for p in check_run(cfg, r)]
    assert not problems, "\n".join(problems)
