"""PNG figures for reports: precision-recall curves and detections drawn on images.

Uses matplotlib's non-interactive Agg canvas directly (no pyplot global state), so it
works without a display and from several threads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

PRED_COLOUR = "#ff2d2d"
GT_COLOUR = "#22d34c"


def _save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def plot_pr_curve(rec: np.ndarray, prec: np.ndarray, ap: float, path: str | Path, title: str = "") -> Path:
    """Write a precision-recall curve to ``path`` (PNG).

    Args:
        rec, prec: recall and precision after each detection (as in
            :class:`~convforge.models.eval.voc.VocResult`).
        ap: the AP to print in the legend (a fraction in ``[0, 1]``).
        path: output file; parent folders are created.
        title: optional title (e.g. the class and dataset).

    Returns:
        The written path.
    """
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    # Start the curve at recall 0 with the first precision, so a single point still draws a line.
    first = prec[:1] if prec.size else np.zeros(1)
    xs, ys = np.concatenate(([0.0], rec)), np.concatenate((first, prec))
    ax.plot(xs, ys, drawstyle="steps-post", label=f"AP = {100 * ap:.1f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def draw_detections(
    image: np.ndarray,
    pred_boxes: np.ndarray,
    scores: np.ndarray,
    gt_boxes: np.ndarray,
    path: str | Path,
    score_thresh: float = 0.3,
) -> Path:
    """Draw predictions (red, with scores) and ground truth (green) on an image; write a PNG.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        pred_boxes: ``(k, 4)`` predicted boxes, pixel edges in the image's pixels.
        scores: ``(k,)`` scores; only boxes with ``score >= score_thresh`` are drawn.
        gt_boxes: ``(n, 4)`` ground-truth boxes, pixel edges.
        path: output file; parent folders are created.
        score_thresh: display threshold.

    Returns:
        The written path. The figure has the image's size in pixels.
    """
    h, w = image.shape[:2]
    dpi = 100
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    lw = max(1.0, min(w, h) / 256)
    for x1, y1, x2, y2 in np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=GT_COLOUR, linewidth=lw))
    pred = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    for (x1, y1, x2, y2), s in zip(pred, sc, strict=True):
        if s < score_thresh:
            continue
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=PRED_COLOUR, linewidth=lw))
        ax.text(x1, y1, f"{s:.2f}", color="white", fontsize=6, va="bottom",
                bbox={"facecolor": PRED_COLOUR, "edgecolor": "none", "pad": 0.5, "alpha": 0.8})  # fmt: skip
    return _save(fig, path, dpi=dpi)
