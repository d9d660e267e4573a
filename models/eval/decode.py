"""CenterNet detection decoding, from float heads and from the integer heads (INTEGER_SPEC §5).

Both decoders find *peaks* with one function, :func:`peak_mask` (INTEGER_SPEC v1.1 §5): a
cell ``>=`` every neighbour of its 3x3 window and ``>`` every neighbour before it in raster
order (cells outside the map do not count), so a plateau of equal maxima gives one peak,
not one per cell. A NaN cell is never a peak and never suppresses a neighbour. The
decoders then take the ``K`` highest peaks over the flat ``(class, y, x)`` index (ties:
lower flat index first), and turn each into a box:

    cx = x + reg_x,  cy = y + reg_y                      (output-grid units)
    w, h = max(wh_x, 0), max(wh_y, 0)                    (a negative size is an empty box)
    box = ((cx - w/2) * down, (cy - h/2) * down, (cx + w/2) * down, (cy + h/2) * down)

in network input pixels (pixel edges), with ``(w, h) = wh`` in output-grid units, exactly
as :class:`convforge.models.data.centernet.CenterNetTargets` encodes them, clipped to the
image ``[0, W*down] x [0, H*down]`` (so ``x1 <= x2`` and ``y1 <= y2`` always). The score is
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


def peak_mask(values: torch.Tensor) -> torch.Tensor:
    """Peaks of heatmaps ``(N, C, H, W)`` (INTEGER_SPEC v1.1 §5); a bool mask of that shape.

    A cell is a peak when it is ``>=`` each of its (up to 8) neighbours and ``>`` each
    neighbour that comes before it in raster order within its class plane (the row above,
    and the cell to its left); cells outside the map do not count. Two or more adjacent
    equal maxima therefore give one peak, the first in raster order. The rule is monotone,
    so logits and their sigmoid have the same peaks. Works on any real dtype without
    conversion (integers stay exact). Non-finite values: a NaN cell is never a peak and is
    ignored as a neighbour (it suppresses nothing); ``+-inf`` compare as usual.

    Note: the rule is local. A plateau whose cells are linked only through raster-later
    cells (e.g. ``(0, 2), (1, 1), (1, 0)``, which joins ``(1, 0)`` only via ``(1, 1)``)
    gives one peak at each cell without an earlier plateau neighbour (here ``(0, 2)`` and
    ``(1, 0)``); see docs/integer_spec.md §5.
    """
    if values.dim() != 4:
        raise ShapeError(f"heatmap must be (N, C, H, W), got {tuple(values.shape)}")
    v = values
    n, c, h, w = v.shape
    ok = ~torch.isnan(v) if v.is_floating_point() else torch.ones_like(v, dtype=torch.bool)
    vp = v.new_zeros((n, c, h + 2, w + 2))
    vp[..., 1:-1, 1:-1] = v
    okp = torch.zeros((n, c, h + 2, w + 2), dtype=torch.bool, device=v.device)
    okp[..., 1:-1, 1:-1] = ok
    peak = ok.clone()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            nb = vp[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            nb_ok = okp[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            before = dy < 0 or (dy == 0 and dx < 0)
            wins = v > nb if before else v >= nb
            peak &= wins | ~nb_ok
    return peak


def _boxes(
    flat: torch.Tensor, width: int, plane: int, wh: torch.Tensor, reg: torch.Tensor, down: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (float32, clipped to the image, never inverted) and classes for flat
    ``(class, y, x)`` indices of one image.

    Raises:
        ShapeError: a selected cell's size or offset is NaN (a broken head, not a box).
    """
    cls = flat // plane
    pix = flat % plane
    ys, xs = pix // width, pix % width
    height = plane // width
    values = torch.stack([wh[0].reshape(-1)[pix], wh[1].reshape(-1)[pix],
                          reg[0].reshape(-1)[pix], reg[1].reshape(-1)[pix]])  # fmt: skip
    if bool(torch.isnan(values).any()):
        k = int(torch.nonzero(torch.isnan(values).any(dim=0))[0, 0])
        raise ShapeError(
            f"the wh/reg heads are NaN at peak (class {int(cls[k])}, y {int(ys[k])}, x {int(xs[k])}); "
            "the network produced non-finite outputs (check the weights/input)"
        )
    w = values[0].clamp(min=0)
    h = values[1].clamp(min=0)
    cx = xs.to(torch.float32) + values[2]
    cy = ys.to(torch.float32) + values[3]
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1) * float(down)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0.0, float(width * down))
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0.0, float(height * down))
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
    peak = peak_mask(logits).reshape(n, -1)
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

    Peaks and the top-K are decided on the integers alone (peaks by :func:`peak_mask`,
    the v1.1 plateau rule); candidates are ranked by the key
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
    peak = peak_mask(q).reshape(n, -1)
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
