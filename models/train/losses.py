"""CenterNet losses (Zhou et al., "Objects as Points", 2019).

* heatmap: penalty-reduced pixel-wise focal loss (alpha = 2, beta = 4), normalised by
  the number of objects;
* size (``wh``) and sub-pixel offset (``reg``): L1 at the object centres only, normalised
  by the number of objects.

All head tensors are ``(N, C, H, W)`` at the output stride (4); sizes and offsets are in
output-grid pixels, exactly as the targets encode them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: CenterNet's loss weights: heatmap, size, offset.
HM_WEIGHT = 1.0
WH_WEIGHT = 0.1
REG_WEIGHT = 1.0


def focal_loss(logits: torch.Tensor, gt: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """Penalty-reduced focal loss on heatmap logits (CenterNet eq. 1).

    Args:
        logits: ``(N, C, H, W)`` raw heatmap outputs (before the sigmoid).
        gt: ``(N, C, H, W)`` Gaussian-splatted ground truth in ``[0, 1]``; exactly 1 at
            object centres.
        alpha: focusing exponent on ``(1 - p)`` / ``p``.
        beta: exponent of the penalty reduction ``(1 - gt)`` around centres.

    Returns:
        A scalar: ``-(sum of positive and negative terms) / max(1, number of centres)``.
        Log-probabilities come from ``logsigmoid``, so large logits never give ``log(0)``.
    """
    logits = logits.float()
    gt = gt.float()
    prob = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    log_1mp = F.logsigmoid(-logits)
    pos = gt.eq(1)
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    # Select, never multiply by a 0/1 mask: the term a cell does not use may be -inf
    # (log(1 - p) at an infinite logit), and -inf * 0 would be NaN.
    pos_loss = torch.where(pos, log_p * (1 - prob).pow(alpha), zero).sum()
    neg_loss = torch.where(pos, zero, log_1mp * prob.pow(alpha) * (1 - gt).pow(beta)).sum()
    num_pos = pos.float().sum().clamp(min=1.0)
    return -(pos_loss + neg_loss) / num_pos


def gather_at_centres(head: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick ``head`` values at flat output-grid indices.

    Args:
        head: ``(N, K, H, W)`` map.
        index: ``(N, M)`` int64 flat indices ``y * W + x`` of the object centres.

    Returns:
        ``(N, M, K)`` values.
    """
    n, k, h, w = head.shape
    flat = head.reshape(n, k, h * w)
    idx = index.long().clamp(0, h * w - 1).unsqueeze(1).expand(n, k, index.shape[1])
    return flat.gather(2, idx).permute(0, 2, 1)


def masked_l1(head: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between ``head`` at the centres and ``target``, averaged over real objects.

    Args:
        head: ``(N, K, H, W)`` predictions.
        index: ``(N, M)`` flat centre indices (padded slots arbitrary).
        mask: ``(N, M)`` 1 for a real object, 0 for padding.
        target: ``(N, M, K)`` target values.

    Returns:
        ``sum |pred - target| over real objects and K / max(1, number of objects)``
        (CenterNet's RegL1Loss normalisation).
    """
    pred = gather_at_centres(head, index)
    real = mask.unsqueeze(2).expand_as(pred) > 0
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    # Padded slots read a clamped index: select 0 there instead of multiplying by the mask,
    # so a non-finite prediction at that cell cannot turn the loss into NaN (0 * inf).
    loss = F.l1_loss(torch.where(real, pred, zero), torch.where(real, target.to(pred.dtype), zero), reduction="sum")
    return loss / mask.float().sum().clamp(min=1.0)


@dataclass
class LossTerms:
    """The weighted total and its parts (detached floats for logging)."""

    total: torch.Tensor
    hm: float
    wh: float
    reg: float


def centernet_loss(
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    hm_weight: float = HM_WEIGHT,
    wh_weight: float = WH_WEIGHT,
    reg_weight: float = REG_WEIGHT,
) -> LossTerms:
    """CenterNet's loss ``hm_weight*focal + wh_weight*L1(wh) + reg_weight*L1(reg)``.

    Args:
        outputs: the model's ``{"hm", "wh", "reg"}`` heads, ``(N, C|2|2, H, W)``.
        targets: ``{"hm": (N,C,H,W), "wh": (N,M,2), "reg": (N,M,2), "ind": (N,M),
            "mask": (N,M)}`` as built by the data pipeline's CenterNet targets.

    Returns:
        :class:`LossTerms` whose ``total`` is differentiable.
    """
    hm = focal_loss(outputs["hm"], targets["hm"])
    wh = masked_l1(outputs["wh"], targets["ind"], targets["mask"], targets["wh"])
    reg = masked_l1(outputs["reg"], targets["ind"], targets["mask"], targets["reg"])
    total = hm_weight * hm + wh_weight * wh + reg_weight * reg
    return LossTerms(total=total, hm=float(hm.detach()), wh=float(wh.detach()), reg=float(reg.detach()))
