"""`convforge detect` pre/post-processing: views, mapping back to source pixels, tile merging."""

import numpy as np
import pytest

from convforge.errors import ConfigError
from convforge.sw.detect import merge_detections, plan_views, to_source


def test_small_image_is_one_letterbox_view_and_boxes_map_back_to_source_pixels():
    image = np.full((300, 600, 3), 9, np.uint8)
    (view,) = plan_views(image, 416)
    assert view.kind == "letterbox" and view.image.shape == (416, 416, 3)
    assert view.scale == (416 / 600, 208 / 300)
    assert (view.image[208:] == 0).all() and (view.image[:208] == 9).all()
    net = np.array([[41.6, 20.8, 208.0, 104.0]])
    assert np.allclose(to_source(net, view, 600, 300), [[60, 30, 300, 150]], atol=1e-3)


def test_large_image_is_tiled_with_overlap_covering_every_pixel():
    image = np.random.default_rng(0).integers(0, 256, (700, 1000, 3), dtype=np.uint8)
    views = plan_views(image, 416, overlap=64)
    xs = sorted({v.origin[0] for v in views})
    ys = sorted({v.origin[1] for v in views})
    assert xs == [0, 352, 584] and ys == [0, 284]
    assert all(v.kind == "tile" and v.scale == (1.0, 1.0) for v in views)
    v = views[-1]
    x0, y0 = int(v.origin[0]), int(v.origin[1])
    assert np.array_equal(v.image, image[y0 : y0 + 416, x0 : x0 + 416])
    clipped = to_source(np.array([[400.0, 400.0, 500.0, 500.0]]), v, 1000, 700)
    assert np.allclose(clipped, [[984, 684, 1000, 700]])


def test_tiling_modes_and_overlap_are_checked():
    image = np.zeros((100, 100, 3), np.uint8)
    assert len(plan_views(image, 64, tile="always", overlap=0)) == 4
    with pytest.raises(ConfigError, match="overlap 64 px"):
        plan_views(image, 64, tile="always", overlap=64)
    with pytest.raises(ConfigError, match="tile mode"):
        plan_views(image, 64, tile="sometimes")


def test_merge_keeps_one_box_per_object_across_tiles_and_keeps_other_classes():
    boxes = np.array([[10, 10, 50, 50], [12, 11, 51, 50], [12, 11, 51, 50], [200, 200, 220, 220]], np.float32)
    scores = np.array([0.6, 0.9, 0.5, 0.4], np.float32)
    classes = np.array([0, 0, 1, 0])
    assert merge_detections(boxes, scores, classes).tolist() == [1, 2, 3]
