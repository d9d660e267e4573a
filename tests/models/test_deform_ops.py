"""Deformable operators against straightforward loop implementations.

The loops below follow torchvision's documented semantics (and INTEGER_SPEC §4 for the
square operator) one output value at a time in plain Python floats; they share nothing
with the vectorised gather kernels.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convforge.errors import ConvforgeError, ShapeError
from convforge.models.ops import (
    BoundedDeformConv3x3,
    SquareDeformableDW,
    deform_conv2d,
    deform_square_dw_conv2d,
    round_ste,
    square_offsets,
)
from convforge.models.quant.intops import rshift_round

# -- loop references ----------------------------------------------------------------------


def loop_bilinear(plane: np.ndarray, y: float, x: float) -> float:
    """torchvision's rule: 0 at or beyond one pixel outside, else in-image corners only."""
    h, w = plane.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * float(plane[yy, xx])
    return total


def loop_deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask):
    x, offset, weight = x.numpy(), offset.numpy(), weight.numpy()
    mask = None if mask is None else mask.numpy()
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n, c, _, _ = x.shape
    o, cg, kh, kw = weight.shape
    groups = c // cg
    taps = kh * kw
    og = offset.shape[1] // (2 * taps)
    ho, wo = offset.shape[2], offset.shape[3]
    out = np.zeros((n, o, ho, wo))
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                col = np.zeros((c, kh, kw))
                for ch in range(c):
                    g = ch // (c // og)
                    for i in range(kh):
                        for j in range(kw):
                            t = i * kw + j
                            y = oy * sh - ph + i * dh + offset[b, g * 2 * taps + 2 * t, oy, ox]
                            xx = ox * sw - pw + j * dw + offset[b, g * 2 * taps + 2 * t + 1, oy, ox]
                            v = loop_bilinear(x[b, ch], y, xx)
                            if mask is not None:
                                v *= mask[b, g * taps + t, oy, ox]
                            col[ch, i, j] = v
                for oc in range(o):
                    grp = oc // (o // groups)
                    acc = float((weight[oc] * col[grp * cg : (grp + 1) * cg]).sum())
                    out[b, oc, oy, ox] = acc + (0.0 if bias is None else float(bias[oc]))
    return torch.from_numpy(out)


def loop_square_dw(x, dil, weight, stride):
    """INTEGER_SPEC §4 square deformable depthwise 3x3, one value at a time."""
    x, dil, weight = x.numpy(), dil.numpy(), weight.numpy()
    n, c, h, w = x.shape
    ho, wo = dil.shape[2], dil.shape[3]
    out = np.zeros((n, c, ho, wo))
    for b in range(n):
        for ch in range(c):
            for oy in range(ho):
                for ox in range(wo):
                    d = int(dil[b, 0, oy, ox])
                    acc = 0.0
                    for i in range(3):
                        for j in range(3):
                            y, xx = oy * stride + (i - 1) * d, ox * stride + (j - 1) * d
                            if 0 <= y < h and 0 <= xx < w:
                                acc += weight[ch, 0, i, j] * x[b, ch, y, xx]
                    out[b, ch, oy, ox] = acc
    return torch.from_numpy(out)


def out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def random_offsets(gen, shape, kind):
    if kind == "fractional":
        return torch.rand(shape, generator=gen, dtype=torch.float64) * 6 - 3
    if kind == "integer":
        return torch.randint(-3, 4, shape, generator=gen).to(torch.float64)
    if kind == "far":  # mostly far outside the image, some at the +-1 boundary lines
        far = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * 25
        edge = torch.randint(-8, 9, shape, generator=gen).to(torch.float64) * 0.5
        return torch.where(torch.rand(shape, generator=gen) < 0.5, far, edge)
    raise ValueError(kind)


