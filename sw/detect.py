"""Detection on whole images of any size: views in, detections in source pixels out.

A source image becomes one or more square network inputs ("views", the same geometry
:mod:`convforge.models.data.transforms` gives the datasets):

* **letterbox** — the whole image scaled so its longer side is the network input side,
  padded black at the bottom / right (what ``convforge eval`` does on VOC);
* **tiles** — for large (aerial) images: ``input_size``-pixel crops at native resolution
  (what ``convforge eval`` does on the tree tiles), every ``input_size - overlap`` pixels,
  the last tile moved back to end at the border.

Each view runs through a backend that returns the integer heads; they are decoded with
the integer decoder ``convforge eval`` uses (:func:`convforge.models.eval.decode_int`,
INTEGER_SPEC §5), mapped back with ``source = origin + network / scale``, clipped to the
image, and detections of overlapping tiles are merged by class-wise greedy NMS.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convforge.errors import ConfigError
from convforge.models.data.transforms import crop_padded, letterbox, tile_positions
from convforge.models.data.voc import load_rgb

#: Images whose longer side exceeds this many network input sides are tiled (``tile="auto"``).
AUTO_TILE_FACTOR = 1.5

#: IoU above which two detections of the same class from overlapping tiles are one object.
MERGE_IOU = 0.5


@dataclass(frozen=True)
class View:
    """One square network input cut from a source image.

    Attributes:
        image: ``(input_size, input_size, 3)`` uint8 RGB network input.
        origin: ``(x0, y0)`` source pixel of the view's top-left corner.
        scale: ``(sx, sy)`` network pixels per source pixel.
        kind: ``"letterbox"`` or ``"tile"``.
    """

    image: np.ndarray
    origin: tuple[float, float]
    scale: tuple[float, float]
    kind: str


@dataclass
class ImageDetections:
    """Detections of one source image in its own pixel coordinates (pixel edges).

    Attributes:
        path: the image file.
        width, height: image size in pixels.
        boxes: ``(k, 4)`` float32 ``x1, y1, x2, y2``; scores ``(k,)``; classes ``(k,)``.
        views: how many network inputs the image took.
        seconds: wall time of the image (views + decoding), seconds.
        frames: per view: backend wall time (s) and, on hardware backends, the counters.
        image: the decoded ``(H, W, 3)`` uint8 image (not in :meth:`to_json`).
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    views: int
    seconds: float
    frames: list[dict] = field(default_factory=list)
    image: np.ndarray | None = field(default=None, repr=False)

    def to_json(self, class_names: list[str] | None = None) -> dict:
        """A JSON-serialisable summary: every detection in source pixels."""
        dets = []
        for box, s, c in zip(self.boxes.tolist(), self.scores.tolist(), self.classes.tolist(), strict=True):
            d = {"box": [round(v, 2) for v in box], "score": round(float(s), 4), "class": int(c)}
            if class_names and 0 <= c < len(class_names):
                d["label"] = class_names[c]
            dets.append(d)
        return {"image": str(self.path), "width": self.width, "height": self.height, "views": self.views,
                "seconds": round(self.seconds, 4), "frames": self.frames, "detections": dets}  # fmt: skip


def plan_views(image: np.ndarray, input_size: int, tile: str = "auto", overlap: int = 64) -> list[View]:
    """Cut ``image`` (``(H, W, 3)`` uint8) into the network inputs of ``input_size`` pixels.

    Args:
        tile: ``"auto"`` (tile when the longer side exceeds ``AUTO_TILE_FACTOR * input_size``),
            ``"always"`` or ``"never"`` (letterbox).
        overlap: pixels shared by neighbouring tiles (so objects cut by one tile's border are
            whole in the next); ``0 <= overlap < input_size``.

    Raises:
        ConfigError: unknown ``tile`` mode or an overlap out of range.
    """
    if tile not in ("auto", "always", "never"):
        raise ConfigError(f"tile mode {tile!r} unknown; choose auto, always or never")
    if not 0 <= overlap < input_size:
        raise ConfigError(f"tile overlap {overlap} px must be in [0, {input_size}) (the network input side)")
    h, w = image.shape[:2]
    tiled = tile == "always" or (tile == "auto" and max(h, w) > AUTO_TILE_FACTOR * input_size)
    if not tiled:
        square, sx, sy = letterbox(image, input_size)
        return [View(square, (0.0, 0.0), (sx, sy), "letterbox")]
    stride = input_size - overlap
    return [
        View(crop_padded(image, x0, y0, input_size), (float(x0), float(y0)), (1.0, 1.0), "tile")
        for y0 in tile_positions(h, input_size, stride)
        for x0 in tile_positions(w, input_size, stride)
    ]


