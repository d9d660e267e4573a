"""The one sample type every dataset yields, and the box geometry shared by all of them.

Coordinate convention (the whole of ``convforge.models.data`` and ``convforge.models.eval``):
boxes are ``x1, y1, x2, y2`` in **continuous, 0-based pixel-edge coordinates** of the image
they belong to: pixel ``(i, j)`` (row ``i``, column ``j``) covers ``[j, j+1) x [i, i+1)``, so
a box covering columns ``a..b`` inclusive has ``x1 = a`` and ``x2 = b + 1`` and its width
``x2 - x1`` is the number of pixels it covers. Pascal VOC XML stores 1-based inclusive pixel
indices, so ``x1 = xmin - 1``, ``y1 = ymin - 1``, ``x2 = xmax``, ``y2 = ymax``; the DeepForest
annotations are already 0-based edges (``xmax`` reaches the image width) and are used as
they are. The VOC metric's "+1" area rule (:mod:`convforge.models.eval.voc`) is the same
rule on inclusive indices; :func:`edges_to_inclusive` converts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: A clipped box is kept only if at least this fraction of its area stays visible ...
MIN_VISIBLE_FRACTION = 0.4
#: ... and both clipped sides are at least this many pixels.
MIN_SIDE_PX = 3.0


@dataclass
class Sample:
    """One network input with its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        boxes: ``(n, 4)`` float32 ``x1, y1, x2, y2`` in pixel-edge coordinates of ``image``.
        labels: ``(n,)`` int64 class indices into the dataset's ``class_names``.
        difficult: ``(n,)`` bool; difficult boxes are ignored by the VOC metric (neither a
            hit nor a miss) and left out of the CenterNet targets.
        image_id: unique name of this sample (``"000005"`` for VOC, ``"OSBS_029@0_144"``
            for a tile whose top-left corner is source pixel ``x=0, y=144``).
        scale: ``(sx, sy)`` network pixels per source-image pixel.
        origin: ``(x0, y0)`` source-image position of the network image's top-left corner,
            in source pixels: ``source = origin + network / scale``.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    image_id: str
    scale: tuple[float, float] = (1.0, 1.0)
    origin: tuple[float, float] = field(default=(0.0, 0.0))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``(n, 4)`` edge-coordinate boxes in square pixels (0 for empty boxes)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = np.clip(boxes[:, 2] - boxes[:, 0], 0, None)
    h = np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return w * h


def clip_and_filter(
    boxes: np.ndarray,
    width: float,
    height: float,
    min_visible: float = MIN_VISIBLE_FRACTION,
    min_side: float = MIN_SIDE_PX,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip boxes to the image ``[0, width] x [0, height]`` and classify what is left.

    Args:
        boxes: ``(n, 4)`` edge-coordinate boxes, possibly reaching outside the image.
        width, height: image size in pixels.
        min_visible: the fraction of a box's own (unclipped) area that must remain.
        min_side: the smallest clipped width and height in pixels.

    Returns:
        ``(clipped, good, visible)``: the clipped ``(n, 4)`` float32 boxes; ``good`` (bool,
        n) marks boxes that pass both thresholds ("slivers" fail); ``visible`` (bool, n)
        marks boxes with any area inside the image at all.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    clipped = boxes.copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], 0, height)
    full = box_areas(boxes)
    kept = box_areas(clipped)
    w = clipped[:, 2] - clipped[:, 0]
    h = clipped[:, 3] - clipped[:, 1]
    visible = kept > 0
    good = visible & (kept >= min_visible * full) & (w >= min_side) & (h >= min_side)
    return clipped, good, visible


def edges_to_inclusive(boxes: np.ndarray) -> np.ndarray:
    """Pixel-edge boxes to VOC's inclusive pixel indices (``x2 - 1, y2 - 1``), float64.

    With this conversion the VOC "+1" IoU equals the plain continuous IoU of the edge
    boxes, which is invariant to (per-axis) scaling: evaluating in network coordinates
    gives the same overlaps as evaluating in the original image.
    """
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, 2:] -= 1.0
    return out
