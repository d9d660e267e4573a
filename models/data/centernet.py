"""CenterNet training targets (Zhou et al., "Objects as Points", 2019) and batch collation.

For each object with a pixel-edge box ``(x1, y1, x2, y2)`` in network input pixels and
output stride ``down``:

* centre ``c = ((x1 + x2) / 2, (y1 + y2) / 2) / down`` in output-grid units, integer cell
  ``ci = floor(c)``;
* ``hm[label]``: a Gaussian of radius ``gaussian_radius((ceil(h), ceil(w)), 0.7)`` (as
  CenterNet computes it) splatted at ``ci`` with elementwise max;
* ``wh = (w, h) = ((x2 - x1), (y2 - y1)) / down``: box size in **output-grid units**;
* ``reg = c - ci``: the sub-cell offset in ``[0, 1)``;
* ``ind = ci_y * W_out + ci_x``, ``mask = 1``.

Decoding (:mod:`convforge.models.eval.decode`) inverts exactly this.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from convforge.errors import ShapeError

from .sample import Sample


def gaussian_radius(det_size: tuple[float, float], min_overlap: float = 0.7) -> float:
    """CenterNet's ``gaussian_radius``: the smaller of its three quadratic-root bounds.

    Reproduces CenterNet's formula as published (roots divided by 2 rather than ``2a``),
    because the published models were trained with it. ``det_size`` is ``(height, width)``
    in output-grid units.
    """
    height, width = det_size
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def gaussian2d(diameter: int, sigma: float) -> np.ndarray:
    """A ``diameter x diameter`` unnormalised Gaussian, peak 1, tiny values set to 0."""
    m = (diameter - 1) / 2
    y, x = np.ogrid[-m : m + 1, -m : m + 1]
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    g[g < np.finfo(g.dtype).eps * g.max()] = 0
    return g


def draw_umich_gaussian(heatmap: np.ndarray, center: tuple[int, int], radius: int) -> np.ndarray:
    """Max-splat a Gaussian (sigma = diameter / 6) at integer ``center = (x, y)``; in place.

    Args:
        heatmap: ``(H, W)`` float map, modified.
        center: integer cell ``(x, y)``.
        radius: integer radius in cells; the Gaussian spans ``2 * radius + 1`` cells.
    """
    diameter = 2 * radius + 1
    g = gaussian2d(diameter, diameter / 6)
    x, y = center
    height, width = heatmap.shape
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    region = heatmap[y - top : y + bottom, x - left : x + right]
    patch = g[radius - top : radius + bottom, radius - left : radius + right]
    if min(region.shape) > 0 and min(patch.shape) > 0:
        np.maximum(region, patch.astype(heatmap.dtype), out=region)
    return heatmap


class CenterNetTargets:
    """Builds the CenterNet targets of one sample.

    Args:
        num_classes: heatmap channels.
        input_size: network input side in pixels.
        down: output stride (4 for CoDeNet).
        max_objs: slots for objects; objects beyond it are left out (first come first).
        min_overlap: the IoU the Gaussian radius is derived from.
        use_difficult: include difficult boxes (default: leave them out).
    """

    def __init__(
        self,
        num_classes: int,
        input_size: int,
        down: int = 4,
        max_objs: int = 128,
        min_overlap: float = 0.7,
        use_difficult: bool = False,
    ) -> None:
        if input_size % down:
            raise ShapeError(f"input_size {input_size} is not a multiple of the output stride {down}")
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.down = int(down)
        self.out_size = self.input_size // self.down
        self.max_objs = int(max_objs)
        self.min_overlap = float(min_overlap)
        self.use_difficult = use_difficult

    def __call__(
        self, boxes: np.ndarray, labels: np.ndarray, difficult: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Targets for boxes in network input pixels (pixel edges).

        Returns:
            ``hm`` ``(C, S, S)`` float32, ``wh`` ``(M, 2)`` float32 (output-grid units),
            ``reg`` ``(M, 2)`` float32, ``ind`` ``(M,)`` int64, ``mask`` ``(M,)`` float32,
            with ``S = input_size / down`` and ``M = max_objs``.
        """
        s, m = self.out_size, self.max_objs
        hm = np.zeros((self.num_classes, s, s), dtype=np.float32)
        wh = np.zeros((m, 2), dtype=np.float32)
        reg = np.zeros((m, 2), dtype=np.float32)
        ind = np.zeros((m,), dtype=np.int64)
        mask = np.zeros((m,), dtype=np.float32)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if difficult is None or self.use_difficult:
            difficult = np.zeros(len(labels), dtype=bool)
        k = 0
        for box, label, hard in zip(boxes, labels, np.asarray(difficult, dtype=bool), strict=True):
            if hard or k >= m:
                continue
            if not 0 <= label < self.num_classes:
                raise ShapeError(f"label {label} out of range for {self.num_classes} classes")
            b = np.clip(box / self.down, 0, s)
            w, h = b[2] - b[0], b[3] - b[1]
            if w <= 0 or h <= 0:
                continue
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            ix, iy = min(int(cx), s - 1), min(int(cy), s - 1)
            radius = max(0, int(gaussian_radius((math.ceil(h), math.ceil(w)), self.min_overlap)))
            draw_umich_gaussian(hm[label], (ix, iy), radius)
            wh[k] = (w, h)
            reg[k] = (cx - ix, cy - iy)
            ind[k] = iy * s + ix
            mask[k] = 1.0
            k += 1
        return {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "mask": mask}


class Batch(NamedTuple):
    """A collated batch.

    Attributes:
        images: ``(N, 3, H, W)`` float32 raw RGB pixel values 0..255 (the network folds
            mean/std normalisation into its first convolution).
        targets: ``{"hm": (N,C,S,S), "wh": (N,M,2), "reg": (N,M,2), "ind": (N,M) int64,
            "mask": (N,M)}`` tensors, as :func:`convforge.models.train.losses.centernet_loss` takes.
        samples: the samples themselves (ground truth for evaluation, image ids).
    """

    images: torch.Tensor
    targets: dict[str, torch.Tensor]
    samples: list[Sample]


def images_to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack ``(H, W, 3)`` uint8 images into an ``(N, 3, H, W)`` float32 tensor of raw 0..255."""
    arr = np.stack([np.asarray(im) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().contiguous()


class CenterNetCollate:
    """``collate_fn`` for a ``torch.utils.data.DataLoader`` over :class:`Sample` items.

    Picklable (works with worker processes). Builds the targets with ``targets``.
    """

    def __init__(self, targets: CenterNetTargets) -> None:
        self.targets = targets

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        for s in samples:
            if s.image.shape != (self.targets.input_size, self.targets.input_size, 3):
                raise ShapeError(
                    f"sample {s.image_id} image is {s.image.shape}, expected "
                    f"({self.targets.input_size}, {self.targets.input_size}, 3)"
                )
        per = [self.targets(s.boxes, s.labels, s.difficult) for s in samples]
        targets = {k: torch.from_numpy(np.stack([p[k] for p in per])) for k in per[0]}
        return Batch(images_to_tensor([s.image for s in samples]), targets, list(samples))


def make_collate(num_classes: int, input_size: int, down: int = 4, max_objs: int = 128) -> CenterNetCollate:
    """A :class:`CenterNetCollate` with default target parameters."""
    return CenterNetCollate(CenterNetTargets(num_classes, input_size, down=down, max_objs=max_objs))
