"""``convforge sim``: random bit-exact regressions of the RTL units in cocotb."""

from __future__ import annotations

import argparse
from pathlib import Path

from convforge.sw.argtypes import non_negative_int, positive_int, probability

NAME = "sim"
HELP = "run the RTL units' random bit-exact cocotb regressions"
DESCRIPTION = (
    "Build each RTL unit for Verilator (or Icarus), play K random cases per unit with "
    "random valid gaps and back-pressure, and compare every output integer with the "
    "integer reference (INTEGER_SPEC §7). Uses a small test engine (PE 4x4, 4 lanes) unless "
    "--board/--config is given. Ends with the line 'N passed, M failed'."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unit", default="all", help="unit name (see hw/rtl/units.py) or 'all'")
    p.add_argument("--simulator", default="verilator", choices=["verilator", "icarus"])
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed of the cases and flow control")
    p.add_argument("--cases", type=positive_int, default=20, help="random cases per unit")
    p.add_argument("--board", help="use this board's engine instead of the small test engine")
    p.add_argument("--config", type=Path, help="use this EngineConfig TOML file")
    p.add_argument("--gap", type=probability, default=0.3, help="probability of an input valid gap")
    p.add_argument("--stall", type=probability, default=0.3, help="probability of output back-pressure")


def run(args: argparse.Namespace) -> int:
    from convforge.hw.config import EngineConfig
    from convforge.hw.rtl.units import UNITS, get_unit
    from convforge.sim.regress import TEST_CONFIG, run_unit_regression
    from convforge.sim.tools import ensure_simulator
    from convforge.sw.commands.rtl import resolve_config

    ensure_simulator(args.simulator)
    if args.config is not None:
        cfg = EngineConfig.from_toml(args.config)
    elif args.board is not None:
        cfg = resolve_config(args.board, None)
    else:
        cfg = TEST_CONFIG
    names = [n for n, s in UNITS.items() if s.regression] if args.unit == "all" else [args.unit]
    for n in names:
        get_unit(n)
    print(f"engine: {cfg.describe()}; simulator {args.simulator}; seed {args.seed}", flush=True)
    passed = failed = 0
    for name in names:
        res = run_unit_regression(name, cfg, seed=args.seed, cases=args.cases,
                                  simulator=args.simulator, gap_prob=args.gap,
                                  stall_prob=args.stall)
        print(res.summary(), flush=True)
        passed, failed = passed + res.passed, failed + res.failed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1
