"""The ``convforge`` command line.

Each subcommand lives in its own module under :mod:`convforge.sw.commands` and exposes
``NAME``, ``HELP`` and ``add_arguments(parser)`` / ``run(args) -> int``. Modules are
discovered, so adding a command never means editing this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from convforge import __version__
from convforge.errors import ConvforgeError


def _command_modules():
    from convforge.sw import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"convforge.sw.commands.{info.name}")


class _Parser(argparse.ArgumentParser):
    """One line on a bad argument (``convforge CMD: error: argument --x: ...``), exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="convforge",
        description=(
            "convforge: quantized deformable detectors (CoDeNet) from PyTorch to verified "
            "FPGA hardware. Every subcommand has its own --help."
        ),
    )
    parser.add_argument("--version", action="version", version=f"convforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except ConvforgeError as exc:
        print(f"convforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"convforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
