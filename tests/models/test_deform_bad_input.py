"""Deformable references on hostile input: non-finite pixels never leak across taps, sampling
positions are exact in every dtype, and torchvision-style arguments are accepted (issue 13)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convforge.errors import ConvforgeError, ShapeError
from convforge.models.ops.deform import deform_conv2d, deform_square_dw_conv2d


def loop_deform(x, offset, weight, stride=1, padding=0, dilation=1) -> np.ndarray:
    """torchvision's deform_conv2d (one offset group, groups=1) as Python loops on float64:
    a position at or beyond one pixel outside reads 0 without touching any pixel, otherwise
    the in-image corners are weighted bilinearly (IEEE arithmetic, so 0 * inf is NaN there)."""
    with np.errstate(invalid="ignore"):  # inf - inf and 0 * inf are NaN, as in torchvision
        return _loop_deform(*(np.asarray(t, dtype=np.float64) for t in (x, offset, weight)), stride, padding, dilation)


def _loop_deform(x, offset, weight, stride, padding, dilation) -> np.ndarray:
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                for ch in range(c):
                    for i in range(kh):
                        for j in range(kw):
                            k = i * kw + j
                            py = oy * stride - padding + i * dilation + offset[b, 2 * k, oy, ox]
                            px = ox * stride - padding + j * dilation + offset[b, 2 * k + 1, oy, ox]
                            if py <= -1 or py >= h or px <= -1 or px >= w:
                                continue
                            y0, x0 = math.floor(py), math.floor(px)
                            ly, lx = py - y0, px - x0
                            val = 0.0
                            for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
                                for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
                                    if 0 <= yy < h and 0 <= xx < w:
                                        val += wy * wx * x[b, ch, yy, xx]
                            for oc in range(o):
                                out[b, oc, oy, ox] += weight[oc, ch, i, j] * val
    return out


def test_issue_example_inf_pixel_does_not_leak_into_a_tap_sent_outside():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 4, 4] = float("inf")
    offset = torch.zeros(1, 18, 5, 5, dtype=torch.float64)
    offset[0, 0, 0, 0] = offset[0, 1, 0, 0] = 100.0
    weight = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    out = deform_conv2d(x, offset, weight, padding=1)
    want = loop_deform(x, offset, weight, padding=1)
    assert math.isfinite(out[0, 0, 0, 0].item())
    assert out[0, 0, 0, 0].item() == pytest.approx(want[0, 0, 0, 0], rel=1e-12)
    # the same input as the issue's: x[0,0,:2,:2] sums to the finite answer (taps 1..8 read 0 or pixels)
    assert out[0, 0, 0, 0].item() == pytest.approx(float(x[0, 0, :2, :2].sum()), rel=1e-12)
    # the gradient of that output stays finite too (no 0 * inf from the outside tap)
    off = offset.clone().requires_grad_()
    deform_conv2d(x, off, weight, padding=1)[0, 0, 0, 0].backward()
    assert torch.isfinite(off.grad[0, :, 0, 0]).all() and off.grad[0, :2, 0, 0].eq(0).all()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    hw=st.tuples(st.integers(2, 5), st.integers(2, 5)),
    specials=st.lists(st.sampled_from([float("inf"), float("-inf"), float("nan")]), max_size=3),
    scale=st.sampled_from([0.5, 3.0, 40.0]),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
)
def test_deform_conv2d_matches_torchvision_rule_with_non_finite_pixels(seed, hw, specials, scale, stride, padding):
    gen = torch.Generator().manual_seed(seed)
    h, w = hw
    x = torch.rand(1, 2, h, w, generator=gen, dtype=torch.float64)
    for k, v in enumerate(specials):
        x.view(-1)[(k * 7 + seed) % x.numel()] = v
    ho = (h + 2 * padding - 3) // stride + 1
    wo = (w + 2 * padding - 3) // stride + 1
    if ho < 1 or wo < 1:
        return
    offset = (torch.rand(1, 18, ho, wo, generator=gen, dtype=torch.float64) - 0.5) * 2 * scale
    weight = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64)
    got = deform_conv2d(x, offset, weight, stride=stride, padding=padding).numpy()
    want = loop_deform(x, offset, weight, stride, padding)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True)
    if not specials:
        assert np.isfinite(got).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_issue_example_low_precision_positions_read_the_right_pixel(dtype):
    x = (torch.arange(600) % 7).to(dtype).reshape(1, 1, 1, 600).expand(1, 1, 3, 600).contiguous()
    offset = torch.zeros(1, 18, 3, 600, dtype=dtype)
    weight = torch.zeros(1, 1, 3, 3, dtype=dtype)
    weight[0, 0, 1, 1] = 1
    out = deform_conv2d(x, offset, weight, padding=1)
    assert out[0, 0, 0, 257].item() == 5.0  # 257 % 7; bf16 positions read 4.0 before
    assert torch.equal(out, x)


@settings(max_examples=80, deadline=None)
@given(
    width=st.integers(200, 2100),
    shift=st.integers(-40, 40),
    dtype=st.sampled_from([torch.bfloat16, torch.float16, torch.float32, torch.float64]),
)
def test_integer_offsets_read_exactly_the_pixel_they_name_in_every_dtype(width, shift, dtype):
    """Positions up to ~2k px plus integer offsets: a centre-tap weight of 1 copies the pixel."""
    values = torch.arange(width) % 13
    x = values.to(dtype).reshape(1, 1, 1, width)
    offset = torch.zeros(1, 18, 1, width, dtype=dtype)
    offset[0, 9] = shift  # dx of the centre tap (i=1, j=1 -> k=4 -> channel 9)
    weight = torch.zeros(1, 1, 3, 3, dtype=dtype)
    weight[0, 0, 1, 1] = 1
    out = deform_conv2d(x, offset, weight, padding=1)[0, 0, 0]
    src = torch.arange(width) + shift
    inside = (src >= 0) & (src < width)
    want = torch.where(inside, values[src.clamp(0, width - 1)], torch.zeros_like(values))
    assert torch.equal(out.to(torch.int64), want)


def test_numpy_integer_stride_padding_dilation_are_accepted_like_torchvision():
    x = torch.rand(1, 2, 6, 6, dtype=torch.float64)
    offset = torch.rand(1, 18, 3, 3, dtype=torch.float64)
    weight = torch.rand(4, 2, 3, 3, dtype=torch.float64)
    want = deform_conv2d(x, offset, weight, stride=2, padding=1, dilation=1)
    for stride, padding, dilation in [
        (np.int64(2), np.int32(1), np.int64(1)),
        ((np.int64(2), 2), [1, np.int16(1)], (1, 1)),
        (torch.tensor(2), 1, torch.tensor(1)),
    ]:
        assert torch.equal(deform_conv2d(x, offset, weight, stride=stride, padding=padding, dilation=dilation), want)
    d = torch.ones(1, 1, 3, 3)
    w3 = torch.rand(2, 1, 3, 3)
    want = deform_square_dw_conv2d(x.float(), d, w3, stride=2)
    assert torch.equal(deform_square_dw_conv2d(x.float(), d, w3, stride=np.int64(2)), want)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"stride": 1.5}, ConvforgeError, r"stride must be an int or a pair of ints, got 1.5 \(float\)"),
        ({"stride": True}, ConvforgeError, r"stride must be an int or a pair of ints, got True"),
        ({"padding": (1, 2, 3)}, ConvforgeError, r"padding must be an int or a pair of ints"),
        ({"dilation": "1"}, ConvforgeError, r"dilation must be an int or a pair of ints"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    x = torch.rand(1, 1, 5, 5)
    with pytest.raises(error, match=match):
        deform_conv2d(x, torch.zeros(1, 18, 3, 3), torch.ones(1, 1, 3, 3), **kwargs)


def test_numpy_arrays_instead_of_tensors_are_a_shape_error_naming_the_argument():
    x = np.random.rand(1, 1, 5, 5)
    msg = r"input must be a torch.Tensor, got ndarray \(convert it with torch.from_numpy\)"
    with pytest.raises(ShapeError, match=msg):
        deform_conv2d(x, torch.zeros(1, 18, 3, 3), torch.ones(1, 1, 3, 3))
    with pytest.raises(ShapeError, match=r"offset must be a torch.Tensor"):
        deform_conv2d(torch.rand(1, 1, 5, 5), np.zeros((1, 18, 3, 3)), torch.ones(1, 1, 3, 3))
    with pytest.raises(ShapeError, match=r"dilation must be a torch.Tensor"):
        deform_square_dw_conv2d(torch.rand(1, 1, 5, 5), np.ones((1, 1, 5, 5)), torch.ones(1, 1, 3, 3))
    with pytest.raises(ConvforgeError, match="non-finite"):
        deform_square_dw_conv2d(torch.rand(1, 1, 5, 5), torch.full((1, 1, 5, 5), float("inf")), torch.ones(1, 1, 3, 3))
