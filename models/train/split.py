"""Hold out a validation split from the *training* images (never from a test split).

Large tiled sources (the tree crowns): the bottom strip of the largest training image
becomes the validation region. Training views that could reach into it, even after
augmentation zooms out and shifts the window, are dropped, and training views are added
right at the allowed limit so no rows above the margin go unused.

Letterboxed datasets (VOC): every ``round(1 / fraction)``-th image.
"""

from __future__ import annotations

import math

from convforge.errors import DatasetError
from convforge.models.data import DetectionDataset, View, tile_positions


def reach_fraction(dataset: DetectionDataset) -> float:
    """How far (fraction of the view size) an augmented window can extend past its view:
    half the growth of the widest zoom-out plus the largest shift (see ``Augment.apply``)."""
    aug = dataset.augment
    if aug is None:
        return 0.0
    return (1.0 / min(aug.scale_range) - 1.0) / 2.0 + aug.shift


def holdout(
    train: DetectionDataset, val_source: DetectionDataset, fraction: float
) -> tuple[DetectionDataset, DetectionDataset]:
    """Split training views into (train, validation) datasets.

    Args:
        train: the augmented training dataset (its views are replaced).
        val_source: the same spec built without augmentation (deterministic views).
        fraction: the share of source area (tiled data) or images (letterboxed data) to
            hold out, in ``(0, 0.5]``.

    Returns:
        ``(train, val)``: ``train`` with the held-out region's views removed, ``val`` the
        deterministic views of the held-out region.
    """
    if not 0.0 < fraction <= 0.5:
        raise DatasetError(f"validation fraction {fraction} must be in (0, 0.5]")
    size = train.input_size
    tiled = all(v.size == size for v in train.views) and any(
        max(s.width, s.height) > size for s in train.sources
    )
    if not tiled:
        step = max(2, round(1.0 / fraction))
        keep = [v for i, v in enumerate(train.views) if i % step != step - 1]
        held = [v for i, v in enumerate(val_source.views) if i % step == step - 1]
        train.views = keep
        val_source.views = held
        val_source.name = f"{val_source.name} (held-out every {step}th image)"
        return train, val_source

    areas = [s.width * s.height for s in train.sources]
    big = max(range(len(train.sources)), key=lambda i: areas[i])
    src = train.sources[big]
    strip = max(size, math.ceil(fraction * sum(areas) / src.width))
    if strip >= src.height - size:
        raise DatasetError(
            f"cannot hold out {fraction:.0%} of the training area as a strip of {src.image_id}; "
            "lower the validation fraction"
        )
    val_y0 = src.height - strip
    margin = math.ceil(reach_fraction(train) * size)
    y_limit = val_y0 - margin - size  # the lowest allowed top edge of a training view
    if y_limit < 0:
        raise DatasetError(f"{src.image_id} is too small to hold out a validation strip at input size {size}")
    keep = [v for v in train.views if v.source != big or v.y0 <= y_limit]
    rows = {v.y0 for v in keep if v.source == big}
    if y_limit not in rows:
        keep += [View(big, x0, y_limit, size) for x0 in sorted({v.x0 for v in train.views if v.source == big})]
    train.views = keep
    xs = tile_positions(src.width, size, size)
    ys = [val_y0 + y for y in tile_positions(strip, size, size)]
    val_source.views = [View(big, x0, y0, size) for y0 in ys for x0 in xs]
    val_source.name = f"{val_source.name} (held-out strip y >= {val_y0} of {src.image_id})"
    return train, val_source
