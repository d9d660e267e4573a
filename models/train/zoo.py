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


def _shipped(suffix: str, what: str, fix: str) -> Path:
    path = zoo_dir() / f"{SHIPPED_NAME}{suffix}"
    if not path.is_file():
        raise CheckpointError(
            f"{path}: the shipped {what} is missing from this installation; reinstall convforge or {fix}"
        )
    return path


def default_checkpoint() -> Path:
    """Path of the shipped W4A8 (QAT) checkpoint; CheckpointError if it is missing."""
    return _shipped(".pt", "checkpoint", "pass --checkpoint with a file from `convforge train`")


def default_qgraph() -> Path:
    """Path of the shipped QGraph's ``.json`` (its ``.npz`` sits beside it)."""
    return _shipped(".json", "QGraph", "export one with `convforge train --phase export`")


def ship_model(run_dir: str | Path, dest: str | Path | None = None, name: str = SHIPPED_NAME) -> tuple[Path, Path]:
    """Copy a finished run's ``model.pt`` and QGraph into the zoo under ``name``.

    The checkpoint is rewritten to name its QGraph ``<name>.json``; the QGraph is saved
    again under the new name (its ``.json`` records its ``.npz`` file name and checksum).

    Returns:
        ``(checkpoint path, QGraph .json path)``.
    """
    from convforge.models.quant.qgraph import QGraph
    from convforge.models.train.checkpoint import load_checkpoint, save_checkpoint

    run_dir = Path(run_dir)
    dest = Path(dest) if dest is not None else zoo_dir()
    doc = load_checkpoint(run_dir / "model.pt")
    graph = QGraph.load(run_dir / str(doc.get("qgraph", "model.json")))
    json_path, _ = graph.save(dest / name)
    doc = {k: v for k, v in doc.items() if k not in ("format", "version", "optimizer")}
    doc["qgraph"] = json_path.name
    ckpt = save_checkpoint(dest / f"{name}.pt", doc)
    return ckpt, json_path
