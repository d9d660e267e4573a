"""Detection decoding (float and integer heads), the Pascal VOC metric, and report plots."""

from .decode import Detections, decode_float, decode_int
from .plots import draw_detections, plot_pr_curve
from .voc import GroundTruth, VocResult, evaluate_samples, iou_voc, voc_ap, voc_eval

__all__ = [
    "Detections",
    "GroundTruth",
    "VocResult",
    "decode_float",
    "decode_int",
    "draw_detections",
    "evaluate_samples",
    "iou_voc",
    "plot_pr_curve",
    "voc_ap",
    "voc_eval",
]
