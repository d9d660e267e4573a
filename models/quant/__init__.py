"""Quantisation: integer primitives, the QGraph, the integer executor, QAT and export.

``prepare_qat``, ``calibrate``, ``export_qgraph`` and ``qat_activations`` are importable from
here; they load lazily so that ``convforge.models.quant.intops`` stays light.
"""

from __future__ import annotations

_LAZY = {
    "QATConfig": "convforge.models.quant.qat",
    "prepare_qat": "convforge.models.quant.qat",
    "calibrate": "convforge.models.quant.qat",
    "is_quantized": "convforge.models.quant.qat",
    "freeze_observers": "convforge.models.quant.qat",
    "export_qgraph": "convforge.models.quant.export",
    "qat_activations": "convforge.models.quant.export",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'convforge.models.quant' has no attribute {name!r}")
