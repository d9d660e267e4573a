"""What a cocotb testbench reads from and writes for :func:`convforge.sim.runner.run_testbench`.

Inside the simulator process, :func:`tb_params` returns the ``params`` dict given to
``run_testbench`` and :func:`tb_output_path` names a file in the run directory, where the
host side finds it after the run (``TestbenchResult.run_dir``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from convforge.errors import SimulationError

ENV_PARAMS = "CONVFORGE_TB_PARAMS"
ENV_OUT = "CONVFORGE_TB_OUT"


def tb_params() -> dict[str, Any]:
    """The JSON parameters of this run (``{}`` when run without any)."""
    path = os.environ.get(ENV_PARAMS)
    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SimulationError(f"testbench parameters {path}: unreadable ({exc})") from exc


def tb_output_path(name: str) -> Path:
    """A file ``name`` in this run's directory (the current directory outside a run)."""
    return Path(os.environ.get(ENV_OUT, ".")) / name
