"""Geometry from source images to square network inputs: tiling, letterboxing, augmentation.

A *view* is a square window of a source image, ``size`` source pixels wide with its
top-left corner at source pixel ``(x0, y0)``, resampled to ``out_size x out_size``
network pixels. Areas of the window outside the source image are black (0).

* Tiles (trees): ``size == out_size``, so the view is an exact crop (no resampling).
* Letterbox (VOC): the whole image scaled so that its longer side is ``out_size``,
  placed at the top-left corner and padded with black below / to the right.
* Training augmentation (:class:`Augment`): the view's window is zoomed and shifted at
  random, then flipped and colour-jittered; boxes follow the same affine map.

Box coordinates are pixel edges (see :mod:`convforge.models.data.sample`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


def tile_positions(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets (pixels) of tiles of ``tile`` pixels covering ``[0, length)``.

    Tiles start every ``stride`` pixels; the last tile is moved back to end exactly at
    ``length`` so that no tile leaves the image (the last overlap may be larger). An
    image no longer than one tile gets a single tile at 0 (padded when rendered).
    """
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def crop_padded(image: np.ndarray, x0: int, y0: int, size: int) -> np.ndarray:
    """The ``size x size`` crop of ``image`` at integer ``(x0, y0)``; outside pixels are 0."""
    h, w = image.shape[:2]
    out = np.zeros((size, size, 3), dtype=np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + size, w), min(y0 + size, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def letterbox_size(width: int, height: int, out_size: int) -> tuple[int, int]:
    """Size ``(new_width, new_height)`` in pixels of an image letterboxed into ``out_size``."""
    s = out_size / max(width, height)
    return max(1, min(out_size, round(width * s))), max(1, min(out_size, round(height * s)))


def letterbox(image: np.ndarray, out_size: int) -> tuple[np.ndarray, float, float]:
    """Scale ``image`` so its longer side is ``out_size``; pad to a square at the top-left.

    Returns:
        ``(square uint8 image, sx, sy)`` where ``sx = new_width / width`` and
        ``sy = new_height / height`` are the exact per-axis scale factors (the shorter
        side is rounded to whole pixels).
    """
    h, w = image.shape[:2]
    nw, nh = letterbox_size(w, h, out_size)
    if (nw, nh) == (w, h):
        resized = image
    else:
        resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    out = np.zeros((out_size, out_size, 3), dtype=np.uint8)
    out[:nh, :nw] = resized
    return out, nw / w, nh / h


def affine_window(image: np.ndarray, x0: float, y0: float, size: float, out_size: int) -> np.ndarray:
    """Resample the window ``[x0, x0+size) x [y0, y0+size)`` (source pixels) to ``out_size``.

    Bilinear; the continuous map is ``source = (x0, y0) + network * size / out_size`` on
    pixel-edge coordinates. Only the part of the source under the window is converted
    to a PIL image, so large sources cost no more than small ones.
    """
    h, w = image.shape[:2]
    # One pixel of margin so bilinear sampling at the window border sees real neighbours.
    cx0 = max(0, math.floor(x0) - 1)
    cy0 = max(0, math.floor(y0) - 1)
    cx1 = min(w, math.ceil(x0 + size) + 1)
    cy1 = min(h, math.ceil(y0 + size) + 1)
    if cx1 <= cx0 or cy1 <= cy0:
        return np.zeros((out_size, out_size, 3), dtype=np.uint8)
    crop = Image.fromarray(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]))
    a = size / out_size
    data = (a, 0.0, x0 - cx0, 0.0, a, y0 - cy0)
    warped = crop.transform((out_size, out_size), Image.AFFINE, data, resample=Image.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(warped)


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _hue_rotation(turns: float) -> np.ndarray:
    """The 3x3 RGB matrix that rotates hue by ``turns`` (a rotation of YIQ's I-Q plane; luma kept)."""
    c, s = math.cos(2 * math.pi * turns), math.sin(2 * math.pi * turns)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return (np.linalg.inv(_RGB_TO_YIQ) @ rot @ _RGB_TO_YIQ).astype(np.float32)


@dataclass(frozen=True)
class Augment:
    """Training augmentation parameters.

    Attributes:
        scale_range: zoom factor range; the window shrinks by a factor drawn uniformly
            from it (``> 1`` zooms in, ``< 1`` zooms out and shows more context).
        shift: maximal shift of the window centre, as a fraction of the window size.
        hflip: flip left-right with probability 1/2.
        vflip: flip top-bottom with probability 1/2 (right for aerial images only).
        transpose: swap x and y with probability 1/2 (aerial images only); with both flips
            this draws every 90-degree rotation and mirror image equally often.
        brightness, contrast, saturation: each factor is drawn from ``[1 - v, 1 + v]``.
        hue: maximal hue rotation in turns (``0.05`` rotates the chroma plane of YIQ by up to
            +-18 degrees); 0 turns it off.
        blur: probability of a Gaussian blur with a sigma drawn from ``[0, blur_sigma]``
            pixels (defocus and resampling differences between sites and sensors).
        blur_sigma: largest blur sigma in pixels of the network input.
    """

    scale_range: tuple[float, float] = (0.6, 1.4)
    shift: float = 0.2
    hflip: bool = True
    vflip: bool = False
    transpose: bool = False
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.0
    blur: float = 0.0
    blur_sigma: float = 1.5

    def apply(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        window: tuple[float, float, float],
        out_size: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, tuple[float, float], tuple[float, float]]:
        """Render one augmented view.

        Args:
            image: the full source image, ``(H, W, 3)`` uint8.
            boxes: ``(n, 4)`` source boxes (pixel edges).
            window: the un-augmented view ``(x0, y0, size)`` in source pixels.
            out_size: network input size in pixels.
            rng: the generator that draws every random choice.

        Returns:
            ``(image, boxes, scale, origin)``: the ``out_size`` square uint8 image, the
            transformed but *unclipped* boxes (float32), and the affine map before flips
            (``scale`` network px per source px, ``origin`` in source px).
        """
        x0, y0, size = window
        zoom = rng.uniform(*self.scale_range)
        new_size = size / zoom
        cx = x0 + size / 2 + rng.uniform(-self.shift, self.shift) * size
        cy = y0 + size / 2 + rng.uniform(-self.shift, self.shift) * size
        nx0, ny0 = cx - new_size / 2, cy - new_size / 2
        out = affine_window(image, nx0, ny0, new_size, out_size)
        s = out_size / new_size
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        b[:, [0, 2]] = (b[:, [0, 2]] - nx0) * s
        b[:, [1, 3]] = (b[:, [1, 3]] - ny0) * s
        if self.hflip and rng.random() < 0.5:
            out = out[:, ::-1]
            b[:, [0, 2]] = out_size - b[:, [2, 0]]
        if self.vflip and rng.random() < 0.5:
            out = out[::-1, :]
            b[:, [1, 3]] = out_size - b[:, [3, 1]]
        if self.transpose and rng.random() < 0.5:
            out = out.transpose(1, 0, 2)
            b = b[:, [1, 0, 3, 2]]
        out = self.colour(out, rng)
        if self.blur and rng.random() < self.blur:
            sigma = rng.uniform(0, self.blur_sigma)
            out = np.asarray(Image.fromarray(np.ascontiguousarray(out)).filter(ImageFilter.GaussianBlur(sigma)))
        return out, b.astype(np.float32), (s, s), (nx0, ny0)

    def colour(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast, saturation and hue jitter (in that order) on a uint8 image."""
        x = image.astype(np.float32)
        x *= rng.uniform(1 - self.brightness, 1 + self.brightness)
        grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        x = x * c + (1 - c) * float(grey.mean())
        grey = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        sat = rng.uniform(1 - self.saturation, 1 + self.saturation)
        x = x * sat + (1 - sat) * grey
        if self.hue:
            x = x @ _hue_rotation(rng.uniform(-self.hue, self.hue)).T
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