def to_source(boxes: np.ndarray, view: View, width: int, height: int) -> np.ndarray:
    """Network-pixel boxes of ``view`` to source pixels, clipped to the ``width x height`` image."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]] / view.scale[0] + view.origin[0]
    out[:, [1, 3]] = out[:, [1, 3]] / view.scale[1] + view.origin[1]
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out.astype(np.float32)


def merge_detections(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_thresh: float = MERGE_IOU
) -> np.ndarray:
    """Indices (best first) kept by class-wise greedy NMS over pixel-edge boxes.

    Used only across tiles: inside one view the CenterNet peak rule already keeps one
    detection per object.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    b = np.asarray(boxes, dtype=np.float64)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    for rank, i in enumerate(order):
        if suppressed[rank]:
            continue
        keep.append(int(i))
        rest = order[rank + 1 :]
        iw = np.clip(np.minimum(b[rest, 2], b[i, 2]) - np.maximum(b[rest, 0], b[i, 0]), 0, None)
        ih = np.clip(np.minimum(b[rest, 3], b[i, 3]) - np.maximum(b[rest, 1], b[i, 1]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(area[rest] + area[i] - inter, 1e-9)
        suppressed[rank + 1 :] |= (iou > iou_thresh) & (classes[rest] == classes[i])
    return np.asarray(keep, dtype=np.int64)


#: A backend: ``infer(view image (S, S, 3) uint8) -> (heads {"hm","wh","reg": (C, H, W) ints}, frame info)``.
InferFn = Callable[[np.ndarray], tuple[Mapping[str, np.ndarray], dict]]


def detect_image(
    path: str | Path,
    infer: InferFn,
    input_size: int,
    scales: Mapping[str, float],
    tile: str = "auto",
    overlap: int = 64,
    score_thresh: float = 0.0,
    top_k: int = 100,
    progress: bool = False,
) -> ImageDetections:
    """Detect objects in one image file.

    Args:
        path: any image Pillow reads.
        infer: the backend (see :data:`InferFn`).
        input_size: the network's square input side in pixels.
        scales: real units per LSB of the ``hm``, ``wh``, ``reg`` heads.
        score_thresh: keep detections from this score up (before merging tiles).
        top_k: detections decoded per view (CenterNet K).
        progress: a tqdm bar over the views of a tiled image.

    Raises:
        DatasetError: the file is not an image (the message names the file).
    """
    import torch

    from convforge.models.eval import decode_int

    t0 = time.perf_counter()
    path = Path(path)
    image = load_rgb(path)
    h, w = image.shape[:2]
    views = plan_views(image, input_size, tile, overlap)
    all_boxes, all_scores, all_classes, frames = [], [], [], []
    bar = None
    if progress and len(views) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(views), desc=path.name, unit="view", leave=False)
    for view in views:
        heads, frame = infer(view.image)
        det = decode_int(*(torch.from_numpy(np.asarray(heads[k])[None].astype(np.int64)) for k in ("hm", "wh", "reg")),
                         scales, K=top_k)[0].above(score_thresh)  # fmt: skip
        all_boxes.append(to_source(det.boxes, view, w, h))
        all_scores.append(det.scores)
        all_classes.append(det.classes)
        frames.append({"origin": list(view.origin), "kind": view.kind, "detections": len(det), **frame})
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    boxes = np.concatenate(all_boxes).reshape(-1, 4)
    scores = np.concatenate(all_scores).astype(np.float32)
    classes = np.concatenate(all_classes).astype(np.int64)
    keep = merge_detections(boxes, scores, classes) if len(views) > 1 else np.argsort(-scores, kind="stable")
    return ImageDetections(path, w, h, boxes[keep], scores[keep], classes[keep], len(views),
                           time.perf_counter() - t0, frames, image)  # fmt: skip
