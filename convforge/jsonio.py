"""JSON for the project's file formats (QGraph, Program header): NumPy scalars and arrays."""

from __future__ import annotations

from typing import Any

import numpy as np


def numpy_default(obj: Any) -> Any:
    """``json.dumps(..., default=numpy_default)``: NumPy integers -> int, floats -> float,
    arrays -> nested lists.

    Raises:
        TypeError: any other type (``json`` reports it with the offending object).
    """
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
