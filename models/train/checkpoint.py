"""Training checkpoints: one file holds everything to rebuild the model and resume.

A checkpoint is a ``torch.save`` of a plain dictionary (loaded with
``weights_only=True``, so no pickled code runs)::

    format       "convforge.checkpoint"
    version      1
    model        {"config": <name or dict of config fields>, "num_classes": int,
                  "overrides": dict, "quant": None | {"w_bits", "a_bits", "first_w_bits"}}
    state_dict   the model's parameters and buffers (QAT scales included)
    optimizer    optimiser state (absent in shipped, inference-only checkpoints)
    phase        "float" | "qat"   the phase the weights come from
    epoch        epochs completed in that phase
    seed         the training seed
    train        the TrainConfig as a dict
    history      per-epoch records (loss terms, validation AP50, wall time)

Every defect (missing file, not a checkpoint, other format version, weights that do not
fit the model the checkpoint describes) is a :class:`~convforge.errors.CheckpointError`
naming the file and the fix.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from convforge.errors import CheckpointError, ConvforgeError

FORMAT_NAME = "convforge.checkpoint"
FORMAT_VERSION = 1
_REQUIRED = ("model", "state_dict", "phase", "epoch")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (see module docstring) atomically to ``path``; return the path.

    The file is written beside its destination and renamed, so an interrupted save never
    leaves a half-written checkpoint behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **payload}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(doc, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, unreadable, not a convforge checkpoint, of
            another format version, or lacks a required entry.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint; train one with `convforge train --out DIR` or omit "
            "--checkpoint to use the shipped model"
        )
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            "the file is corrupt or truncated: re-run `convforge train` (add --resume to continue "
            "from the last good checkpoint in its directory)"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: not a convforge checkpoint (no 'format': {FORMAT_NAME!r}); pass a file "
            "written by `convforge train`"
        )
    if doc.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {doc.get('version')!r}, this convforge reads "
            f"version {FORMAT_VERSION}; retrain with this convforge"
        )
    missing = [key for key in _REQUIRED if key not in doc]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}; retrain with `convforge train`")
    return doc


def model_from_checkpoint(doc: dict[str, Any], path: str | Path = "<checkpoint>") -> torch.nn.Module:
    """Rebuild the network a checkpoint describes and load its weights.

    The float network comes from :func:`convforge.models.nets.build_codenet`; a QAT
    checkpoint is additionally wrapped by :func:`convforge.models.quant.prepare_qat`
    with the bit widths it records, before the state dict is loaded.

    Raises:
        CheckpointError: the weights do not fit the model the checkpoint names
            (another config, another class count, or a float/QAT mismatch).
    """
    from convforge.models.train.modelspec import ModelSpec

    try:
        spec = ModelSpec.from_dict(doc["model"])
        model = spec.build(quantized=doc.get("phase") == "qat" or doc["model"].get("quant") is not None)
    except ConvforgeError as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model ({exc}); retrain with `convforge train`") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: malformed model description {doc.get('model')!r} ({exc!r}); retrain with `convforge train`"
        ) from exc
    load_state(model, doc["state_dict"], path)
    return model


def load_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with a CheckpointError on mismatch."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:3])[:300]
        raise CheckpointError(
            f"{path}: weights do not fit the model ({detail}); the checkpoint belongs to another "
            "model configuration: pass the matching --config/--width or retrain"
        ) from exc
