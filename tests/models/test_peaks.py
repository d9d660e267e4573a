"""INTEGER_SPEC v1.1 §5 peaks (plateaus give one peak), NaN-safe, in both decoders; boxes are
clipped to the image and never inverted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from convforge.errors import ShapeError
from convforge.models.eval.decode import decode_float, decode_int, peak_mask
from convforge.models.quant.compare import heatmap_peaks


def loop_peaks(q: np.ndarray) -> np.ndarray:
    """Spec §5 as loops on one (H, W) plane: >= every neighbour, > the ones before in raster order."""
    h, w = q.shape
    out = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            out[y, x] = all(
                (q[y, x] > q[yy, xx]) if (yy, xx) < (y, x) else (q[y, x] >= q[yy, xx])
                for yy in range(max(0, y - 1), min(h, y + 2))
                for xx in range(max(0, x - 1), min(w, x + 2))
                if (yy, xx) != (y, x)
            )
    return out


def _plane(cells: list[tuple[int, int]], shape=(5, 6), value=9) -> torch.Tensor:
    """``value`` on ``cells``; elsewhere a background that falls strictly away from the
    bottom-right corner (its only peak is there, unless a plateau cell touches it)."""
    h, w = shape
    q = (torch.arange(h).view(h, 1) + torch.arange(w).view(1, w)).to(torch.int64).view(1, 1, h, w) - 20
    for y, x in cells:
        q[0, 0, y, x] = value
    return q


def _decoded_cells(q: torch.Tensor) -> set[tuple[int, int]]:
    """Peak cells found by both decoders (and heatmap_peaks), which must agree."""
    zeros = torch.zeros(1, 2, *q.shape[2:])
    ints = decode_int(q.to(torch.int8), zeros.to(torch.int8), zeros.to(torch.int8), (0.1, 1.0, 1.0), K=1000)[0]
    floats = decode_float(q.double() * 0.1, zeros, zeros, K=1000)[0]
    cells = {(int(b[1]) // 4, int(b[0]) // 4) for b in ints.boxes}
    assert cells == {(int(b[1]) // 4, int(b[0]) // 4) for b in floats.boxes}
    assert cells == {tuple(int(i) for i in yx) for yx in torch.nonzero(heatmap_peaks(q)[0, 0])}
    return cells


@pytest.mark.parametrize(
    "name,cells,peak",
    [
        ("2x1 horizontal", [(2, 2), (2, 3)], (2, 2)),
        ("1x2 vertical", [(1, 4), (2, 4)], (1, 4)),
        ("2x2", [(1, 1), (1, 2), (2, 1), (2, 2)], (1, 1)),
        ("L-shaped", [(1, 1), (2, 1), (3, 1), (3, 2), (3, 3)], (1, 1)),
        ("diagonal", [(0, 4), (1, 3), (2, 2)], (0, 4)),
        ("top-left corner", [(0, 0), (0, 1), (1, 0), (1, 1)], (0, 0)),
        ("bottom-right border", [(4, 4), (4, 5), (3, 5)], (3, 5)),
        ("whole map flat", [(y, x) for y in range(5) for x in range(6)], (0, 0)),
    ],
)
def test_hand_made_plateau_gives_one_peak_at_its_first_raster_cell(name, cells, peak):
    found = _decoded_cells(_plane(cells))
    assert found & set(cells) == {peak}
    assert found - set(cells) <= {(4, 5)}  # the background's own peak, when not covered


@pytest.mark.parametrize(
    "cells,peaks",
    [
        ([(0, 2), (1, 1), (1, 0)], {(0, 2), (1, 0)}),
        ([(1, 3), (2, 3), (3, 1), (3, 2), (3, 3)], {(1, 3), (3, 1)}),  # a mirrored L
    ],
)
def test_the_rule_is_local_a_plateau_joined_only_through_later_cells_gives_more_peaks(cells, peaks):
    """Documented consequence of the v1.1 rule (docs/integer_spec.md §5): a plateau cell
    with no plateau neighbour before it in raster order is a peak of its own."""
    assert _decoded_cells(_plane(cells)) & set(cells) == peaks


def test_separate_maxima_and_a_plateau_beside_a_higher_cell():
    q = torch.zeros(1, 1, 5, 6, dtype=torch.int64)
    q[0, 0, 0, 0] = q[0, 0, 4, 5] = 9
    q[0, 0, 2, 2] = q[0, 0, 2, 3] = 5  # a plateau ...
    q[0, 0, 2, 4] = 6  # ... beside a higher cell: (2, 3) is not a peak, (2, 2) is (local rule)
    assert _decoded_cells(q) == {(0, 0), (4, 5), (2, 4), (2, 2)}


def _components(q: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected components of equal values, cells in raster order."""
    h, w = q.shape
    seen = np.zeros_like(q, dtype=bool)
    comps = []
    for y in range(h):
        for x in range(w):
            if seen[y, x]:
                continue
            stack, comp = [(y, x)], []
            seen[y, x] = True
            while stack:
                cy, cx = stack.pop()
                comp.append((cy, cx))
                for yy in range(max(0, cy - 1), min(h, cy + 2)):
                    for xx in range(max(0, cx - 1), min(w, cx + 2)):
                        if not seen[yy, xx] and q[yy, xx] == q[y, x]:
                            seen[yy, xx] = True
                            stack.append((yy, xx))
            comps.append(sorted(comp))
    return comps


