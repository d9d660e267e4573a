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
Difficult flags are kept (``0``/``1`` or ``true``/``false``, any case, as real tools write
them). Every malformed field (size, name, coordinates, difficult) is a ``DatasetError``
naming the file, the object and the field; nothing is guessed.
"""

from __future__ import annotations

import math
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

    Raises:
        DatasetError: unreadable XML; a ``<size>`` that is not two positive integers (a
            missing or zero size falls back to the image file, if any); an unknown or empty
            class name; a missing, non-numeric or non-finite coordinate, or ``xmin > xmax`` /
            ``ymin > ymax``; a ``<difficult>`` other than 0/1/true/false. The message names
            the file, the object (index and class) and the field.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"cannot parse annotation {path}: {exc}") from exc
    size = root.find("size")
    width = height = 0
    if size is not None and (size.findtext("width") or "").strip() and (size.findtext("height") or "").strip():
        width = _size_field(path, size, "width")
        height = _size_field(path, size, "height")
    if width <= 0 or height <= 0:
        if image_path is None or not image_path.is_file():
            raise DatasetError(f"{path}: no usable <size> (width/height) and no image file to read it from")
        try:
            with Image.open(image_path) as im:
                width, height = im.size
        except OSError as exc:
            raise DatasetError(f"{path}: <size> missing and image {image_path} unreadable: {exc}") from exc
    boxes, labels, difficult = [], [], []
    shift = 1.0 if one_based else 0.0
    for index, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"{path}: object {index} ({name!r})"
        if not name:
            raise DatasetError(f"{path}: object {index}: field <name> is missing or empty")
        label = class_index(name)
        if label is None:
            raise DatasetError(f"{where}: unknown object class {name!r}")
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError(f"{where}: field <bndbox> is missing")
        xmin, ymin, xmax, ymax = (_coordinate(where, bb, k) for k in ("xmin", "ymin", "xmax", "ymax"))
        if xmin > xmax or ymin > ymax:
            raise DatasetError(
                f"{where}: field <bndbox> is inverted (xmin {xmin:g} > xmax {xmax:g} or ymin {ymin:g} > ymax {ymax:g})"
            )
        boxes.append((xmin - shift, ymin - shift, xmax, ymax))
        labels.append(label)
        difficult.append(parse_flag(obj.findtext("difficult"), f"{where}: field <difficult>"))
    return (
        width,
        height,
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(labels, dtype=np.int64),
        np.asarray(difficult, dtype=bool),
    )


#: Spellings of a VOC flag (``<difficult>``, ``<truncated>``) written by real tools.
FLAG_VALUES = {"0": False, "1": True, "false": False, "true": True}


def parse_flag(text: str | None, what: str) -> bool:
    """``0``/``1``/``true``/``false`` (any case, surrounding blanks ignored; absent or empty
    is false) as a bool; anything else is a DatasetError naming ``what``."""
    key = (text or "0").strip().lower() or "0"
    if key not in FLAG_VALUES:
        raise DatasetError(f"{what} is {text!r}; expected one of 0, 1, true, false")
    return FLAG_VALUES[key]


def _coordinate(where: str, bndbox: ET.Element, field: str) -> float:
    text = bndbox.findtext(field)
    if text is None or not text.strip():
        raise DatasetError(f"{where}: field <bndbox><{field}> is missing")
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{where}: field <bndbox><{field}> is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: field <bndbox><{field}> is {text!r}, not a finite number")
    return value


def _size_field(path: Path, size: ET.Element, field: str) -> int:
    text = (size.findtext(field) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path}: field <size><{field}> is {text!r}, not a number") from None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise DatasetError(f"{path}: field <size><{field}> is {text!r}, not a whole number of pixels >= 0")
    return int(value)


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
