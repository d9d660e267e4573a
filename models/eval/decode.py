"""CenterNet detection decoding, from float heads and from the integer heads (INTEGER_SPEC §5).

Both decoders find *peaks* — heatmap cells equal to the maximum of their 3x3
neighbourhood (cells outside the map do not count) — take the ``K`` highest peaks over
the flat ``(class, y, x)`` index (ties: lower flat index first), and turn each into a box:

    cx = x + reg_x,  cy = y + reg_y                      (output-grid units)
    box = ((cx - w/2) * down, (cy - h/2) * down, (cx + w/2) * down, (cy + h/2) * down)

in network input pixels (pixel edges), with ``(w, h) = wh`` in output-grid units, exactly
as :class:`convforge.models.data.centernet.CenterNetTargets` encodes them. The score is
``sigmoid(logit)``. Fewer than ``K`` peaks give fewer than ``K`` detections.

Peaks and ranking are computed on the logits, not on the sigmoid: the sigmoid is monotone,
so this selects what CenterNet's max-pool on sigmoid scores selects, but large logits do
not collapse into float32 ties at 1.0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from convforge.errors import ShapeError


@dataclass
class Detections:
    """Detections of one image, best first.

    Attributes:
        boxes: ``(k, 4)`` float32 ``x1, y1, x2, y2`` in network input pixels (pixel edges).
        scores: ``(k,)`` float32 in ``(0, 1)``.
        classes: ``(k,)`` int64 class indices.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, score_thresh: float) -> Detections:
        """The detections with ``score >= score_thresh``."""
        keep = self.scores >= score_thresh
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])


def _check_heads(hm: torch.Tensor, wh: torch.Tensor, reg: torch.Tensor) -> None:
    if hm.dim() != 4:
        raise ShapeError(f"heatmap must be (N, C, H, W), got {tuple(hm.shape)}")
    n, _, h, w = hm.shape
    for name, t in (("wh", wh), ("reg", reg)):
        if tuple(t.shape) != (n, 2, h, w):
            raise ShapeError(f"{name} must be {(n, 2, h, w)} to match the heatmap, got {tuple(t.shape)}")


def _peaks(values: torch.Tensor) -> torch.Tensor:
    """Mask of cells equal to their 3x3 maximum; float64 keeps integers exact."""
    v = values.to(torch.float64)
    return v == F.max_pool2d(v, kernel_size=3, stride=1, padding=1)


