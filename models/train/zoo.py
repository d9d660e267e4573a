"""The detector shipped with convforge: a W4A8 CoDeNet trained on aerial tree crowns.

Files live in ``models/zoo/`` (package data of ``convforge.models``); ``MODEL_CARD.md``
beside them says how they were trained and how well they detect.
"""

from __future__ import annotations

from pathlib import Path

from convforge.errors import CheckpointError

#: Base name of the shipped files: ``<name>.pt`` (QAT checkpoint), ``<name>.json`` +
#: ``<name>.npz`` (exported QGraph).
SHIPPED_NAME = "codenet_trees_w4a8"


def zoo_dir() -> Path:
    """The directory holding the shipped model files."""
    return Path(__file__).resolve().parent.parent / "zoo"


def default_checkpoint() -> Path:
    """Path of the shipped W4A8 (QAT) checkpoint; CheckpointError if it is missing."""
    path = zoo_dir() / f"{SHIPPED_NAME}.pt"
    if not path.is_file():
        raise CheckpointError(
            f"{path}: the shipped checkpoint is missing from this installation; reinstall "
            "convforge or pass --checkpoint with a file from `convforge train`"
        )
    return path


def default_qgraph() -> Path:
    """Path of the shipped QGraph's ``.json`` (its ``.npz`` sits beside it)."""
    path = zoo_dir() / f"{SHIPPED_NAME}.json"
    if not path.is_file():
        raise CheckpointError(
            f"{path}: the shipped QGraph is missing from this installation; reinstall "
            "convforge or export one with `convforge train --phase export`"
        )
    return path
