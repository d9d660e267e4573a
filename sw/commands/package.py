"""``convforge package``: the PYNQ overlay package (a wheel) of a board."""

from __future__ import annotations

import argparse
from pathlib import Path

from convforge.sw.commands.rtl import add_board_config_arguments, resolve_config

NAME = "package"
HELP = "make the PYNQ overlay wheel of a board: bitstream (or placeholder), compiled Program, driver, notebook"
DESCRIPTION = (
    "Build the pip-installable PYNQ overlay package convforge-overlay-<board> into --out: the "
    "convforge.bit/.hwh of --build DIR (the output of `convforge build`; without --build a "
    "NOT_BUILT.txt placeholder names the build command), the shipped model compiled for the "
    "board's EngineConfig (or --config; --qgraph NAME=FILE compiles other QGraphs instead), the "
    "notebook and a sample image. PYNQ finds them through the entry points pynq.overlays "
    "(Overlay('convforge.bit')) and pynq.notebooks (`pynq get-notebooks convforge`). Built "
    "offline with pip wheel --no-build-isolation. On the board: pip install the wheel (and convforge)."
)


def _named_qgraph(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=QGRAPH.json (e.g. trees=model.json)")
    return name, Path(path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_board_config_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="directory the wheel is written to")
    p.add_argument("--build", type=Path, help="output directory of `convforge build` (convforge.bit + .hwh)")
    p.add_argument("--qgraph", type=_named_qgraph, action="append", metavar="NAME=FILE",
                   help="compile this QGraph as NAME.cfprog (repeatable; default: the shipped model as trees)")
    p.add_argument("--image", type=Path, help="sample image for the notebook (default: a deepforest aerial tile)")


def run(args: argparse.Namespace) -> int:
    from convforge.hw.boards import get_board
    from convforge.sw.overlay_package import package

    board = get_board(args.board)
    cfg = resolve_config(args.board, args.config)
    pkg = package(board, cfg, args.out, build_dir=args.build,
                  qgraphs=dict(args.qgraph) if args.qgraph else None, image=args.image)
    print(f"wrote {pkg.wheel} (Programs {', '.join(pkg.programs)}; "
          f"{'bitstream from ' + str(args.build) if pkg.built else 'NO bitstream: placeholder NOT_BUILT.txt'})")
    print("on the board: pip install convforge (--no-deps: the driver needs only numpy and pynq) and "
          f"pip install {pkg.wheel.name}; then `pynq get-notebooks convforge`")
    return 0