def _boxes(
    flat: torch.Tensor, width: int, plane: int, wh: torch.Tensor, reg: torch.Tensor, down: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (float32) and classes for flat ``(class, y, x)`` indices of one image."""
    cls = flat // plane
    pix = flat % plane
    ys, xs = pix // width, pix % width
    w = wh[0].reshape(-1)[pix]
    h = wh[1].reshape(-1)[pix]
    cx = xs.to(torch.float32) + reg[0].reshape(-1)[pix]
    cy = ys.to(torch.float32) + reg[1].reshape(-1)[pix]
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1) * float(down)
    return boxes.numpy().astype(np.float32), cls.numpy().astype(np.int64)


def decode_float(
    hm_logits: torch.Tensor, wh: torch.Tensor, reg: torch.Tensor, K: int = 100, down: int = 4
) -> list[Detections]:
    """Decode float CenterNet heads.

    Args:
        hm_logits: ``(N, C, H, W)`` heatmap logits (before the sigmoid).
        wh: ``(N, 2, H, W)`` box width/height in output-grid units.
        reg: ``(N, 2, H, W)`` sub-cell centre offsets in output-grid units.
        K: maximal detections per image.
        down: output stride (network input pixels per output cell).

    Returns:
        One :class:`Detections` per image, at most ``K`` each, best first.
    """
    hm_logits, wh, reg = (torch.as_tensor(t).detach().cpu() for t in (hm_logits, wh, reg))
    _check_heads(hm_logits, wh, reg)
    n, c, h, w = hm_logits.shape
    logits = hm_logits.to(torch.float32)
    peak = _peaks(logits).reshape(n, -1)
    out = []
    for i in range(n):
        flat_logits = logits[i].reshape(-1)
        idx = torch.nonzero(peak[i]).reshape(-1)
        # A stable descending sort keeps equal logits in ascending flat-index order.
        order = torch.sort(flat_logits[idx], descending=True, stable=True).indices[:K]
        sel = idx[order]
        boxes, classes = _boxes(sel, w, h * w, wh[i].to(torch.float32), reg[i].to(torch.float32), down)
        scores = torch.sigmoid(flat_logits[sel]).numpy().astype(np.float32)
        out.append(Detections(boxes, scores, classes))
    return out


def _scale_triple(scales: Mapping[str, float] | Sequence[float]) -> tuple[float, float, float]:
    if isinstance(scales, Mapping):
        try:
            return float(scales["hm"]), float(scales["wh"]), float(scales["reg"])
        except KeyError as exc:
            raise ShapeError(f"scales must have keys 'hm', 'wh', 'reg'; missing {exc}") from exc
    vals = tuple(float(s) for s in scales)
    if len(vals) != 3:
        raise ShapeError(f"scales must be (s_hm, s_wh, s_reg), got {len(vals)} values")
    return vals


def decode_int(
    hm_int8: torch.Tensor,
    wh_int: torch.Tensor,
    reg_int: torch.Tensor,
    scales: Mapping[str, float] | Sequence[float],
    K: int = 100,
    down: int = 4,
) -> list[Detections]:
    """Decode the integer heads as the host does after the accelerator (INTEGER_SPEC §5).

    Peaks and the top-K are decided on the integers alone: a peak is a heatmap integer
    equal to its 3x3 maximum (outside cells ignored); candidates are ranked by the key
    ``q * (C*H*W) + (C*H*W - 1 - flat)``, so a higher logit wins and equal logits go to
    the lower flat ``(class, y, x)`` index. Only then are the values dequantised
    (``real = q * scale``, float32) for the sigmoid and the box arithmetic.

    Args:
        hm_int8: ``(N, C, H, W)`` integer heatmap logits (int8 range).
        wh_int: ``(N, 2, H, W)`` integer sizes.
        reg_int: ``(N, 2, H, W)`` integer offsets.
        scales: ``(s_hm, s_wh, s_reg)`` or ``{"hm", "wh", "reg"}``: real units per LSB
            (logit units, output-grid cells, output-grid cells).
        K: maximal detections per image.
        down: output stride.

    Returns:
        One :class:`Detections` per image, at most ``K`` each, best first. On inputs
        without equal peak logits this equals :func:`decode_float` of the dequantised
        heads exactly.
    """
    hm, wh, reg = (torch.as_tensor(t).detach().cpu() for t in (hm_int8, wh_int, reg_int))
    for name, t in (("heatmap", hm), ("wh", wh), ("reg", reg)):
        if t.is_floating_point() or t.dtype == torch.bool:
            raise ShapeError(f"decode_int needs integer tensors; the {name} head is {t.dtype}")
    _check_heads(hm, wh, reg)
    s_hm, s_wh, s_reg = _scale_triple(scales)
    n, c, h, w = hm.shape
    q = hm.to(torch.int64)
    if q.numel() and (int(q.abs().max()) >= 1 << 31):
        raise ShapeError("heatmap integers exceed 31 bits; the ranking key would overflow")
    peak = _peaks(q).reshape(n, -1)
    total = c * h * w
    out = []
    for i in range(n):
        flat_q = q[i].reshape(-1)
        idx = torch.nonzero(peak[i]).reshape(-1)
        key = flat_q[idx] * total + (total - 1 - idx)
        sel = idx[torch.argsort(key, descending=True)[:K]]
        wh_real = wh[i].to(torch.float32) * s_wh
        reg_real = reg[i].to(torch.float32) * s_reg
        boxes, classes = _boxes(sel, w, h * w, wh_real, reg_real, down)
        scores = torch.sigmoid(flat_q[sel].to(torch.float32) * s_hm).numpy().astype(np.float32)
        out.append(Detections(boxes, scores, classes))
    return out
