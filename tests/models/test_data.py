"""Datasets: VOC devkit loading, DeepForest tree tiles, augmentation, CenterNet targets."""

from __future__ import annotations

import importlib.util
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from PIL import Image

from convforge.errors import DatasetError, ShapeError
from convforge.models.data import (
    VOC_CLASSES,
    Augment,
    CenterNetTargets,
    Sample,
    clip_and_filter,
    deepforest_data_dir,
    gaussian_radius,
    get_dataset,
    make_collate,
    tile_positions,
)

# ----------------------------------------------------------------------------- a tiny VOCdevkit


def _voc_xml(width: int, height: int, objects: list[tuple[str, tuple[int, int, int, int], int]]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    return (
        f"<annotation><folder>VOC2007</folder><size><width>{width}</width><height>{height}</height>"
        f"<depth>3</depth></size>{objs}</annotation>"
    )


# image id -> (width, height, objects as (class, 1-based inclusive box, difficult))
_VOC_IMAGES = {
    "000001": (200, 100, [("dog", (11, 21, 60, 80), 0), ("person", (100, 1, 200, 100), 1)]),
    "000002": (120, 160, [("tvmonitor", (1, 1, 40, 30), 0)]),
    "000003": (64, 64, []),
}


@pytest.fixture
def voc_root(tmp_path):
    root = tmp_path / "VOCdevkit"
    year = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id, (w, h, objs) in _VOC_IMAGES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(year / "JPEGImages" / f"{image_id}.jpg")
        (year / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(w, h, objs))
    (year / "ImageSets/Main/trainval.txt").write_text("000001\n000002\n")
    (year / "ImageSets/Main/test.txt").write_text("000003\n000001\n")
    return root


def test_voc_loader_converts_boxes_and_keeps_difficult(voc_root):
    ds = get_dataset(f"voc:{voc_root}:2007:trainval", input_size=128)
    assert ds.class_names == VOC_CLASSES and ds.num_classes == 20 and len(ds) == 2
    s = ds[0]
    assert s.image_id == "000001" and s.image.shape == (128, 128, 3) and s.image.dtype == np.uint8
    # 200x100 letterboxed to 128x64 (scale 0.64), top-left; VOC (xmin-1, ymin-1, xmax, ymax).
    assert s.scale == (0.64, 0.64)
    expected = np.array([[10, 20, 60, 80], [99, 0, 200, 100]], np.float32) * np.float32(0.64)
    np.testing.assert_allclose(s.boxes, expected, rtol=1e-6)
    assert s.labels.tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert s.difficult.tolist() == [False, True]
    assert np.all(s.image[64:] == 0) and s.image[:64].std() > 10  # padding below, content above
    ann = ds.annotations(0)
    assert ann.image.size == 0 and np.array_equal(ann.boxes, s.boxes) and np.array_equal(ann.labels, s.labels)


def test_voc_defaults_and_empty_image(voc_root):
    test = get_dataset(f"voc:{voc_root}", input_size=64)  # default: 2007 test
    assert [test.annotations(i).image_id for i in range(len(test))] == ["000003", "000001"]
    empty = test[0]
    assert empty.boxes.shape == (0, 4) and empty.image.shape == (64, 64, 3)
    big = get_dataset(f"voc:{voc_root}:2007:test", input_size=256)
    assert big[0].scale == (4.0, 4.0) and big[0].image.std() > 10  # small images are scaled up too
    assert big[1].scale == (1.28, 1.28) and np.all(big[1].image[128:] == 0)
    train = get_dataset(f"voc:{voc_root}", train=True, input_size=64)  # default: trainval
    assert len(train) == 2 and train.train


@pytest.mark.parametrize(
    "spec, message",
    [
        ("voc", "bad dataset spec"),
        ("coco:/x", "unknown dataset kind"),
        ("trees:val", "'train' or 'test'"),
        ("voc:/nonexistent/VOCdevkit", "not a folder"),
    ],
)
def test_bad_specs_say_what_is_expected(spec, message):
    with pytest.raises(DatasetError, match=message):
        get_dataset(spec)


def test_voc_layout_errors_name_the_layout(voc_root):
    with pytest.raises(DatasetError, match="ImageSets/Main"):
        get_dataset(f"voc:{voc_root}:2012:trainval")
    with pytest.raises(DatasetError, match="cannot be used for training"):
        get_dataset(f"voc:{voc_root}:2007:test", train=True)
    (voc_root / "VOC2007/Annotations/000002.xml").write_text(_voc_xml(120, 160, [("unicorn", (1, 1, 5, 5), 0)]))
    with pytest.raises(DatasetError, match="unicorn"):
        get_dataset(f"voc:{voc_root}:2007:trainval")


# ----------------------------------------------------------------------------- geometry


def test_tile_positions_cover_and_end_at_border():
    assert tile_positions(400, 256, 256) == [0, 144]
    assert tile_positions(256, 256, 192) == [0]
    assert tile_positions(100, 256, 192) == [0]
    assert tile_positions(640, 256, 192) == [0, 192, 384]
    assert tile_positions(641, 256, 192) == [0, 192, 384, 385]


def test_clip_and_filter_slivers():
    boxes = np.array([[-5, 0, 15, 10], [-15, 0, 5, 10], [0, 0, 10, 2.5], [-20, -20, -1, -1]], np.float32)
    clipped, good, visible = clip_and_filter(boxes, 100, 100)
    # 75 % visible: kept; 25 % visible: sliver; 2.5 px tall: sliver; outside: not visible.
    assert good.tolist() == [True, False, False, False]
    assert visible.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(clipped[0], [0, 0, 15, 10])


def test_augmentation_moves_boxes_with_the_pixels():
    # White boxes on black: after zoom, shift and flips, each kept box must cover white pixels
    # and the ring just outside it must be black.
    img = np.zeros((300, 300, 3), np.uint8)
    boxes = np.array([[40, 50, 90, 120], [150, 160, 230, 200], [200, 30, 260, 80]], np.float32)
    for x1, y1, x2, y2 in boxes.astype(int):
        img[y1:y2, x1:x2] = 255
    aug = Augment(scale_range=(0.7, 1.4), shift=0.2, hflip=True, vflip=True, transpose=True, brightness=0,
                  contrast=0, saturation=0)  # fmt: skip
    checked = 0
    for seed in range(12):
        out, b, _, _ = aug.apply(img, boxes, (0.0, 0.0, 300.0), 128, np.random.default_rng(seed))
        clipped, good, _ = clip_and_filter(b, 128, 128)
        for x1, y1, x2, y2 in clipped[good]:
            inner = out[math.ceil(y1) + 1 : math.floor(y2) - 1, math.ceil(x1) + 1 : math.floor(x2) - 1]
            assert inner.size and inner.min() > 200
            xs = [int(x1) - 2, math.ceil(x2) + 1]
            for x in xs:
                if 0 <= x < 128:
                    col = out[math.ceil(y1) + 1 : math.floor(y2) - 1, x]
                    assert col.max() < 60
            checked += 1
    assert checked > 10


def test_transpose_swaps_the_axes_of_pixels_and_boxes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    boxes = np.array([[5, 10, 20, 40]], np.float32)
    aug = Augment(scale_range=(1, 1), shift=0, hflip=False, vflip=False, transpose=True, brightness=0,
                  contrast=0, saturation=0)  # fmt: skip
    seen = set()
    for seed in range(8):
        out, b, _, _ = aug.apply(img, boxes, (0.0, 0.0, 64.0), 64, np.random.default_rng(seed))
        swapped = np.array_equal(out, img.transpose(1, 0, 2))
        assert swapped or np.array_equal(out, img)
        np.testing.assert_allclose(b, [[10, 5, 40, 20]] if swapped else boxes, atol=1e-4)
        seen.add(swapped)
    assert seen == {True, False}


def test_hue_rotation_keeps_luma_and_grey_and_turns_red_towards_yellow():
    aug = Augment(scale_range=(1, 1), shift=0, hflip=False, brightness=0, contrast=0, saturation=0, hue=0.05)
    grey = np.full((4, 4, 3), 128, np.uint8)
    red = np.zeros((4, 4, 3), np.uint8)
    red[...] = (170, 100, 100)  # a muted red: the rotated colours stay inside 0..255
    hues = set()
    for seed in range(6):
        assert np.array_equal(aug.colour(grey, np.random.default_rng(seed)), grey)  # no chroma, nothing to turn
        out = aug.colour(red, np.random.default_rng(seed)).astype(float)
        luma = out[0, 0] @ [0.299, 0.587, 0.114]
        assert abs(luma - np.dot((170, 100, 100), [0.299, 0.587, 0.114])) <= 1.5
        hues.add(int(np.sign(out[0, 0, 1] - out[0, 0, 2])))  # green gains (towards yellow) or blue gains (magenta)
    assert hues == {-1, 1}
    still = Augment(brightness=0, contrast=0, saturation=0, hue=0.0)
    assert np.array_equal(still.colour(red, np.random.default_rng(0)), red)


def test_blur_softens_an_edge_and_keeps_the_boxes():
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 255
    boxes = np.array([[5, 10, 20, 40]], np.float32)
    sharp = Augment(scale_range=(1, 1), shift=0, hflip=False, brightness=0, contrast=0, saturation=0)
    blurry = Augment(scale_range=(1, 1), shift=0, hflip=False, brightness=0, contrast=0, saturation=0, blur=1.0,
                     blur_sigma=2.0)  # fmt: skip
    soft = 0
    for seed in range(6):
        out, b, _, _ = blurry.apply(img, boxes, (0.0, 0.0, 64.0), 64, np.random.default_rng(seed))
        np.testing.assert_allclose(b, boxes, atol=1e-4)
        edge = out[32, 28:36, 0]
        assert np.all(np.diff(edge.astype(int)) >= 0)  # still a monotone step
        soft += int(np.count_nonzero((edge > 0) & (edge < 255)) >= 2)
    assert soft >= 4  # sigma is drawn from [0, 2]: most draws spread the step over several pixels
    out, _, _, _ = sharp.apply(img, boxes, (0.0, 0.0, 64.0), 64, np.random.default_rng(0))
    assert np.count_nonzero((out[32, :, 0] > 0) & (out[32, :, 0] < 255)) <= 1


def test_training_views_are_seeded_and_epoch_dependent(voc_root):
    a = get_dataset(f"voc:{voc_root}:2007:trainval", train=True, input_size=64, seed=5)
    b = get_dataset(f"voc:{voc_root}:2007:trainval", train=True, input_size=64, seed=5)
    assert np.array_equal(a[0].image, b[0].image) and np.array_equal(a[0].boxes, b[0].boxes)
    first = a[0].image
    a.set_epoch(1)
    assert not np.array_equal(a[0].image, first)
    s = a[0]
    assert np.all(s.boxes >= 0) and np.all(s.boxes <= 64)
    assert np.all(s.boxes[:, 2] - s.boxes[:, 0] >= 3) and np.all(s.boxes[:, 3] - s.boxes[:, 1] >= 3)


# ----------------------------------------------------------------------------- DeepForest trees


def _xml_boxes(path) -> np.ndarray:
    root = ET.parse(path).getroot()
    return np.array(
        [[float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")] for o in root.iter("object")]
    )


def test_trees_split_is_disjoint_and_counts_match_tiling():
    train = get_dataset("trees:train")
    test = get_dataset("trees:test")
    train_ids = {s.image_id for s in train.sources}
    test_ids = {s.image_id for s in test.sources}
    assert train_ids.isdisjoint(test_ids)
    assert test_ids == {"OSBS_029", "SOAP_061"}
    # 2299x2472 -> 12 x 13 tiles, 1249x1035 -> 7 x 6 tiles at stride 192; 400x400 -> 2 x 2 at stride 256.
    assert len(train) == 12 * 13 + 7 * 6
    assert len(test) == 8
    assert [len(s.boxes) for s in train.sources] == [574, 279]
    assert [len(s.boxes) for s in test.sources] == [61, 37]
    assert train.class_names == ("tree",) and all(np.all(s.labels == 0) for s in test.sources)
    with pytest.raises(DatasetError, match="held-out"):
        get_dataset("trees:test", train=True)


def test_tree_test_tile_is_an_exact_crop_with_clipped_boxes():
    ds = get_dataset("trees:test")
    i = next(k for k, v in enumerate(ds.views) if (v.x0, v.y0) == (144, 144))
    s = ds[i]
    data = deepforest_data_dir()
    src_id = s.image_id.split("@")[0]
    with Image.open(data / f"{src_id}.png") as im:
        full = np.asarray(im.convert("RGB"))
    assert np.array_equal(s.image, full[144:400, 144:400])
    # Oracle from the XML: shift, clip to the tile, keep boxes with any area; slivers are difficult.
    raw = _xml_boxes(data / f"{src_id}.xml") - [144, 144, 144, 144]
    clipped = np.clip(raw, 0, 256)
    area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    full_area = (raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1])
    keep = area > 0
    sliver = (area < 0.4 * full_area) | (clipped[:, 2] - clipped[:, 0] < 3) | (clipped[:, 3] - clipped[:, 1] < 3)
    np.testing.assert_array_equal(s.boxes, clipped[keep].astype(np.float32))
    np.testing.assert_array_equal(s.difficult, sliver[keep])


def test_trees_missing_data_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepforest" else real(name, *a))
    with pytest.raises(DatasetError, match=r"pip install --no-deps deepforest==2\.1\.0"):
        get_dataset("trees:test")


# ----------------------------------------------------------------------------- CenterNet targets


def test_gaussian_radius_hand_value():
    # h=5, w=10, overlap .7: r1 = (15 + sqrt(225 - 4*50*.3/1.7)) / 2 = 14.386,
    # r2 = (30 + sqrt(900 - 16*15)) / 2 = 27.845, r3 = (-21 + sqrt(441 + 4*2.8*15)) / 2 = 3.6779 / 2 = 1.8390.
    assert gaussian_radius((5, 10)) == pytest.approx((-21 + math.sqrt(609)) / 2, rel=1e-12)
    assert gaussian_radius((5, 10)) == pytest.approx(1.8390, abs=1e-4)


def test_centernet_targets_hand_case():
    t = CenterNetTargets(num_classes=3, input_size=256, down=4, max_objs=4)
    boxes = np.array([[10, 20, 50, 40], [0, 0, 8, 8], [100, 100, 140, 140]], np.float32)
    out = t(boxes, np.array([2, 1, 0]), np.array([False, False, True]))
    # Box 0 in output units: (2.5, 5, 12.5, 10): centre (7.5, 7.5) -> cell (7, 7), reg (.5, .5),
    # wh (10, 5), ind 7*64+7 = 455; radius int(1.839) = 1, sigma = 3/6: neighbour exp(-1/(2*.25)) = e^-2.
    np.testing.assert_array_equal(out["wh"][0], [10, 5])
    np.testing.assert_array_equal(out["reg"][0], [0.5, 0.5])
    assert out["ind"][0] == 455
    hm = out["hm"][2]
    assert hm[7, 7] == 1.0
    assert hm[7, 8] == pytest.approx(math.exp(-2), rel=1e-6) and hm[6, 6] == pytest.approx(math.exp(-4), rel=1e-6)
    assert hm[7, 9] == 0.0 and hm[5, 7] == 0.0
    # Box 1: (0, 0, 2, 2): centre (1, 1), reg 0; radius of (2, 2) is 0 -> a single 1.
    assert out["ind"][1] == 65 and out["hm"][1].sum() == 1.0
    # Box 2 is difficult: left out. Masks.
    assert out["mask"].tolist() == [1, 1, 0, 0] and out["hm"][0].sum() == 0
    with pytest.raises(ShapeError, match="label"):
        t(boxes[:1], np.array([3]))


def test_targets_respect_max_objs():
    t = CenterNetTargets(num_classes=1, input_size=64, max_objs=2)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    out = t(boxes, np.zeros(3, np.int64))
    assert out["mask"].sum() == 2 and out["hm"][0].max() == 1.0 and out["hm"][0, 11, 11] == 0.0


def test_collate_raw_pixels_and_target_shapes():
    rng = np.random.default_rng(1)
    samples = [
        Sample(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), [[1, 2, 20, 30]], [0], [False], f"s{i}")
        for i in range(3)
    ]
    batch = make_collate(num_classes=2, input_size=32, max_objs=5)(samples)
    images, targets, got = batch
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert torch.equal(images[1].permute(1, 2, 0), torch.from_numpy(samples[1].image).float())
    assert targets["hm"].shape == (3, 2, 8, 8) and targets["wh"].shape == (3, 5, 2)
    assert targets["ind"].dtype == torch.int64 and targets["mask"].sum() == 3
    assert got[2].image_id == "s2"
    with pytest.raises(ShapeError, match="expected"):
        make_collate(2, 64)(samples)
