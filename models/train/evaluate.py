"""Detection quality of a float, QAT or integer (QGraph) CoDeNet on a dataset.

Three backends, one metric (VOC AP at IoU 0.5, :mod:`convforge.models.eval.voc`):

* ``float``: the float network, heads decoded with ``decode_float``;
* ``qat``: the fake-quantised QAT network (what training optimised), ``decode_float``;
* ``int``: the exported QGraph run by the integer reference executor on the raw uint8
  images; the integer heads are decoded with ``decode_int`` (INTEGER_SPEC §5).

Boxes are compared in network input pixels; the dataset's views (tiles, letterbox) keep
IoUs identical to those in source pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from convforge.errors import ShapeError
from convforge.models.data import DetectionDataset, Sample, images_to_tensor
from convforge.models.eval.decode import Detections, decode_float, decode_int
from convforge.models.eval.voc import VocResult, evaluate_samples
from convforge.models.quant.qgraph import QGraph

BACKENDS = ("float", "qat", "int")
#: Detections kept per image (CenterNet's K).
TOP_K = 100


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate`.

    Attributes:
        ap50: mean AP over classes at IoU 0.5 (11-point VOC07, or area under the curve).
        voc: the full metric (per-class AP, precision/recall curves).
        detections: image id -> detections (network input pixels, best first).
        samples: the evaluated samples' ground truth (images not loaded).
        backend: ``float``, ``qat`` or ``int``.
    """

    ap50: float
    voc: VocResult
    detections: dict[str, Detections]
    samples: list[Sample]
    backend: str
    extra: dict = field(default_factory=dict)

    def summary(self, score_thresh: float = 0.3) -> dict:
        """JSON-ready figures: AP50, images, ground-truth boxes, detections kept (all top-K
        and those scoring at least ``score_thresh``)."""
        dets = self.detections.values()
        return {
            "ap50": round(float(self.ap50), 4),
            "backend": self.backend,
            "images": len(self.samples),
            "gt_boxes": int(sum(int((~s.difficult).sum()) for s in self.samples)),
            "detections": int(sum(len(d) for d in dets)),
            f"detections_score_ge_{score_thresh:g}": int(sum(int((d.scores >= score_thresh).sum()) for d in dets)),
            "ap_per_class": [None if np.isnan(a) else round(float(a), 4) for a in self.voc.ap],
            "metric": "VOC AUC" if not self.voc.use_07_metric else "VOC07 11-point",
            **self.extra,
        }


def _batches(
    dataset: DetectionDataset, batch_size: int, limit: int | None, progress: bool = False, desc: str = "evaluate"
) -> Iterator[list[Sample]]:
    """Lists of up to ``batch_size`` samples of the first ``limit`` views, with a tqdm bar
    over batches when ``progress``."""
    n = len(dataset) if limit is None else min(len(dataset), int(limit))
    starts = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    for start in starts:
        yield [dataset[i] for i in range(start, min(n, start + batch_size))]


def _strip(sample: Sample) -> Sample:
    return Sample(np.zeros((0, 0, 3), np.uint8), sample.boxes, sample.labels, sample.difficult,
                  sample.image_id, sample.scale, sample.origin)  # fmt: skip


def predict_float(
    model: nn.Module,
    dataset: DetectionDataset,
    batch_size: int = 4,
    limit: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[dict[str, Detections], list[Sample]]:
    """Run a float or QAT network (eval mode) over the first ``limit`` views of ``dataset``.

    Returns:
        ``(image id -> detections, samples without their images)``.
    """
    was_training = model.training
    model.eval()
    detections: dict[str, Detections] = {}
    samples: list[Sample] = []
    batches = _batches(dataset, batch_size, limit, progress, "evaluate")
    with torch.no_grad():
        for batch in batches:
            x = images_to_tensor([s.image for s in batch]).to(device)
            out = model(x)
            decoded = decode_float(out["hm"], out["wh"], out["reg"], K=TOP_K)
            for s, d in zip(batch, decoded, strict=True):
                detections[s.image_id] = d
                samples.append(_strip(s))
    model.train(was_training)
    return detections, samples


def head_scales(graph: QGraph) -> dict[str, float]:
    """Real units per LSB of the ``hm``, ``wh`` and ``reg`` output tensors of a QGraph."""
    missing = [h for h in ("hm", "wh", "reg") if h not in graph.outputs]
    if missing:
        raise ShapeError(f"the QGraph has no output head(s) {missing}; it is not a CenterNet detector")
    return {head: graph.tensors[graph.outputs[head]].scale for head in ("hm", "wh", "reg")}


def predict_int(
    graph: QGraph,
    dataset: DetectionDataset,
    batch_size: int = 2,
    limit: int | None = None,
    progress: bool = False,
) -> tuple[dict[str, Detections], list[Sample]]:
    """Run a QGraph with the integer reference executor and decode its integer heads.

    Raises:
        ShapeError: the graph's input size differs from the dataset's views.
    """
    from convforge.models.quant.executor import run_qgraph

    c, h, w = graph.tensors[graph.input].shape
    if (h, w) != (dataset.input_size, dataset.input_size):
        raise ShapeError(
            f"the QGraph takes {h}x{w} inputs but the dataset's views are "
            f"{dataset.input_size}x{dataset.input_size}; pass --input-size {h} or export the model at "
            f"{dataset.input_size}"
        )
    scales = head_scales(graph)
    detections: dict[str, Detections] = {}
    samples: list[Sample] = []
    batches = _batches(dataset, batch_size, limit, progress, "integer reference")
    for batch in batches:
        images = torch.from_numpy(np.stack([s.image for s in batch])).permute(0, 3, 1, 2).contiguous()
        heads = run_qgraph(graph, images)
        decoded = decode_int(heads["hm"], heads["wh"], heads["reg"], scales, K=TOP_K)
        for s, d in zip(batch, decoded, strict=True):
            detections[s.image_id] = d
            samples.append(_strip(s))
    return detections, samples


def score(
    detections: dict[str, Detections],
    samples: list[Sample],
    num_classes: int,
    backend: str,
    auc: bool = False,
) -> EvalResult:
    """VOC AP50 of ``detections`` against ``samples`` (11-point, or area under the curve)."""
    voc = evaluate_samples(detections, samples, num_classes, iou_thresh=0.5, use_07_metric=not auc)
    ap = 0.0 if np.isnan(voc.mean_ap) else float(voc.mean_ap)
    return EvalResult(ap, voc, detections, samples, backend)


def evaluate(
    target: nn.Module | QGraph,
    dataset: DetectionDataset,
    backend: str,
    limit: int | None = None,
    auc: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> EvalResult:
    """AP50 of a network (``float``/``qat``) or a QGraph (``int``) on ``dataset``.

    Args:
        target: an ``nn.Module`` for the float and QAT backends, a :class:`QGraph` for ``int``.
        dataset: deterministic (un-augmented) views.
        backend: one of :data:`BACKENDS` (recorded in the result).
        limit: evaluate only the first ``limit`` views.
        auc: area-under-curve AP instead of VOC07's 11 points.
        device: torch device for the float/QAT network.
        progress: tqdm bar over batches.
    """
    if isinstance(target, QGraph):
        dets, samples = predict_int(target, dataset, limit=limit, progress=progress)
    else:
        dets, samples = predict_float(target, dataset, limit=limit, device=device, progress=progress)
    return score(dets, samples, dataset.num_classes, backend, auc)
