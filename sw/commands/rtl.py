"""``convforge rtl``: write the Verilog of every RTL unit and a manifest."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from convforge import __version__
from convforge.hw.config import EngineConfig

NAME = "rtl"
HELP = "generate the Verilog of every RTL unit (+ manifest.json)"
DESCRIPTION = (
    "Elaborate every unit of the accelerator (hw/rtl/units.py) for a board's default "
    "EngineConfig, or for --config FILE.toml, and write DIR/<unit>.v plus DIR/manifest.json "
    "(config, units, files, sha256)."
)


def add_board_config_arguments(p: argparse.ArgumentParser) -> None:
    """``--board`` / ``--config`` shared by the hardware commands."""
    p.add_argument("--board", default="ultra96v2", help="board profile (hw/boards)")
    p.add_argument("--config", type=Path, help="EngineConfig TOML file (overrides the board's)")


def resolve_config(board: str, config: Path | None) -> EngineConfig:
    """The EngineConfig of ``--config`` if given, else the board's default engine."""
    from convforge.hw.boards import get_board

    b = get_board(board)
    return EngineConfig.from_toml(config) if config is not None else b.engine


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_board_config_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--unit", action="append", help="only this unit (repeatable); default all")


def write_rtl(cfg: EngineConfig, out: Path, units: list[str] | None = None,
              board: str | None = None) -> dict:
    """Write ``out/<unit>.v`` for each unit and ``out/manifest.json``; return the manifest."""
    from convforge.hw.rtl.emit import emit_verilog
    from convforge.hw.rtl.units import UNITS, get_unit

    names = units or list(UNITS)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"convforge": __version__, "board": board, "config": cfg.to_dict(),
                "units": {}, "files": {}}
    for name in names:
        spec = get_unit(name)
        text = emit_verilog(spec.factory(cfg), name)
        path = out / f"{name}.v"
        path.write_text(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        manifest["units"][name] = {"top": name, "file": path.name, "description": spec.description}
        manifest["files"][path.name] = {"sha256": digest, "bytes": len(text.encode())}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.board, args.config)
    manifest = write_rtl(cfg, args.out, args.unit, board=args.board)
    for fname, info in manifest["files"].items():
        print(f"{args.out / fname}  {info['bytes']:>9} bytes  sha256 {info['sha256'][:16]}")
    print(f"{args.out / 'manifest.json'}  ({len(manifest['units'])} units; {cfg.describe()})")
    return 0