@settings(max_examples=300, deadline=None)
@given(arrays(np.int8, st.tuples(st.integers(1, 7), st.integers(1, 7)), elements=st.integers(-2, 2)))
def test_plateaus_of_random_small_maps(q):
    """Every plateau that is a local maximum holds a peak at its first raster cell; one
    whose every later cell has an earlier plateau neighbour holds exactly one; no cell
    that fails the rule is a peak. Integer and float masks are the same."""
    mask = peak_mask(torch.from_numpy(q)[None, None])[0, 0].numpy()
    assert np.array_equal(mask, loop_peaks(q))
    assert np.array_equal(mask, peak_mask(torch.from_numpy(q).double()[None, None])[0, 0].numpy())
    assert np.array_equal(mask, peak_mask(torch.sigmoid(torch.from_numpy(q).double())[None, None])[0, 0].numpy())
    h, w = q.shape
    for comp in _components(q):
        members = set(comp)
        border = {
            (yy, xx)
            for cy, cx in comp
            for yy in range(max(0, cy - 1), min(h, cy + 2))
            for xx in range(max(0, cx - 1), min(w, cx + 2))
        } - members
        if any(q[c] >= q[comp[0]] for c in border):
            continue  # not a local-maximum plateau
        peaks = [c for c in comp if mask[c]]
        assert comp[0] in peaks
        chained = all(
            any((yy, xx) in members and (yy, xx) < (cy, cx) for yy in (cy - 1, cy) for xx in (cx - 1, cx, cx + 1))
            for cy, cx in comp[1:]
        )
        if chained:
            assert peaks == [comp[0]]


def test_nan_logit_is_never_a_peak_and_does_not_suppress_its_neighbours():
    hm = torch.full((1, 1, 5, 5), -4.0)
    hm[0, 0, 2, 2] = float("nan")
    hm[0, 0, 2, 3] = 3.0
    hm[0, 0, 1, 1] = 2.0
    mask = peak_mask(hm)[0, 0]
    assert not mask[2, 2] and mask[2, 3] and mask[1, 1]
    det = decode_float(hm, torch.zeros(1, 2, 5, 5), torch.zeros(1, 2, 5, 5), K=10)[0]
    assert np.isfinite(det.scores).all() and det.scores[0] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert len(det) == 2
    hm[0, 0, 0, 0] = float("inf")  # +inf is an ordinary (winning) value
    assert peak_mask(hm)[0, 0, 0, 0]


def test_negative_sizes_never_invert_boxes_and_boxes_are_clipped_to_the_image():
    hm = torch.full((1, 1, 4, 6), -5.0)
    hm[0, 0, 1, 1] = 2.0
    hm[0, 0, 3, 5] = 1.0
    wh = torch.zeros(1, 2, 4, 6)
    wh[0, :, 1, 1] = -3.0  # predicted negative size
    wh[0, :, 3, 5] = 50.0  # far larger than the image
    reg = torch.zeros(1, 2, 4, 6)
    det = decode_float(hm, wh, reg, K=10, down=4)[0]
    b = det.boxes
    assert (b[:, 0] <= b[:, 2]).all() and (b[:, 1] <= b[:, 3]).all()
    assert (b[:, 0::2] >= 0).all() and (b[:, 0::2] <= 24).all() and (b[:, 1::2] <= 16).all()
    assert b[0].tolist() == [4.0, 4.0, 4.0, 4.0]  # an empty box at the centre, not inverted
    assert b[1].tolist() == [0.0, 0.0, 24.0, 16.0]
    ints = decode_int(hm.round().to(torch.int8), wh.to(torch.int8), reg.to(torch.int8), (1.0, 1.0, 1.0), K=10)[0]
    assert (ints.boxes[:, 0] <= ints.boxes[:, 2]).all()


def test_nan_size_at_a_peak_is_an_error_naming_the_cell():
    hm = torch.zeros(1, 1, 3, 3)
    hm[0, 0, 1, 2] = 5.0
    wh = torch.zeros(1, 2, 3, 3)
    wh[0, 0, 1, 2] = float("nan")
    with pytest.raises(ShapeError, match=r"NaN at peak \(class 0, y 1, x 2\)"):
        decode_float(hm, wh, torch.zeros(1, 2, 3, 3))
