"""Load what a backend needs from a training checkpoint: a float network, a QAT network,
or a QGraph for the integer reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from convforge.errors import CheckpointError, ConfigError
from convforge.models.quant.qgraph import QGraph
from convforge.models.train.checkpoint import load_checkpoint, load_state, model_from_checkpoint
from convforge.models.train.modelspec import ModelSpec
from convforge.models.train.zoo import default_checkpoint


@dataclass
class Loaded:
    """A backend's target and where it came from.

    Attributes:
        target: ``nn.Module`` (float / qat, eval mode) or :class:`QGraph` (int).
        input_size: the square input side in pixels to evaluate at.
        checkpoint: the checkpoint file.
        qgraph: the QGraph file (int backend, when one was read from disk).
    """

    target: nn.Module | QGraph
    input_size: int
    checkpoint: Path
    qgraph: Path | None = None


def float_model(doc: dict, path: Path) -> nn.Module:
    """The float network of a checkpoint: its own weights for a float checkpoint, the float
    weights the QAT started from (``float_state_dict``) for an inference checkpoint."""
    if doc.get("phase") == "float":
        return model_from_checkpoint(doc, path)
    if "float_state_dict" not in doc:
        raise CheckpointError(
            f"{path}: holds only QAT weights (no float_state_dict); evaluate --backend qat or int, or pass "
            "the float.pt of the same training run"
        )
    spec = ModelSpec.from_dict(doc["model"])
    model = spec.build(quantized=False)
    load_state(model, doc["float_state_dict"], path)
    return model


def qat_model(doc: dict, path: Path) -> nn.Module:
    """The fake-quantised network of a QAT checkpoint."""
    if doc.get("phase") != "qat":
        raise CheckpointError(
            f"{path}: a {doc.get('phase')} checkpoint has no QAT weights; run `convforge train --phase qat` "
            "and pass its qat.pt or model.pt"
        )
    return model_from_checkpoint(doc, path)


def load_for_backend(
    checkpoint: str | Path | None,
    backend: str,
    input_size: int | None = None,
    qgraph: str | Path | None = None,
) -> Loaded:
    """Load the target of ``backend`` (``float``, ``qat`` or ``int``).

    Args:
        checkpoint: a checkpoint from ``convforge train``; None for the shipped model.
        backend: ``float``, ``qat`` or ``int``.
        input_size: evaluation input side in pixels; default: the checkpoint's export size
            (or the size of the QGraph given).
        qgraph: for ``int``, a QGraph file to use instead of the one exported beside the
            checkpoint (which is used only when ``input_size`` is None or its own). Without
            either, the QAT checkpoint is exported at ``input_size``.

    Raises:
        CheckpointError: missing/corrupt checkpoint, or it lacks what the backend needs.
        ConfigError: the QGraph's input size disagrees with ``input_size``.
    """
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    doc = load_checkpoint(path)
    train_cfg = doc.get("train") or {}
    size = input_size or int(train_cfg.get("export_size") or doc["model"]["config"]["input_size"][0])
    if backend == "float":
        return Loaded(float_model(doc, path).eval(), size, path)
    if backend == "qat":
        return Loaded(qat_model(doc, path).eval(), size, path)
    if backend != "int":
        raise ConfigError(f"unknown backend {backend!r}; choose float, qat or int")
    graph_path = Path(qgraph) if qgraph is not None else None
    graph = None
    if graph_path is None and doc.get("qgraph"):
        beside = path.parent / str(doc["qgraph"])
        if beside.is_file():
            graph = QGraph.load(beside)
            _, h, w = graph.tensors[graph.input].shape
            # the QGraph exported beside the checkpoint, unless another input size is asked for
            graph_path = beside if input_size is None or (h, w) == (input_size, input_size) else None
    if graph_path is not None:
        graph = QGraph.load(graph_path) if graph is None else graph
        _, h, w = graph.tensors[graph.input].shape
        if input_size is not None and (h, w) != (input_size, input_size):
            raise ConfigError(
                f"{graph_path} takes {h}x{w} inputs, not {input_size}x{input_size}; drop --input-size, or "
                "omit --qgraph to export the checkpoint at that size"
            )
        if h != w:
            raise ConfigError(f"{graph_path} takes {h}x{w} inputs; evaluation uses square views")
        return Loaded(graph, h, path, graph_path)
    from convforge.models.quant.export import export_qgraph

    model = qat_model(doc, path).eval()
    return Loaded(export_qgraph(model, (size, size), {"checkpoint": path.name}), size, path)
