"""The detectors shipped with convforge (trained on aerial tree crowns), by name.

Files live in ``models/zoo/`` (package data of ``convforge.models``): for a model
``<name>``, ``<name>.pt`` (the W4A8 QAT checkpoint with the float weights it started from),
``<name>.json`` + ``<name>.npz`` (its exported QGraph) and ``<name>.md`` (model card; the
CoDeNet reference's card is ``MODEL_CARD.md``). The API for tools (``demo``, ``eval``,
``detect``)::

    default_model()        the model a tool uses when the user names none
    get_model(name)        a shipped model by name (ConfigError listing the names otherwise)
    model_names()          every shipped name, the default first
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convforge.errors import CheckpointError, ConfigError

#: The CoDeNet reference (ShuffleNetV2 backbone): the network of the CoDeNet paper.
CODENET_NAME = "codenet_trees_w4a8"
#: MobileNetV2 (ImageNet initialisation) + CoDeNet decoder + CenterNet heads.
MBV2_NAME = "mbv2_trees_w4a8"
#: What tools use when no model is named. The MobileNetV2 model becomes the default once it
#: meets issue 12's bar (int AP50 >= 0.30 on trees:test); today it scores 0.244 (model card
#: mbv2_trees_w4a8.md), 2.3x the CoDeNet reference's 0.106.
DEFAULT_NAME = CODENET_NAME
#: Backwards-compatible alias of :data:`DEFAULT_NAME`.
SHIPPED_NAME = DEFAULT_NAME

_DESCRIPTIONS = {
    MBV2_NAME: "MobileNetV2 1.0 (ImageNet init, stride-16 backbone) + square-deformable decoder, W4A8",
    CODENET_NAME: "CoDeNet reference (ShuffleNetV2 x0.25, config 'trees'), W4A8",
}
_CARDS = {MBV2_NAME: f"{MBV2_NAME}.md", CODENET_NAME: "MODEL_CARD.md"}


def zoo_dir() -> Path:
    """The directory holding the shipped model files."""
    return Path(__file__).resolve().parent.parent / "zoo"


@dataclass(frozen=True)
class ZooModel:
    """A shipped detector: its name, a one-line description and its files."""

    name: str
    description: str

    def _file(self, suffix: str, what: str, fix: str) -> Path:
        path = zoo_dir() / f"{self.name}{suffix}"
        if not path.is_file():
            raise CheckpointError(
                f"{path}: the shipped {what} of {self.name!r} is missing from this installation; "
                f"reinstall convforge or {fix}"
            )
        return path

    @property
    def checkpoint(self) -> Path:
        """The W4A8 (QAT) checkpoint; CheckpointError if missing."""
        return self._file(".pt", "checkpoint", "pass --checkpoint with a file from `convforge train`")

    @property
    def qgraph(self) -> Path:
        """The QGraph's ``.json`` (its ``.npz`` sits beside it); CheckpointError if missing."""
        return self._file(".json", "QGraph", "export one with `convforge train --phase export`")

    @property
    def card(self) -> Path:
        """The model card (Markdown); CheckpointError if missing."""
        path = zoo_dir() / _CARDS.get(self.name, f"{self.name}.md")
        if not path.is_file():
            raise CheckpointError(f"{path}: the model card of {self.name!r} is missing; reinstall convforge")
        return path


def model_names() -> list[str]:
    """Names of the shipped models, the default first."""
    return [DEFAULT_NAME, *(n for n in _DESCRIPTIONS if n != DEFAULT_NAME)]


def get_model(name: str) -> ZooModel:
    """A shipped model by name.

    Raises:
        ConfigError: no shipped model has that name (the message lists them).
    """
    if name not in _DESCRIPTIONS:
        raise ConfigError(f"no shipped model named {name!r}; choose one of {', '.join(model_names())}")
    return ZooModel(name, _DESCRIPTIONS[name])


def default_model() -> ZooModel:
    """The model tools use when none is named (:data:`DEFAULT_NAME`)."""
    return get_model(DEFAULT_NAME)


def default_checkpoint() -> Path:
    """Path of the default model's W4A8 (QAT) checkpoint; CheckpointError if it is missing."""
    return default_model().checkpoint


def default_qgraph() -> Path:
    """Path of the default model's QGraph ``.json`` (its ``.npz`` sits beside it)."""
    return default_model().qgraph


def ship_model(
    run_dir: str | Path, dest: str | Path | None = None, name: str = DEFAULT_NAME, *, compact: bool = False
) -> tuple[Path, Path]:
    """Copy a finished run's ``model.pt`` and QGraph into the zoo under ``name``.

    The checkpoint is rewritten to name its QGraph ``<name>.json``; the QGraph is saved
    again under the new name (its ``.json`` records its ``.npz`` file name and checksum).

    Args:
        run_dir: a ``convforge train`` output directory (``model.pt`` + its QGraph).
        dest: the zoo directory (default :func:`zoo_dir`).
        name: the shipped model's name.
        compact: halve the checkpoint for networks whose float32 weights pass the zoo's
            5 MB limit (issue 12): keep only the QAT weights (no ``float_state_dict``, so
            ``--backend float`` needs the run's ``float.pt``) and store every convolution
            weight (parameters of 2 or more dimensions) as float16; BN statistics, biases
            and the activation observers stay float32. The QGraph is then exported again
            from the rounded weights, so checkpoint and QGraph describe one network
            exactly (a rounded weight may cross a quantisation step).

    Returns:
        ``(checkpoint path, QGraph .json path)``.
    """
    from convforge.models.quant.export import export_qgraph
    from convforge.models.quant.qgraph import QGraph
    from convforge.models.train.checkpoint import load_checkpoint, load_state, model_from_checkpoint, save_checkpoint

    run_dir = Path(run_dir)
    dest = Path(dest) if dest is not None else zoo_dir()
    doc = load_checkpoint(run_dir / "model.pt")
    graph = QGraph.load(run_dir / str(doc.get("qgraph", "model.json")))
    doc = {k: v for k, v in doc.items() if k not in ("format", "version", "optimizer")}
    if compact:
        doc.pop("float_state_dict", None)
        model = model_from_checkpoint(doc, run_dir / "model.pt").eval()
        params = {n for n, p in model.named_parameters() if p.dim() >= 2}
        doc["state_dict"] = {k: v.half() if k in params and v.is_floating_point() else v
                             for k, v in doc["state_dict"].items()}
        load_state(model, doc["state_dict"], run_dir / "model.pt")  # the rounded weights
        _, height, width = graph.tensors[graph.input].shape
        graph = export_qgraph(model, (height, width), dict(graph.meta))
    json_path, _ = graph.save(dest / name)
    doc["qgraph"] = json_path.name
    ckpt = save_checkpoint(dest / f"{name}.pt", doc)
    return ckpt, json_path