CASES = []
for _seed in range(24):
    _rng = np.random.default_rng(_seed)
    CASES.append(
        dict(
            seed=_seed,
            n=int(_rng.integers(1, 3)),
            groups=int(_rng.choice([1, 2])),
            og=int(_rng.choice([1, 2])),
            cg=int(_rng.integers(1, 3)),
            o_per_group=int(_rng.integers(1, 3)),
            k=(int(_rng.integers(1, 4)), int(_rng.integers(1, 4))),
            stride=(int(_rng.integers(1, 3)), int(_rng.integers(1, 3))),
            padding=(int(_rng.integers(0, 3)), int(_rng.integers(0, 3))),
            dilation=(int(_rng.integers(1, 3)), int(_rng.integers(1, 3))),
            hw=(int(_rng.integers(4, 8)), int(_rng.integers(4, 8))),
            mask=bool(_rng.integers(0, 2)),
            bias=bool(_rng.integers(0, 2)),
            offsets=["fractional", "integer", "far"][_seed % 3],
        )
    )


# -- deform_conv2d ------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[f"seed{c['seed']}-{c['offsets']}" for c in CASES])
def test_deform_conv2d_matches_loop_reference(case):
    gen = torch.Generator().manual_seed(case["seed"])
    c = case["groups"] * case["cg"] * case["og"]  # divisible by both group counts
    o = case["groups"] * case["o_per_group"]
    kh, kw = case["k"]
    # at least one output pixel: grow the image to the dilated kernel's extent
    h = max(case["hw"][0], case["dilation"][0] * (kh - 1) + 1 - 2 * case["padding"][0])
    w = max(case["hw"][1], case["dilation"][1] * (kw - 1) + 1 - 2 * case["padding"][1])
    ho = out_size(h, kh, case["stride"][0], case["padding"][0], case["dilation"][0])
    wo = out_size(w, kw, case["stride"][1], case["padding"][1], case["dilation"][1])
    x = torch.randn(case["n"], c, h, w, generator=gen, dtype=torch.float64)
    weight = torch.randn(o, c // case["groups"], kh, kw, generator=gen, dtype=torch.float64)
    offset = random_offsets(gen, (case["n"], 2 * case["og"] * kh * kw, ho, wo), case["offsets"])
    mask = torch.rand(case["n"], case["og"] * kh * kw, ho, wo, generator=gen, dtype=torch.float64)
    mask = mask if case["mask"] else None
    bias = torch.randn(o, generator=gen, dtype=torch.float64) if case["bias"] else None
    got = deform_conv2d(x, offset, weight, bias, case["stride"], case["padding"], case["dilation"], mask)
    want = loop_deform_conv2d(x, offset, weight, bias, case["stride"], case["padding"], case["dilation"], mask)
    assert got.shape == want.shape == (case["n"], o, ho, wo)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (2, 1, 1), ((1, 2), (2, 0), (2, 1))])
def test_deform_conv2d_zero_offsets_equals_conv2d(groups, stride, padding, dilation):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 9, 8, generator=gen, dtype=torch.float64)
    weight = torch.randn(6, 6 // groups, 3, 2, generator=gen, dtype=torch.float64)
    bias = torch.randn(6, generator=gen, dtype=torch.float64)
    want = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    offset = torch.zeros(2, 2 * 2 * 6, *want.shape[2:], dtype=torch.float64)  # two offset groups
    got = deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "dy,expected",
    [(-1.0, 0.0), (-0.5, 0.5 * 10), (0.0, 10.0), (0.25, 0.75 * 10 + 0.25 * 20)]
    + [(1.0, 20.0), (1.5, 0.5 * 20), (2.0, 0.0), (-3.7, 0.0), (9.0, 0.0)],
)
def test_deform_conv2d_boundary_rule(dy, expected):
    """A 2x1 image [10, 20], one 1x1 tap at (0, 0): zero at and beyond y = -1 and y = H."""
    x = torch.tensor([[[[10.0], [20.0]]]], dtype=torch.float64)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 2, 1, dtype=torch.float64)
    offset[0, 0, 0, 0] = dy
    got = deform_conv2d(x, offset, weight)
    assert got[0, 0, 0, 0].item() == pytest.approx(expected, abs=1e-12)


