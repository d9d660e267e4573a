"""VOC metric on hand-computed cases, CenterNet decoding (float and integer), plots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from convforge.errors import DatasetError, ShapeError
from convforge.models.data import CenterNetTargets, Sample
from convforge.models.eval import (
    Detections,
    GroundTruth,
    decode_float,
    decode_int,
    draw_detections,
    evaluate_samples,
    iou_voc,
    plot_pr_curve,
    voc_ap,
    voc_eval,
)


def _dets(rows: list[tuple[float, int, list[float]]]) -> Detections:
    """rows of (score, class, inclusive box)."""
    return Detections(
        boxes=np.array([r[2] for r in rows], dtype=np.float32).reshape(-1, 4),
        scores=np.array([r[0] for r in rows], dtype=np.float32),
        classes=np.array([r[1] for r in rows], dtype=np.int64),
    )


def _gt(rows: list[tuple[int, list[float], bool]]) -> GroundTruth:
    return GroundTruth(
        boxes=np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 4),
        labels=np.array([r[0] for r in rows], dtype=np.int64),
        difficult=np.array([r[2] for r in rows], dtype=bool),
    )


def _case():
    """Three classes over four images (inclusive pixel boxes, the "+1" rule).

    Class 0 ground truth: image a: g1 = [0,0,9,9], g2 = [20,0,29,9] DIFFICULT;
    image b: g3 = [0,0,9,9]; image c: nothing; image d: nothing of class 0.  npos = 2.
    Class 0 detections (listed out of score order on purpose):
      d5 0.5 on b [0,0,9,19]: area 10*20 = 200, inter 100, IoU = 100/200 = 0.5, NOT > 0.5 -> FP
      d1 0.9 on a [0,0,9,9]: IoU 1 with g1 -> TP (claims g1)
      d4 0.6 on c [0,0,9,9]: image without ground truth -> FP
      d2 0.8 on a [0,0,9,9]: g1 already claimed -> FP (duplicate)
      d6 0.4 on b [0,0,9,9]: IoU 1 with g3 -> TP
      d3 0.7 on a [20,0,29,9]: best match is difficult g2 -> neither TP nor FP
    Score order d1..d6: tp = 1 0 0 0 0 1, fp = 0 1 0 1 1 0
      cum tp = 1 1 1 1 1 2, cum fp = 0 1 1 2 3 3
      rec  = .5 .5 .5 .5 .5 1
      prec = 1 .5 .5 1/3 .25 2/5
    11-point: thresholds 0, .1, .2, .3, .4, .5 reach rec .5 -> max prec 1 (6 x 1);
      .6, .7, .8, .9, 1.0 reach only rec 1 -> prec .4 (5 x .4 = 2).  AP = 8/11.
    AUC: envelope over recall: p = 1 on (0, .5], p = .4 on (.5, 1]. AP = .5*1 + .5*.4 = 0.7.
    Class 1: one box on image b, no detections -> rec = prec = [], AP = 0 (both metrics).
    Class 2: no ground truth, one detection on d -> AP undefined (NaN), left out of the mean.
    Mean: 11-point (8/11 + 0) / 2 = 4/11; AUC (0.7 + 0) / 2 = 0.35.
    """
    gts = {
        "a": _gt([(0, [0, 0, 9, 9], False), (0, [20, 0, 29, 9], True)]),
        "b": _gt([(0, [0, 0, 9, 9], False), (1, [40, 40, 60, 60], False)]),
        "c": _gt([]),
        "d": _gt([]),
    }
    dets = {
        "b": _dets([(0.5, 0, [0, 0, 9, 19]), (0.4, 0, [0, 0, 9, 9])]),
        "a": _dets([(0.9, 0, [0, 0, 9, 9]), (0.8, 0, [0, 0, 9, 9]), (0.7, 0, [20, 0, 29, 9])]),
        "c": _dets([(0.6, 0, [0, 0, 9, 9])]),
        "d": _dets([(0.3, 2, [0, 0, 5, 5])]),
    }
    return dets, gts


def test_voc_eval_11_point_hand_case():
    dets, gts = _case()
    res = voc_eval(dets, gts, num_classes=3)
    np.testing.assert_array_equal(res.rec[0], [0.5, 0.5, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(res.prec[0], [1, 0.5, 0.5, 1 / 3, 0.25, 0.4], rtol=0, atol=1e-15)
    assert res.npos.tolist() == [2, 1, 0]
    assert res.ap[0] == pytest.approx(8 / 11, abs=1e-12)
    assert res.ap[1] == 0.0 and res.rec[1].size == 0
    assert np.isnan(res.ap[2])
    assert res.mean_ap == pytest.approx(4 / 11, abs=1e-12)


def test_voc_eval_area_under_curve_hand_case():
    dets, gts = _case()
    res = voc_eval(dets, gts, use_07_metric=False, num_classes=3)
    assert res.ap[0] == pytest.approx(0.7, abs=1e-12)
    assert res.ap[1] == 0.0
    assert res.mean_ap == pytest.approx(0.35, abs=1e-12)


def test_iou_exactly_half_does_not_match_but_just_above_does():
    # One GT [0,0,9,9] (area 100).  A det [0,0,9,19] has IoU 100/200 = 0.5 -> FP, AP 0.
    gts = {"x": _gt([(0, [0, 0, 9, 9], False)])}
    res = voc_eval({"x": _dets([(0.9, 0, [0, 0, 9, 19])])}, gts)
    assert res.ap[0] == 0.0
    # [0,0,9,18]: area 190, IoU 100/190 = 0.526 > 0.5 -> TP; rec = prec = [1], AP = 1 (11 x 1 / 11).
    res = voc_eval({"x": _dets([(0.9, 0, [0, 0, 9, 18])])}, gts)
    assert res.ap[0] == pytest.approx(1.0, abs=1e-12)
    # The threshold is a parameter: at 0.4 the IoU-0.5 box matches.
    res = voc_eval({"x": _dets([(0.9, 0, [0, 0, 9, 19])])}, gts, iou_thresh=0.4)
    assert res.ap[0] == pytest.approx(1.0, abs=1e-12)


def test_iou_uses_the_plus_one_pixel_rule():
    # Inclusive [0,0,1,1] covers 2x2 = 4 px, [0,0,1,2] covers 2x3 = 6 px: IoU 4/6.
    # (Without the +1 the areas would be 1 and 2 and the IoU 0.5.)
    assert iou_voc(np.array([0.0, 0, 1, 2]), np.array([[0.0, 0, 1, 1]]))[0] == 4 / 6
    # Disjoint boxes touching at a pixel edge share no pixel: [0..1] and [2..3].
    assert iou_voc(np.array([2.0, 0, 3, 1]), np.array([[0.0, 0, 1, 1]]))[0] == 0.0


def test_detection_on_difficult_box_first_gives_zero_precision_not_nan():
    # d1 hits the difficult box: tp = fp = 0 -> prec 0/eps = 0 (the original divides 0/0).
    # d2 hits the real box: rec = [0, 1], prec = [0, 1]; 11-point AP = 1 (every t reaches rec 1).
    gts = {"x": _gt([(0, [0, 0, 9, 9], False), (0, [50, 50, 59, 59], True)])}
    res = voc_eval({"x": _dets([(0.9, 0, [50, 50, 59, 59]), (0.8, 0, [0, 0, 9, 9])])}, gts)
    np.testing.assert_array_equal(res.prec[0], [0.0, 1.0])
    np.testing.assert_array_equal(res.rec[0], [0.0, 1.0])
    assert res.ap[0] == pytest.approx(1.0, abs=1e-12)


def test_voc_ap_11_point_thresholds_are_numpy_arange_values():
    # rec 0.3 reaches t = 0, .1, .2 but not np.arange's 0.30000000000000004: AP = 3/11.
    assert voc_ap(np.array([0.3]), np.array([1.0])) == pytest.approx(3 / 11, abs=1e-12)
    # rec 0.5 reaches 0 .. 0.5 (six thresholds): AP = 6/11 at precision 1.
    assert voc_ap(np.array([0.5]), np.array([1.0])) == pytest.approx(6 / 11, abs=1e-12)


def test_voc_ap_area_under_curve_hand_case():
    # rec .25 .5 .5 .75, prec 1 .5 .4 .6: envelope 1 on (0,.25], .6 on (.25,.75], 0 beyond.
    # AP = .25*1 + .5*.6 = 0.55.
    ap = voc_ap(np.array([0.25, 0.5, 0.5, 0.75]), np.array([1.0, 0.5, 0.4, 0.6]), use_07_metric=False)
    assert ap == pytest.approx(0.55, abs=1e-12)
    # 11-point on the same: t 0..0.2 -> 1 (3), t .3..0.7 -> .6 (5 x .6 = 3), t .8..1 -> 0: (3 + 3)/11.
    ap = voc_ap(np.array([0.25, 0.5, 0.5, 0.75]), np.array([1.0, 0.5, 0.4, 0.6]))
    assert ap == pytest.approx(6 / 11, abs=1e-12)


def test_detections_for_unknown_image_are_an_error():
    with pytest.raises(DatasetError, match="without ground truth"):
        voc_eval({"zz": _dets([(0.9, 0, [0, 0, 1, 1])])}, {"x": _gt([])})


def test_evaluate_samples_converts_pixel_edges():
    # Edge GT [0,0,10,10] = inclusive [0,0,9,9]; edge det [0,0,10,20] = inclusive [0,0,9,19]:
    # IoU exactly 0.5 -> no match; edge det [0,0,10,19] -> IoU 100/190 -> match.
    s = Sample(np.zeros((0, 0, 3), np.uint8), [[0, 0, 10, 10]], [0], [False], "t")
    miss = Detections(np.array([[0, 0, 10, 20]], np.float32), np.array([0.9], np.float32), np.array([0]))
    hit = Detections(np.array([[0, 0, 10, 19]], np.float32), np.array([0.9], np.float32), np.array([0]))
    assert evaluate_samples({"t": miss}, [s], num_classes=1).ap[0] == 0.0
    assert evaluate_samples({"t": hit}, [s], num_classes=1).ap[0] == pytest.approx(1.0)
    with pytest.raises(DatasetError, match="share"):
        evaluate_samples({}, [s, s], num_classes=1)


# ----------------------------------------------------------------------------- decoding


def _peak_oracle(q: np.ndarray, k: int) -> list[tuple[int, int, int]]:
    """Loop reference of INTEGER_SPEC v1.1 §5 on one image's (C, H, W) integer heatmap:
    a peak is >= every neighbour and > every neighbour before it in raster order."""
    c, h, w = q.shape
    cand = []
    for ci in range(c):
        for y in range(h):
            for x in range(w):
                v = int(q[ci, y, x])
                ok = all(
                    (v > int(q[ci, yy, xx])) if (yy, xx) < (y, x) else (v >= int(q[ci, yy, xx]))
                    for yy in range(y - 1, y + 2)
                    for xx in range(x - 1, x + 2)
                    if 0 <= yy < h and 0 <= xx < w and (yy, xx) != (y, x)
                )
                if ok:
                    cand.append((-int(q[ci, y, x]), (ci * h + y) * w + x, (ci, y, x)))
    cand.sort()
    return [c[2] for c in cand[:k]]


def _positions(det: Detections, down: int) -> list[tuple[int, int, int]]:
    # With wh = reg = 0 every box is the point (x*down, y*down).
    return [(int(c), int(b[1]) // down, int(b[0]) // down) for b, c in zip(det.boxes, det.classes, strict=True)]


def test_decode_int_peaks_and_ties_match_loop_oracle():
    gen = torch.Generator().manual_seed(3)
    # Values from a tiny range: many plateaus (one peak each, v1.1) and ties.
    hm = torch.randint(-3, 4, (2, 3, 7, 9), generator=gen, dtype=torch.int64).to(torch.int8)
    zeros = torch.zeros(2, 2, 7, 9, dtype=torch.int8)
    for k in (1, 5, 40, 1000):
        out = decode_int(hm, zeros, zeros, (0.5, 1.0, 1.0), K=k, down=4)
        for i in range(2):
            assert _positions(out[i], 4) == _peak_oracle(hm[i].numpy(), k)


def test_decode_int_tie_goes_to_lower_flat_index():
    hm = torch.full((1, 2, 5, 5), -100, dtype=torch.int8)
    hm[0, 1, 0, 0] = 50  # flat index 25
    hm[0, 0, 4, 4] = 50  # flat index 24: lower, so it wins the tie
    hm[0, 0, 2, 0] = 49
    zeros = torch.zeros(1, 2, 5, 5, dtype=torch.int8)
    out = decode_int(hm, zeros, zeros, (0.1, 1.0, 1.0), K=3, down=4)[0]
    assert _positions(out, 4) == [(0, 4, 4), (1, 0, 0), (0, 2, 0)]
    only = decode_int(hm, zeros, zeros, (0.1, 1.0, 1.0), K=1, down=4)[0]
    assert _positions(only, 4) == [(0, 4, 4)]


def test_decode_int_equals_decode_float_on_dequantised_heads():
    gen = torch.Generator().manual_seed(7)
    n, c, h, w = 2, 2, 8, 8
    # Distinct heatmap integers: no ties anywhere.
    hm = torch.stack([torch.randperm(256, generator=gen)[: c * h * w] - 128 for _ in range(n)]).reshape(n, c, h, w)
    hm = hm.to(torch.int8)
    wh = torch.randint(0, 127, (n, 2, h, w), generator=gen, dtype=torch.int64).to(torch.int8)
    reg = torch.randint(0, 16, (n, 2, h, w), generator=gen, dtype=torch.int64).to(torch.int8)
    s_hm, s_wh, s_reg = 0.0625, 0.125, 1 / 16
    ints = decode_int(hm, wh, reg, {"hm": s_hm, "wh": s_wh, "reg": s_reg}, K=20)
    floats = decode_float(hm.float() * s_hm, wh.float() * s_wh, reg.float() * s_reg, K=20)
    for a, b in zip(ints, floats, strict=True):
        assert len(a) == len(b) > 0
        assert np.array_equal(a.classes, b.classes)
        assert np.array_equal(a.boxes, b.boxes)
        assert np.array_equal(a.scores, b.scores)
        assert np.all(np.diff(a.scores) <= 0)


def test_decode_rejects_float_integer_heads_and_bad_shapes():
    hm = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ShapeError, match="integer"):
        decode_int(hm, hm, hm, (1, 1, 1))
    with pytest.raises(ShapeError, match="wh"):
        decode_float(hm, torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 4, 4))


def _perfect_heads(targets: dict[str, np.ndarray], down: int) -> tuple[torch.Tensor, ...]:
    """Heads a perfect network would output for ``targets`` (logit of the Gaussian heatmap)."""
    hm = np.clip(targets["hm"], 1e-4, 1 - 1e-4)
    logits = torch.from_numpy(np.log(hm / (1 - hm)))[None]
    c, s, _ = targets["hm"].shape
    wh = np.zeros((2, s * s), np.float32)
    reg = np.zeros((2, s * s), np.float32)
    m = targets["mask"] > 0
    wh[:, targets["ind"][m]] = targets["wh"][m].T
    reg[:, targets["ind"][m]] = targets["reg"][m].T
    return logits, torch.from_numpy(wh.reshape(1, 2, s, s)), torch.from_numpy(reg.reshape(1, 2, s, s))


def test_targets_decode_round_trip_gives_ap_one():
    boxes = np.array([[10, 20, 50, 40], [100.5, 30, 140, 90], [200, 200, 255, 256], [30, 150, 45, 170]], np.float32)
    labels = np.array([0, 2, 1, 0])
    sample = Sample(np.zeros((256, 256, 3), np.uint8), boxes, labels, np.zeros(4, bool), "img")
    targets = CenterNetTargets(num_classes=3, input_size=256)(boxes, labels)
    det = decode_float(*_perfect_heads(targets, 4), K=100)[0]
    top = det.boxes[:4]
    order = np.lexsort((top[:, 0],))
    np.testing.assert_allclose(top[order], boxes[np.argsort(boxes[:, 0])], atol=1e-3)
    res = evaluate_samples({"img": det}, [sample], num_classes=3)
    np.testing.assert_allclose(res.ap, [1.0, 1.0, 1.0], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- plots


def test_plots_write_pngs(tmp_path):
    p = plot_pr_curve(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]), 0.8, tmp_path / "pr" / "c.png", "tree")
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size[0] > 100
    image = np.full((64, 96, 3), 40, np.uint8)
    q = draw_detections(image, np.array([[10, 10, 30, 30], [50, 5, 60, 20]]), np.array([0.9, 0.1]),
                        np.array([[40, 30, 80, 60]]), tmp_path / "det.png", score_thresh=0.5)  # fmt: skip
    with Image.open(q) as im:
        assert im.size == (96, 64)
        arr = np.asarray(im.convert("RGB")).astype(int)
    # GT outline (green) on its left edge, prediction (red) on its top edge, nothing on the
    # below-threshold box, background untouched.
    assert arr[45, 40, 1] > 150 and arr[45, 40, 0] < 120
    assert arr[10, 20, 0] > 150 and arr[10, 20, 1] < 120
    assert np.all(np.abs(arr[12, 58] - 40) < 10)
    assert np.all(np.abs(arr[50, 10] - 40) < 10)
