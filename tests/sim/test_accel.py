"""The accelerator top (CSR + controller + DMA + units) runs whole Programs in cocotb:
AxiLiteMaster on the CSRs, AxiRam as DDR, random pauses on all ten channels; bit-exact with
the emulator, every fault code it can raise provoked once, soft reset recovers."""

import random

from convforge.sim.regress_accel import (
    ACCEL_TEST_CONFIG,
    EngineRun,
    check_run,
    fault_cases,
    random_program,
    run_engine,
)


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