def test_deform_conv2d_float32_agrees_with_float64():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 8, 7, generator=gen, dtype=torch.float64)
    weight = torch.randn(6, 2, 3, 3, generator=gen, dtype=torch.float64)
    offset = torch.randn(2, 36, 8, 7, generator=gen, dtype=torch.float64) * 2
    mask = torch.rand(2, 18, 8, 7, generator=gen, dtype=torch.float64)
    want = deform_conv2d(x, offset, weight, padding=1, mask=mask)
    got = deform_conv2d(x.float(), offset.float(), weight.float(), padding=1, mask=mask.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def away_from_integers(gen, shape, scale=2):
    """Offsets whose fractional part lies in [0.2, 0.8]: bilinear is smooth there."""
    whole = torch.randint(-scale, scale + 1, shape, generator=gen).to(torch.float64)
    return whole + 0.2 + 0.6 * torch.rand(shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("groups,og,use_mask,stride", [(1, 1, False, 1), (2, 2, True, 1), (1, 2, True, 2)])
def test_deform_conv2d_gradcheck(groups, og, use_mask, stride):
    gen = torch.Generator().manual_seed(11 + groups + og)
    c, o, h, w, kh, kw = 2, 2, 4, 5, 2, 3
    ho, wo = out_size(h, kh, stride, 1, 1), out_size(w, kw, stride, 1, 1)
    x = torch.randn(1, c, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    offset = away_from_integers(gen, (1, 2 * og * kh * kw, ho, wo)).requires_grad_()
    weight = torch.randn(o, c // groups, kh, kw, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(o, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(1, og * kh * kw, ho, wo, generator=gen, dtype=torch.float64).requires_grad_(use_mask)

    def fn(x, offset, weight, bias, mask):
        return deform_conv2d(x, offset, weight, bias, stride=stride, padding=1, mask=mask if use_mask else None)

    assert torch.autograd.gradcheck(fn, (x, offset, weight, bias, mask), eps=1e-6, atol=1e-6)


def test_deform_conv2d_shape_errors_name_expected_and_got():
    x = torch.zeros(1, 4, 6, 6)
    weight = torch.zeros(2, 4, 3, 3)
    offset = torch.zeros(1, 18, 4, 4)
    with pytest.raises(ShapeError, match=r"\(1, 18, 4, 4\).*got \(1, 18, 5, 4\)"):
        deform_conv2d(x, torch.zeros(1, 18, 5, 4), weight)
    with pytest.raises(ShapeError, match="multiple of 18"):
        deform_conv2d(x, torch.zeros(1, 20, 4, 4), weight)
    with pytest.raises(ShapeError, match=r"mask must have shape \(1, 9, 4, 4\), got \(1, 18, 4, 4\)"):
        deform_conv2d(x, offset, weight, mask=torch.zeros(1, 18, 4, 4))
    with pytest.raises(ShapeError, match=r"bias must have shape \(2,\), got \(3,\)"):
        deform_conv2d(x, offset, weight, bias=torch.zeros(3))
    with pytest.raises(ShapeError, match="weight.shape\\[1\\]"):
        deform_conv2d(x, offset, torch.zeros(2, 3, 3, 3))
    with pytest.raises(ShapeError, match="offset groups"):
        deform_conv2d(x, torch.zeros(1, 54, 4, 4), weight)
    with pytest.raises(ShapeError, match="dtype"):
        deform_conv2d(x, offset.double(), weight)
    with pytest.raises(ShapeError, match=r"input must be \(N, C, H, W\)"):
        deform_conv2d(x[0], offset, weight)


# -- square deformable depthwise ----------------------------------------------------------


def integer_case(seed, n, c, h, w, stride, d_max=8):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    x = torch.randint(-128, 128, (n, c, h, w), generator=gen).to(torch.float64)
    weight = torch.randint(-7, 8, (c, 1, 3, 3), generator=gen).to(torch.float64)
    dil = torch.randint(0, d_max + 1, (n, 1, ho, wo), generator=gen)
    dil.view(-1)[0], dil.view(-1)[-1] = 0, d_max  # always cover both ends
    return x, dil, weight


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw", [(7, 5), (9, 11), (8, 8)])
def test_square_dw_equals_spec_loop_bit_exact(stride, hw):
    x, dil, weight = integer_case(20 + stride, 2, 3, *hw, stride)
    want = loop_square_dw(x, dil, weight, stride)
    for dil_in in (dil, dil.to(torch.uint8), dil.to(torch.float64)):
        got = deform_square_dw_conv2d(x, dil_in, weight, stride=stride)
        assert torch.equal(got, want)  # integer data: float64 sums are exact


@pytest.mark.parametrize("stride", [1, 2])
def test_square_dw_is_deform_conv2d_with_template_offsets(stride):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 9, 7, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 1, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(4, generator=gen, dtype=torch.float64)
    ho, wo = (9 - 1) // stride + 1, (7 - 1) // stride + 1
    dil = torch.randint(0, 9, (2, 1, ho, wo), generator=gen).to(torch.float64)
    offset = torch.zeros(2, 18, ho, wo, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            offset[:, 2 * (i * 3 + j)] = (i - 1) * (dil[:, 0] - 1)
            offset[:, 2 * (i * 3 + j) + 1] = (j - 1) * (dil[:, 0] - 1)
    assert torch.equal(square_offsets(dil), offset)
    want = deform_conv2d(x, offset, weight, bias, stride=stride, padding=1, dilation=1)
    assert torch.equal(deform_square_dw_conv2d(x, dil, weight, bias, stride=stride), want)


def test_square_dw_dilation_zero_samples_centre_nine_times():
    x, _, weight = integer_case(4, 1, 3, 6, 5, 1)
    got = deform_square_dw_conv2d(x, torch.zeros(1, 1, 6, 5), weight)
    assert torch.equal(got, x * weight.sum(dim=(1, 2, 3)).view(1, 3, 1, 1))


@pytest.mark.parametrize("stride", [1, 2])
def test_square_dw_dilation_one_equals_depthwise_conv(stride):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(1, 5, 7, 9, generator=gen, dtype=torch.float64)
    weight = torch.randn(5, 1, 3, 3, generator=gen, dtype=torch.float64)
    want = F.conv2d(x, weight, padding=1, stride=stride, groups=5)
    got = deform_square_dw_conv2d(x, torch.ones(1, 1, *want.shape[2:]), weight, stride=stride)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_square_dw_dilation_gradient_flows_through_offsets():
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(1, 3, 6, 6, generator=gen, dtype=torch.float64)
    weight = torch.randn(3, 1, 3, 3, generator=gen, dtype=torch.float64)
    dil = torch.randint(1, 4, (1, 1, 6, 6), generator=gen).to(torch.float64).requires_grad_()
    deform_square_dw_conv2d(x, dil, weight).square().sum().backward()
    # the same loss through explicit template offsets: the chain rule to the dilation
    offset = square_offsets(dil.detach()).requires_grad_()
    deform_conv2d(x, offset, weight, padding=1).square().sum().backward()
    template = square_offsets(torch.full((1, 1, 1, 1), 2.0, dtype=torch.float64))  # (i-1), (j-1)
    want = (offset.grad * template).sum(dim=1, keepdim=True)
    assert dil.grad is not None and dil.grad.abs().sum() > 0
    torch.testing.assert_close(dil.grad, want, rtol=1e-12, atol=1e-12)


def test_square_dw_rejects_bad_inputs():
    x = torch.zeros(1, 3, 7, 7)
    weight = torch.zeros(3, 1, 3, 3)
    with pytest.raises(ShapeError, match=r"\(1, 1, 4, 4\).*stride 2.*got \(1, 1, 7, 7\)"):
        deform_square_dw_conv2d(x, torch.ones(1, 1, 7, 7), weight, stride=2)
    with pytest.raises(ShapeError, match=r"\(3, 1, 3, 3\), got \(3, 3, 3, 3\)"):
        deform_square_dw_conv2d(x, torch.ones(1, 1, 7, 7), torch.zeros(3, 3, 3, 3))
    with pytest.raises(ConvforgeError, match="integer-valued"):
        deform_square_dw_conv2d(x, torch.full((1, 1, 7, 7), 1.5), weight)
    with pytest.raises(ConvforgeError, match=">= 0"):
        deform_square_dw_conv2d(x, torch.full((1, 1, 7, 7), -1.0), weight)


# -- modules ------------------------------------------------------------------------------


def test_round_ste_rounds_half_up_like_rshift_round_with_identity_gradient():
    v = torch.arange(-300, 301, dtype=torch.int64)
    for s in (1, 2, 3):
        scaled = (v.to(torch.float64) / 2**s).requires_grad_()
        got = round_ste(scaled)
        assert torch.equal(got.to(torch.int64), rshift_round(v, s))
        got.sum().backward()
        assert torch.equal(scaled.grad, torch.ones_like(scaled))


@pytest.mark.parametrize("stride,hw", [(1, (7, 6)), (2, (9, 7)), (2, (8, 8))])
def test_square_deformable_dw_shapes_and_initial_plain_conv(stride, hw):
    torch.manual_seed(0)
    block = SquareDeformableDW(4, stride=stride)
    x = torch.randn(2, 4, *hw)
    ho, wo = (hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1
    dmap = block.dilation_map(x)
    assert dmap.shape == (2, 1, ho, wo)
    assert torch.equal(dmap, torch.ones_like(dmap))
    out = block(x)
    assert out.shape == (2, 4, ho, wo)
    torch.testing.assert_close(out, F.conv2d(x, block.weight, padding=1, stride=stride, groups=4))


def test_square_deformable_dw_ste_gradient_reaches_dilation_conv():
    torch.manual_seed(1)
    block = SquareDeformableDW(3, stride=2, d_max=4).double()
    with torch.no_grad():
        block.dilation_conv.weight.normal_(0, 0.5)
        block.dilation_conv.bias.fill_(2.0)
    x = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    block(x).square().sum().backward()
    assert block.dilation_conv.weight.grad.abs().sum() > 0
    assert block.dilation_conv.bias.grad.abs().sum() > 0
    assert block.weight.grad.abs().sum() > 0


def test_square_deformable_dw_clamps_dilation_to_range():
    torch.manual_seed(2)
    block = SquareDeformableDW(3, d_max=5)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        block.dilation_conv.weight.normal_(0, 10.0)
        block.dilation_conv.bias.fill_(2.0)
    dmap = block.dilation_map(x)
    assert dmap.min() >= 0 and dmap.max() <= 5
    assert (dmap == 0).any() and (dmap == 5).any()
    assert torch.equal(dmap, torch.floor(dmap))
    pre = block.dilation_conv(x)
    assert torch.equal(dmap, torch.clamp(torch.floor(pre + 0.5), 0, 5))
    with torch.no_grad():
        block.dilation_conv.weight.zero_()
        block.dilation_conv.bias.fill_(20.0)
    assert torch.equal(block.dilation_map(x), torch.full((2, 1, 8, 8), 5.0))
    want = loop_square_dw(x.double(), torch.full((2, 1, 8, 8), 5), block.weight.detach().double(), 1)
    torch.testing.assert_close(block(x).double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 2)])
def test_bounded_deform_conv_shapes_and_initial_plain_conv(stride, groups):
    torch.manual_seed(3)
    block = BoundedDeformConv3x3(4, 6, stride=stride, groups=groups)
    x = torch.randn(2, 4, 9, 8)
    out = block(x)
    want = F.conv2d(x, block.weight, padding=1, stride=stride, groups=groups)
    assert out.shape == want.shape == (2, 6, (9 - 1) // stride + 1, (8 - 1) // stride + 1)
    torch.testing.assert_close(out, want)


def test_bounded_deform_conv_clamps_offsets_and_trains_them():
    torch.manual_seed(4)
    block = BoundedDeformConv3x3(3, 2, max_offset=2.5).double()
    x = torch.randn(1, 3, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        block.offset_conv.weight.normal_(0, 3.0)
    offsets = block.offset_map(x)
    assert offsets.shape == (1, 18, 7, 7)
    assert offsets.abs().max() == 2.5
    raw = block.offset_conv(x)
    assert torch.equal(offsets, raw.clamp(-2.5, 2.5))
    want = loop_deform_conv2d(x, offsets.detach(), block.weight.detach(), None, (1, 1), (1, 1), (1, 1), None)
    torch.testing.assert_close(block(x), want, rtol=1e-12, atol=1e-12)
    block(x).square().sum().backward()
    assert block.offset_conv.weight.grad.abs().sum() > 0
