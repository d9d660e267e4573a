"""The Pascal VOC detection metric, as py-faster-rcnn's ``voc_eval`` computes it.

Per class:

1. All detections of the class over all images are sorted by score, highest first
   (a stable sort: equal scores keep their input order).
2. Each detection is compared with the class's ground-truth boxes *of its image*
   (difficult ones included) by IoU with the VOC "+1" pixel rule
   (``area = (x2 - x1 + 1) * (y2 - y1 + 1)`` on inclusive pixel indices). Let ``j`` be
   the best-overlapping box (first on ties) and ``ovmax`` its IoU.
3. If ``ovmax > iou_thresh`` (strictly): a difficult ``j`` makes the detection neither a
   true nor a false positive; an unclaimed ``j`` makes it a true positive and claims
   ``j``; a claimed ``j`` makes it a false positive (duplicate). Otherwise it is a false
   positive (also when the image has no box of the class).
4. ``rec = cumsum(tp) / npos`` with ``npos`` the number of non-difficult boxes;
   ``prec = cumsum(tp) / max(cumsum(tp) + cumsum(fp), eps)`` (py-faster-rcnn later
   versions; the original divides by zero when the first detection hits a difficult box).
5. AP: VOC2007 11-point interpolation (default) or the VOC2010+ area under the
   monotone precision envelope.

A class with no non-difficult ground truth has an undefined AP (NaN) and is left out of
the mean. Boxes given to :func:`voc_eval` are inclusive pixel indices as in VOC files;
:func:`evaluate_samples` takes the project's pixel-edge boxes and converts them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from convforge.errors import DatasetError

from ..data.sample import Sample, edges_to_inclusive
from .decode import Detections


@dataclass
class GroundTruth:
    """The ground truth of one image for :func:`voc_eval`.

    Attributes:
        boxes: ``(n, 4)`` inclusive pixel indices ``x1, y1, x2, y2`` (VOC convention).
        labels: ``(n,)`` int class indices.
        difficult: ``(n,)`` bool.
    """

    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


@dataclass
class VocResult:
    """The metric's outcome.

    Attributes:
        ap: ``(C,)`` AP per class in ``[0, 1]``; NaN where a class has no non-difficult box.
        mean_ap: mean of the defined per-class APs (NaN if none is defined).
        rec, prec: per class, the recall and precision after each of the class's
            detections in score order (empty arrays for a class without detections).
        npos: ``(C,)`` number of non-difficult ground-truth boxes per class.
        iou_thresh: the IoU a match must exceed.
        use_07_metric: True for the 11-point AP, False for the area under the curve.
    """

    ap: np.ndarray
    mean_ap: float
    rec: list[np.ndarray]
    prec: list[np.ndarray]
    npos: np.ndarray
    iou_thresh: float
    use_07_metric: bool


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = True) -> float:
    """AP from a recall/precision curve.

    Args:
        rec, prec: recall and precision after each detection, in score order.
        use_07_metric: VOC2007 11-point AP: the mean over ``t in np.arange(0, 1.1, 0.1)``
            of the best precision at recall ``>= t`` (0 if none). Those thresholds are the
            float values that ``np.arange`` yields, as in the reference code, so e.g. a
            recall of exactly ``0.3`` does not reach the threshold ``0.30000000000000004``.
            Otherwise (VOC2010+): the area under the precision envelope
            ``p(r) = max(prec[rec >= r])`` over recall ``0..1``.
    """
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            reached = rec >= t
            ap += (float(np.max(prec[reached])) if reached.any() else 0.0) / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    change = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


def iou_voc(box: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of one box with ``(n, 4)`` boxes, inclusive pixel indices (the "+1" rule)."""
    iw = np.maximum(np.minimum(gt[:, 2], box[2]) - np.maximum(gt[:, 0], box[0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(gt[:, 3], box[3]) - np.maximum(gt[:, 1], box[1]) + 1.0, 0.0)
    inter = iw * ih
    union = (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0) + (gt[:, 2] - gt[:, 0] + 1.0) * (
        gt[:, 3] - gt[:, 1] + 1.0
    ) - inter
    return inter / union


def voc_eval(
    detections: Mapping[str, Detections],
    ground_truths: Mapping[str, GroundTruth],
    iou_thresh: float = 0.5,
    use_07_metric: bool = True,
    num_classes: int | None = None,
) -> VocResult:
    """The VOC detection metric over a set of images.

    Args:
        detections: image id -> :class:`~convforge.models.eval.decode.Detections` (boxes as
            inclusive pixel indices, like the ground truth). Every id must be in
            ``ground_truths``; images without an entry have no detections.
        ground_truths: image id -> :class:`GroundTruth`; every evaluated image, including
            images without objects.
        iou_thresh: a match needs IoU strictly above this.
        use_07_metric: 11-point AP (VOC2007) if True, area under the curve otherwise.
        num_classes: number of classes; default: one more than the largest label seen.

    Returns:
        A :class:`VocResult`.
    """
    unknown = sorted(set(detections) - set(ground_truths))
    if unknown:
        raise DatasetError(f"detections for images without ground truth: {unknown[:5]}")
    if num_classes is None:
        seen = [np.asarray(g.labels).reshape(-1) for g in ground_truths.values()]
        seen += [np.asarray(d.classes).reshape(-1) for d in detections.values()]
        labels = np.concatenate(seen) if seen else np.zeros(0, np.int64)
        num_classes = int(labels.max()) + 1 if labels.size else 0
    aps = np.full(num_classes, np.nan)
    npos_all = np.zeros(num_classes, dtype=np.int64)
    recs, precs = [], []
    for c in range(num_classes):
        gt_boxes, gt_hard, claimed = {}, {}, {}
        npos = 0
        for image_id, g in ground_truths.items():
            sel = np.asarray(g.labels).reshape(-1) == c
            gt_boxes[image_id] = np.asarray(g.boxes, dtype=np.float64).reshape(-1, 4)[sel]
            gt_hard[image_id] = np.asarray(g.difficult, dtype=bool).reshape(-1)[sel]
            claimed[image_id] = np.zeros(int(sel.sum()), dtype=bool)
            npos += int((~gt_hard[image_id]).sum())
        ids, scores, boxes = [], [], []
        for image_id, d in detections.items():
            sel = np.asarray(d.classes).reshape(-1) == c
            ids.extend([image_id] * int(sel.sum()))
            scores.append(np.asarray(d.scores, dtype=np.float64).reshape(-1)[sel])
            boxes.append(np.asarray(d.boxes, dtype=np.float64).reshape(-1, 4)[sel])
        scores_c = np.concatenate(scores) if scores else np.zeros(0)
        boxes_c = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        order = np.argsort(-scores_c, kind="stable")
        tp = np.zeros(len(order))
        fp = np.zeros(len(order))
        for k, d in enumerate(order):
            gt = gt_boxes[ids[d]]
            ovmax, jmax = -np.inf, -1
            if len(gt):
                overlaps = iou_voc(boxes_c[d], gt)
                jmax = int(np.argmax(overlaps))
                ovmax = float(overlaps[jmax])
            if ovmax > iou_thresh:
                if not gt_hard[ids[d]][jmax]:
                    if not claimed[ids[d]][jmax]:
                        tp[k] = 1.0
                        claimed[ids[d]][jmax] = True
                    else:
                        fp[k] = 1.0
            else:
                fp[k] = 1.0
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos if npos else np.zeros_like(tp)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        recs.append(rec)
        precs.append(prec)
        npos_all[c] = npos
        if npos:
            aps[c] = voc_ap(rec, prec, use_07_metric)
    defined = aps[~np.isnan(aps)]
    mean_ap = float(defined.mean()) if defined.size else float("nan")
    return VocResult(aps, mean_ap, recs, precs, npos_all, float(iou_thresh), bool(use_07_metric))


def evaluate_samples(
    detections: Mapping[str, Detections],
    samples: Iterable[Sample],
    num_classes: int,
    iou_thresh: float = 0.5,
    use_07_metric: bool = True,
) -> VocResult:
    """:func:`voc_eval` on the project's pixel-edge boxes (network input pixels).

    Args:
        detections: ``sample.image_id`` -> detections from :mod:`~convforge.models.eval.decode`.
        samples: the evaluated samples (e.g. ``dataset.annotations(i)`` for every ``i``);
            their ids must be unique.
        num_classes: the dataset's number of classes.
        iou_thresh, use_07_metric: as for :func:`voc_eval`.

    Ground truth and detections both go through :func:`edges_to_inclusive`, which makes
    the "+1" IoU equal to the continuous IoU of the edge boxes; that IoU does not change
    under the letterbox scaling, so the result equals VOC's own evaluation in original
    image coordinates.
    """
    gts: dict[str, GroundTruth] = {}
    for s in samples:
        if s.image_id in gts:
            raise DatasetError(f"two samples share the image id {s.image_id!r}")
        gts[s.image_id] = GroundTruth(edges_to_inclusive(s.boxes), s.labels, s.difficult)
    dets = {
        k: Detections(edges_to_inclusive(d.boxes), np.asarray(d.scores), np.asarray(d.classes))
        for k, d in detections.items()
    }
    return voc_eval(dets, gts, iou_thresh=iou_thresh, use_07_metric=use_07_metric, num_classes=num_classes)
