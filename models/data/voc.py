"""Pascal VOC: annotation XML parsing and the VOCdevkit layout.

Expected layout (the standard devkit)::

    VOCdevkit/
      VOC2007/
        Annotations/<id>.xml
        JPEGImages/<id>.jpg
        ImageSets/Main/<imageset>.txt      (trainval.txt, test.txt, ...)
      VOC2012/ ...

VOC XML boxes are 1-based inclusive pixel indices; they become pixel-edge boxes
``(xmin - 1, ymin - 1, xmax, ymax)`` (see :mod:`convforge.models.data.sample`).
Difficult flags are kept.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from convforge.errors import DatasetError

#: The 20 Pascal VOC classes, in the devkit's order (label = index).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


@dataclass
class SourceImage:
    """One annotated image on disk.

    Attributes:
        image_id: unique name (file stem).
        path: the image file.
        width, height: image size in pixels.
        boxes: ``(n, 4)`` float32 pixel-edge boxes in this image's pixels.
        labels: ``(n,)`` int64 class indices.
        difficult: ``(n,)`` bool.
    """

    image_id: str
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def load_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB; a DatasetError if unreadable."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def parse_voc_xml(
    path: Path,
    class_index: Callable[[str], int | None],
    one_based: bool = True,
    image_path: Path | None = None,
) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Parse a VOC-style annotation file.

    Args:
        path: the XML file.
        class_index: maps an object's ``<name>`` to a label; ``None`` is an error naming
            the unknown class.
        one_based: True for VOC's 1-based inclusive indices (``x1 = xmin - 1``); False for
            files already in 0-based pixel edges (DeepForest).
        image_path: where to read the size from when the XML has no ``<size>``.

    Returns:
        ``(width, height, boxes (n,4) float32, labels (n,) int64, difficult (n,) bool)``.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"cannot parse annotation {path}: {exc}") from exc
    size = root.find("size")
    width = height = 0
    if size is not None and size.findtext("width") and size.findtext("height"):
        width, height = int(float(size.findtext("width"))), int(float(size.findtext("height")))
    if (width <= 0 or height <= 0) and image_path is not None and image_path.is_file():
        with Image.open(image_path) as im:
            width, height = im.size
    boxes, labels, difficult = [], [], []
    shift = 1.0 if one_based else 0.0
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        label = class_index(name)
        if label is None:
            raise DatasetError(f"{path}: unknown object class {name!r}")
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError(f"{path}: object {name!r} has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{path}: object {name!r} has a malformed <bndbox>") from exc
        boxes.append((xmin - shift, ymin - shift, xmax, ymax))
        labels.append(label)
        difficult.append(int(float(obj.findtext("difficult") or 0)) != 0)
    return (
        width,
        height,
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(labels, dtype=np.int64),
        np.asarray(difficult, dtype=bool),
    )


def _voc_class_index(name: str) -> int | None:
    try:
        return VOC_CLASSES.index(name)
    except ValueError:
        return None


LAYOUT_HELP = (
    "expected VOCdevkit/VOC<year>/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/<imageset>.txt}"
)


def voc_sources(root: Path, year: str, imageset: str, limit: int | None = None) -> list[SourceImage]:
    """The annotated images of ``VOC<year>/ImageSets/Main/<imageset>.txt`` under ``root``.

    Args:
        root: the ``VOCdevkit`` folder.
        year: ``"2007"``, ``"2012"``, ...
        imageset: ``"trainval"``, ``"test"``, ``"train"``, ``"val"``.
        limit: keep only the first ``limit`` images of the list (quick runs).
    """
    year_dir = root / f"VOC{year}"
    listing = year_dir / "ImageSets" / "Main" / f"{imageset}.txt"
    if not listing.is_file():
        raise DatasetError(f"no image list {listing}; {LAYOUT_HELP}")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if limit is not None:
        ids = ids[:limit]
    sources = []
    for image_id in ids:
        xml = year_dir / "Annotations" / f"{image_id}.xml"
        jpg = year_dir / "JPEGImages" / f"{image_id}.jpg"
        if not xml.is_file() or not jpg.is_file():
            raise DatasetError(f"image {image_id!r} of {listing} lacks {xml.name} or {jpg.name}; {LAYOUT_HELP}")
        width, height, boxes, labels, difficult = parse_voc_xml(xml, _voc_class_index, one_based=True, image_path=jpg)
        sources.append(SourceImage(image_id, jpg, width, height, boxes, labels, difficult))
    return sources
