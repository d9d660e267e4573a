"""Datasets (Pascal VOC, DeepForest tree crowns), augmentation and CenterNet targets.

Boxes everywhere are ``x1, y1, x2, y2`` float32 in 0-based pixel-edge coordinates; see
:mod:`convforge.models.data.sample` and ``docs/data.md``.
"""

from .centernet import (
    Batch,
    CenterNetCollate,
    CenterNetTargets,
    draw_umich_gaussian,
    gaussian_radius,
    images_to_tensor,
    make_collate,
)
from .dataset import DetectionDataset, View, get_dataset, tile_views, whole_views
from .sample import Sample, clip_and_filter, edges_to_inclusive
from .transforms import Augment, tile_positions
from .trees import TREE_CLASSES, deepforest_data_dir, tree_sources
from .voc import VOC_CLASSES, SourceImage, parse_voc_xml, voc_sources

__all__ = [
    "Augment",
    "Batch",
    "CenterNetCollate",
    "CenterNetTargets",
    "DetectionDataset",
    "Sample",
    "SourceImage",
    "TREE_CLASSES",
    "VOC_CLASSES",
    "View",
    "clip_and_filter",
    "deepforest_data_dir",
    "draw_umich_gaussian",
    "edges_to_inclusive",
    "gaussian_radius",
    "get_dataset",
    "images_to_tensor",
    "make_collate",
    "parse_voc_xml",
    "tile_positions",
    "tile_views",
    "tree_sources",
    "voc_sources",
    "whole_views",
]
