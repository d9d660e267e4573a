"""Detection datasets as square network inputs, and ``get_dataset(spec)``.

A :class:`DetectionDataset` is a list of *views* (tiles or letterboxed images, see
:mod:`convforge.models.data.transforms`) of annotated source images. Indexing it
returns a :class:`~convforge.models.data.sample.Sample`; it works directly as a
``torch.utils.data.Dataset``.

Boxes cut by a view's border are clipped; a clipped box is a *sliver* when less than
40 % of its area stays visible or a clipped side is under 3 px. Slivers are dropped in
training views; in evaluation views they are kept but marked difficult, so the metric
neither rewards nor punishes detecting a tree that is mostly outside the tile.
Boxes with nothing visible are always dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convforge.errors import DatasetError

from .sample import Sample, clip_and_filter
from .transforms import Augment, crop_padded, letterbox, letterbox_size, tile_positions
from .trees import TREE_CLASSES, tree_sources
from .voc import VOC_CLASSES, SourceImage, load_rgb, voc_sources


@dataclass(frozen=True)
class View:
    """A square window of source image ``source``: top-left ``(x0, y0)``, ``size`` source px.

    ``size == input_size`` is an exact crop (a tile); otherwise the whole image is
    letterboxed (``x0 = y0 = 0``, ``size = max(width, height)``).
    """

    source: int
    x0: int
    y0: int
    size: int


class DetectionDataset:
    """Square views of annotated images, with optional seeded training augmentation.

    Args:
        name: a label for reports (the spec string).
        class_names: label ``i`` is ``class_names[i]``.
        sources: the annotated images.
        views: the views, in a fixed order.
        input_size: network input side in pixels.
        augment: training augmentation, or None for deterministic views.
        seed: base seed; sample ``i`` of epoch ``e`` draws from ``default_rng([seed, e, i])``,
            so results do not depend on DataLoader workers.
        cache_images: keep decoded source images in memory (few large sources).
    """

    def __init__(
        self,
        name: str,
        class_names: tuple[str, ...],
        sources: list[SourceImage],
        views: list[View],
        input_size: int,
        augment: Augment | None = None,
        seed: int = 0,
        cache_images: bool = False,
    ) -> None:
        self.name = name
        self.class_names = tuple(class_names)
        self.sources = sources
        self.views = views
        self.input_size = int(input_size)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.cache_images = cache_images
        self._cache: dict[int, np.ndarray] = {}

    @property
    def num_classes(self) -> int:
        """Number of object classes."""
        return len(self.class_names)

    @property
    def train(self) -> bool:
        """True when samples are augmented (training views)."""
        return self.augment is not None

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before each training epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.views)

    def _image(self, index: int) -> np.ndarray:
        if index in self._cache:
            return self._cache[index]
        image = load_rgb(self.sources[index].path)
        src = self.sources[index]
        if image.shape[:2] != (src.height, src.width):
            raise DatasetError(
                f"{src.path}: image is {image.shape[1]}x{image.shape[0]} but its annotation says "
                f"{src.width}x{src.height}"
            )
        if self.cache_images:
            self._cache[index] = image
        return image

    def view_id(self, view: View) -> str:
        """``image_id`` of a view: the source id, plus ``@x0_y0`` for tiles of larger images."""
        src = self.sources[view.source]
        whole = view.x0 == 0 and view.y0 == 0 and view.size >= max(src.width, src.height)
        return src.image_id if whole else f"{src.image_id}@{view.x0}_{view.y0}"

    def _place(self, view: View) -> tuple[tuple[float, float], tuple[float, float]]:
        """Scale (network px per source px) and origin of a deterministic view."""
        src = self.sources[view.source]
        if view.size == self.input_size:
            return (1.0, 1.0), (float(view.x0), float(view.y0))
        nw, nh = letterbox_size(src.width, src.height, self.input_size)
        return (nw / src.width, nh / src.height), (0.0, 0.0)

    def annotations(self, index: int) -> Sample:
        """The ground truth of deterministic view ``index`` without reading its image.

        The returned sample's ``image`` is an empty ``(0, 0, 3)`` array; boxes, labels,
        difficult flags, scale and origin are exactly those of ``self[index]`` for an
        un-augmented dataset.
        """
        view = self.views[index]
        scale, origin = self._place(view)
        return self._finish(np.zeros((0, 0, 3), np.uint8), view, self._map(view, scale, origin), scale, origin, False)

    def _map(self, view: View, scale: tuple[float, float], origin: tuple[float, float]) -> np.ndarray:
        b = self.sources[view.source].boxes.astype(np.float64).copy()
        b[:, [0, 2]] = (b[:, [0, 2]] - origin[0]) * scale[0]
        b[:, [1, 3]] = (b[:, [1, 3]] - origin[1]) * scale[1]
        return b

    def _finish(
        self,
        image: np.ndarray,
        view: View,
        boxes: np.ndarray,
        scale: tuple[float, float],
        origin: tuple[float, float],
        drop_slivers: bool,
    ) -> Sample:
        src = self.sources[view.source]
        clipped, good, visible = clip_and_filter(boxes, self.input_size, self.input_size)
        keep = good if drop_slivers else visible
        difficult = src.difficult.copy()
        if not drop_slivers:
            difficult |= ~good
        return Sample(
            image=image,
            boxes=clipped[keep],
            labels=src.labels[keep],
            difficult=difficult[keep],
            image_id=self.view_id(view),
            scale=scale,
            origin=origin,
        )

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self.views):
            raise IndexError(index)
        view = self.views[index]
        src = self.sources[view.source]
        image = self._image(view.source)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if view.size == self.input_size:
                window = (float(view.x0), float(view.y0), float(view.size))
            else:
                # Training windows are centred on the image (test letterboxes sit top-left).
                side = float(max(src.width, src.height))
                window = ((src.width - side) / 2, (src.height - side) / 2, side)
            out, boxes, scale, origin = self.augment.apply(image, src.boxes, window, self.input_size, rng)
            return self._finish(out, view, boxes, scale, origin, drop_slivers=True)
        scale, origin = self._place(view)
        if view.size == self.input_size:
            out = crop_padded(image, view.x0, view.y0, view.size)
        else:
            out, _, _ = letterbox(image, self.input_size)
        return self._finish(out, view, self._map(view, scale, origin), scale, origin, drop_slivers=False)

    def summary(self) -> dict[str, int | str]:
        """Counts for reports: source images, views, boxes and difficult boxes (un-augmented)."""
        boxes = difficult = 0
        for i in range(len(self.views)):
            s = self.annotations(i)
            boxes += int((~s.difficult).sum())
            difficult += int(s.difficult.sum())
        return {
            "name": self.name,
            "images": len(self.sources),
            "views": len(self.views),
            "boxes": boxes,
            "difficult": difficult,
        }


def tile_views(sources: list[SourceImage], tile: int, stride: int) -> list[View]:
    """Tiles of ``tile`` px every ``stride`` px over each source (row-major, per source)."""
    views = []
    for i, src in enumerate(sources):
        for y0 in tile_positions(src.height, tile, stride):
            for x0 in tile_positions(src.width, tile, stride):
                views.append(View(i, x0, y0, tile))
    return views


def whole_views(sources: list[SourceImage], input_size: int) -> list[View]:
    """One letterboxed view per source: its longer side scaled (up or down) to ``input_size``."""
    return [View(i, 0, 0, max(src.width, src.height)) for i, src in enumerate(sources)]


#: Aerial tree crowns: all eight rotations/mirrors, zoom 0.6-1.6 (crown sizes differ by site),
#: strong colour and hue jitter (the training site YELL and the test sites OSBS / SOAP differ in
#: light, season and vegetation) and blur on 30 % of the views (sharpness differs between flights).
TREE_AUGMENT = Augment(scale_range=(0.6, 1.6), shift=0.25, hflip=True, vflip=True, transpose=True,
                       brightness=0.4, contrast=0.4, saturation=0.5, hue=0.05, blur=0.3, blur_sigma=1.5)
VOC_AUGMENT = Augment(scale_range=(0.6, 1.4), shift=0.2, hflip=True, vflip=False)

_SPEC_HELP = (
    "dataset specs: 'trees:train', 'trees:test', 'voc:/path/to/VOCdevkit' "
    "(optionally ':<year>[+<year>...]:<imageset>', e.g. 'voc:/data/VOCdevkit:2007:test')"
)
_VOC_TAIL = re.compile(r"^(?P<root>.+?)(?::(?P<years>\d{4}(?:\+\d{4})*)(?::(?P<imageset>\w+))?)?$")


def get_dataset(
    spec: str,
    *,
    train: bool = False,
    input_size: int = 256,
    augment: bool | None = None,
    seed: int = 0,
    stride: int | None = None,
    limit: int | None = None,
) -> DetectionDataset:
    """Build a dataset from a spec string.

    Args:
        spec: ``"trees:train"``, ``"trees:test"`` or ``"voc:<VOCdevkit path>[:<years>[:<imageset>]]"``.
            VOC defaults: training uses ``trainval`` of every year among 2007 and 2012
            present under the path; evaluation uses ``2007:test``.
        train: training views (augmented, slivers dropped). Evaluation views are
            deterministic and mark slivers difficult. A test split refuses ``train=True``.
        input_size: network input side in pixels (a multiple of 32 for the CoDeNet nets).
        augment: override whether training views are augmented (default: ``train``).
        seed: augmentation seed.
        stride: tile stride in pixels for trees; default ``3/4 * input_size`` for
            training (192 at 256) and ``input_size`` (no overlap except the last tile,
            which ends at the image border) for evaluation.
        limit: VOC only: at most this many images per image list (quick runs).

    Returns:
        A :class:`DetectionDataset`.
    """
    if input_size <= 0 or input_size % 4:
        raise DatasetError(f"input_size must be a positive multiple of 4 (the output stride), not {input_size}")
    do_augment = train if augment is None else augment
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise DatasetError(f"bad dataset spec {spec!r}; {_SPEC_HELP}")
    if kind == "trees":
        if rest not in ("train", "test"):
            raise DatasetError(f"bad dataset spec {spec!r}: the trees split is 'train' or 'test'; {_SPEC_HELP}")
        if rest == "test" and train:
            raise DatasetError("'trees:test' is the held-out test split and cannot be used for training")
        sources = tree_sources(rest)
        step = stride if stride is not None else (input_size * 3 // 4 if rest == "train" else input_size)
        if step <= 0:
            raise DatasetError(f"tile stride must be positive, not {step}")
        views = tile_views(sources, input_size, step)
        aug = TREE_AUGMENT if do_augment else None
        return DetectionDataset(spec, TREE_CLASSES, sources, views, input_size, aug, seed, cache_images=True)
    if kind == "voc":
        m = _VOC_TAIL.match(rest)
        root = Path(m.group("root"))
        if not root.is_dir():
            raise DatasetError(f"VOC path {root} is not a folder; {_SPEC_HELP}; layout: VOCdevkit/VOC2007/...")
        imageset = m.group("imageset") or ("trainval" if train else "test")
        if m.group("years"):
            years = m.group("years").split("+")
        elif train:
            years = [y for y in ("2007", "2012") if (root / f"VOC{y}").is_dir()] or ["2007"]
        else:
            years = ["2007"]
        if train and imageset == "test":
            raise DatasetError(f"{spec!r}: the VOC test image set cannot be used for training")
        sources = []
        for year in years:
            sources.extend(voc_sources(root, year, imageset, limit))
        views = whole_views(sources, input_size)
        aug = VOC_AUGMENT if do_augment else None
        return DetectionDataset(spec, VOC_CLASSES, sources, views, input_size, aug, seed, cache_images=False)
    raise DatasetError(f"unknown dataset kind {kind!r} in {spec!r}; {_SPEC_HELP}")
