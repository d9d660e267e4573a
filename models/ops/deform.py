"""Deformable convolutions in pure PyTorch: the float references of INTEGER_SPEC §4.

``deform_conv2d`` has the signature and semantics of ``torchvision.ops.deform_conv2d``
(torchvision is not a dependency of convforge): bilinear sampling at
``(oy*sh - ph + i*dh + dy, ox*sw - pw + j*dw + dx)`` with torchvision's boundary rule
(a sample at ``y <= -1``, ``y >= H``, ``x <= -1`` or ``x >= W`` reads 0; otherwise the
corners inside the image are weighted and the ones outside read 0). It is vectorised
with ``torch.gather`` and differentiable by autograd in every tensor argument.

``deform_square_dw_conv2d`` is CoDeNet's square deformable depthwise 3x3: one integer
dilation per output pixel, computed *as* ``deform_conv2d`` with template offsets so
that a float dilation map receives gradients through the bilinear sampling.
"""

from __future__ import annotations

import numbers

import torch

from convforge.errors import ConvforgeError, ShapeError

__all__ = ["deform_conv2d", "deform_square_dw_conv2d", "square_offsets"]

IntOrPair = int | tuple[int, int]


def _as_int(value, name: str, op: str) -> int:
    """A Python/NumPy/0-d torch integer as ``int`` (what torchvision accepts); bools and
    floats are refused."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConvforgeError(f"{op}: {name} must be an int or a pair of ints, got {value!r} ({type(value).__name__})")
    return int(value)


def _pair(value: IntOrPair, name: str, op: str = "deform_conv2d") -> tuple[int, int]:
    """An int (Python, NumPy or 0-d tensor) or a pair of them as ``(int, int)``."""
    if isinstance(value, numbers.Number | str) or (isinstance(value, torch.Tensor) and value.dim() == 0):
        v = _as_int(value, name, op)
        return v, v
    try:
        pair = tuple(value)
    except TypeError:
        raise ConvforgeError(
            f"{op}: {name} must be an int or a pair of ints, got {value!r} ({type(value).__name__})"
        ) from None
    if len(pair) != 2:
        raise ConvforgeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return _as_int(pair[0], name, op), _as_int(pair[1], name, op)


def _check_tensor(op: str, name: str, value, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, torch.Tensor):
        hint = " (convert it with torch.from_numpy)" if type(value).__module__ == "numpy" else ""
        raise ShapeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}{hint}")


def _position_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sampling positions are computed in float64: ``base + offset`` is exact there for
    the offsets of every input dtype (bf16's 8-bit mantissa makes 257 + 0 read as 256)."""
    return torch.float64


def _check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != expected:
        raise ShapeError(f"deform_conv2d: {name} must have shape {expected}, got {tuple(tensor.shape)}")


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deformable convolution (DCNv1, or DCNv2 with ``mask``), as ``torchvision.ops.deform_conv2d``.

    Args:
        input: ``(N, C, H, W)`` floating-point feature map.
        offset: ``(N, 2*offset_groups*kh*kw, Ho, Wo)`` sampling offsets in input pixels.
            Within offset group ``g``, channel ``2*(i*kw + j)`` is the vertical offset ``dy``
            of tap ``(i, j)`` and the next channel its horizontal offset ``dx``. The number of
            offset groups is inferred from the channel count; input channel ``c`` uses offset
            group ``c // (C / offset_groups)``.
        weight: ``(O, C/groups, kh, kw)``; the weight groups are inferred as
            ``C // weight.shape[1]``.
        bias: optional ``(O,)``.
        stride, padding, dilation: int or ``(h, w)`` pair, in input pixels.
        mask: optional ``(N, offset_groups*kh*kw, Ho, Wo)`` modulation (DCNv2), multiplied
            into every bilinear sample of its tap and offset group.

    Returns:
        ``(N, O, Ho, Wo)`` with ``Ho = (H + 2*ph - dh*(kh-1) - 1) // sh + 1`` (likewise ``Wo``),
        in the dtype of ``input``.

    Raises:
        ShapeError: a tensor has the wrong rank, shape or dtype (the message gives expected vs got).
    """
    for name, t in (("input", input), ("offset", offset), ("weight", weight)):
        _check_tensor("deform_conv2d", name, t)
    _check_tensor("deform_conv2d", "bias", bias, optional=True)
    _check_tensor("deform_conv2d", "mask", mask, optional=True)
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if sh < 1 or sw < 1 or dh < 1 or dw < 1 or ph < 0 or pw < 0:
        raise ConvforgeError(
            f"deform_conv2d: need stride >= 1, dilation >= 1, padding >= 0, "
            f"got stride={(sh, sw)}, dilation={(dh, dw)}, padding={(ph, pw)}"
        )
    if input.dim() != 4:
        raise ShapeError(f"deform_conv2d: input must be (N, C, H, W), got shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ShapeError(f"deform_conv2d: weight must be (O, C/groups, kh, kw), got shape {tuple(weight.shape)}")
    if not input.is_floating_point():
        raise ShapeError(f"deform_conv2d: input must be floating point, got {input.dtype}")
    for name, t in (("offset", offset), ("weight", weight), ("bias", bias), ("mask", mask)):
        if t is not None and t.dtype != input.dtype:
            raise ShapeError(f"deform_conv2d: {name} must have dtype {input.dtype} like input, got {t.dtype}")

    n, c, h, w = input.shape
    out_ch, c_per_group, kh, kw = weight.shape
    if c_per_group < 1 or c % c_per_group != 0:
        raise ShapeError(
            f"deform_conv2d: weight.shape[1] must divide the {c} input channels, got weight shape {tuple(weight.shape)}"
        )
    groups = c // c_per_group
    if out_ch % groups != 0:
        raise ShapeError(
            f"deform_conv2d: {out_ch} output channels must be a multiple of the {groups} weight groups "
            f"(= {c} input channels / weight.shape[1] = {c_per_group})"
        )
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ShapeError(
            f"deform_conv2d: input {h}x{w} with padding {(ph, pw)} is smaller than the dilated "
            f"{kh}x{kw} kernel (dilation {(dh, dw)}): output would be {ho}x{wo}"
        )
    taps = kh * kw
    if offset.dim() != 4 or offset.shape[1] == 0 or offset.shape[1] % (2 * taps) != 0:
        raise ShapeError(
            f"deform_conv2d: offset must be (N, 2*offset_groups*{kh}*{kw}, {ho}, {wo}) = "
            f"(N, a positive multiple of {2 * taps}, {ho}, {wo}), got {tuple(offset.shape)}"
        )
    offset_groups = offset.shape[1] // (2 * taps)
    _check_shape("offset", offset, (n, 2 * offset_groups * taps, ho, wo))
    if c % offset_groups != 0:
        raise ShapeError(
            f"deform_conv2d: {offset_groups} offset groups (from offset channels {offset.shape[1]}) "
            f"must divide the {c} input channels"
        )
    if mask is not None:
        _check_shape("mask", mask, (n, offset_groups * taps, ho, wo))
    if bias is not None:
        _check_shape("bias", bias, (out_ch,))

    # Sampling positions, (N, offset_groups, taps, Ho*Wo), in input pixels, computed in a
    # dtype that holds them exactly whatever the input dtype (INTEGER_SPEC §4; issue 13).
    dev, dt = input.device, _position_dtype(input.dtype)
    base_y = (torch.arange(ho, device=dev, dtype=dt) * sh - ph).view(ho, 1).expand(ho, wo).reshape(1, 1, 1, ho * wo)
    base_x = (torch.arange(wo, device=dev, dtype=dt) * sw - pw).view(1, wo).expand(ho, wo).reshape(1, 1, 1, ho * wo)
    tap_i = torch.arange(kh, device=dev).repeat_interleave(kw)  # row index of each tap
    tap_j = torch.arange(kw, device=dev).repeat(kh)  # column index of each tap
    off = offset.reshape(n, offset_groups, taps, 2, ho * wo)
    py = base_y + (tap_i * dh).to(dt).view(1, 1, taps, 1) + off[:, :, :, 0].to(dt)
    px = base_x + (tap_j * dw).to(dt).view(1, 1, taps, 1) + off[:, :, :, 1].to(dt)

    sampled = _bilinear_sample(input.reshape(n, offset_groups, c // offset_groups, h * w), py, px, h, w)
    if mask is not None:
        sampled = sampled * mask.reshape(n, offset_groups, 1, taps, ho * wo)

    # Grouped matrix product over (channel in group, tap).
    columns = sampled.reshape(n, groups, c_per_group * taps, ho * wo)
    kernel = weight.reshape(groups, out_ch // groups, c_per_group * taps)
    out = torch.einsum("gok,ngkl->ngol", kernel, columns).reshape(n, out_ch, ho, wo)
    if bias is not None:
        out = out + bias.view(1, out_ch, 1, 1)
    return out


def _bilinear_sample(planes: torch.Tensor, py: torch.Tensor, px: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sample ``planes`` ``(N, G, Cg, H*W)`` at positions ``py, px`` ``(N, G, T, L)``.

    Returns ``(N, G, Cg, T, L)`` in the dtype of ``planes``. torchvision's rule: 0 if the
    position is at or beyond one pixel outside the image, else the in-image corners
    weighted bilinearly. A corner outside the image reads 0 *without touching any pixel*:
    the clamped gather's value is replaced (``where``), never multiplied by a zero weight,
    so an ``inf``/NaN pixel elsewhere cannot turn into NaN (``0 * inf``). The fractional
    parts (computed in the positions' dtype, then cast) carry the gradient to the
    positions (``floor`` has zero gradient).
    """
    n, g, cg, _ = planes.shape
    _, _, taps, length = py.shape
    inside = (py > -1) & (py < height) & (px > -1) & (px < width)
    y0f = torch.floor(py)
    x0f = torch.floor(px)
    ly = py - y0f
    lx = px - x0f
    y0 = y0f.long()
    x0 = x0f.long()
    result = None
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yc = y0 + dy
            xc = x0 + dx
            valid = inside & (yc >= 0) & (yc < height) & (xc >= 0) & (xc < width)
            index = (yc.clamp(0, height - 1) * width + xc.clamp(0, width - 1)).reshape(n, g, 1, taps * length)
            values = torch.gather(planes, 3, index.expand(n, g, cg, taps * length))
            valid = valid.reshape(n, g, 1, taps * length)
            values = torch.where(valid, values, torch.zeros((), dtype=values.dtype, device=values.device))
            corner_weight = (wy * wx).reshape(n, g, 1, taps * length).to(planes.dtype)
            corner_weight = torch.where(valid, corner_weight, torch.zeros_like(corner_weight))
            term = values * corner_weight
            result = term if result is None else result + term
    return result.reshape(n, g, cg, taps, length)


#: Template of the square 3x3: (row - 1, column - 1) of tap ``i*3 + j``.
_SQUARE_TAPS = tuple((i - 1, j - 1) for i in range(3) for j in range(3))


def square_offsets(dilation: torch.Tensor) -> torch.Tensor:
    """torchvision-layout offsets that turn a padding-1 3x3 into CoDeNet's square sampling.

    Args:
        dilation: ``(N, 1, Ho, Wo)`` dilation per output pixel, in pixels (float, so that
            gradients flow; integer dtypes are converted to float32).

    Returns:
        ``(N, 18, Ho, Wo)``: channel ``2*(i*3+j)`` is ``(i-1)*(D-1)``, the next ``(j-1)*(D-1)``,
        so tap ``(i, j)`` of a padding-1, dilation-1 3x3 lands at ``(oy*s + (i-1)*D, ox*s + (j-1)*D)``.
    """
    if dilation.dim() != 4 or dilation.shape[1] != 1:
        raise ShapeError(f"square_offsets: dilation must be (N, 1, Ho, Wo), got shape {tuple(dilation.shape)}")
    if not dilation.is_floating_point():
        dilation = dilation.to(torch.float32)
    template = torch.tensor(_SQUARE_TAPS, dtype=dilation.dtype, device=dilation.device).reshape(1, 18, 1, 1)
    return (dilation - 1) * template


def deform_square_dw_conv2d(
    input: torch.Tensor,
    dilation: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
) -> torch.Tensor:
    """Square deformable depthwise 3x3 (INTEGER_SPEC §4), one integer dilation per output pixel.

    ``out[n, c, oy, ox] = sum_{i,j in 0..2} weight[c, 0, i, j] * input[n, c, oy*s + (i-1)*D, ox*s + (j-1)*D]``
    with ``D = dilation[n, 0, oy, ox]``, reading 0 outside the image. ``D = 1`` is a plain
    depthwise 3x3 with padding 1, ``D = 0`` samples the centre nine times.

    Args:
        input: ``(N, C, H, W)`` floating point.
        dilation: ``(N, 1, Ho, Wo)`` integer-valued, ``>= 0`` (float or integer dtype), in pixels,
            with ``Ho = (H - 1) // stride + 1`` (likewise ``Wo``). A float tensor receives
            gradients through the bilinear sampling (straight-through training).
        weight: ``(C, 1, 3, 3)`` depthwise kernel.
        bias: optional ``(C,)``.
        stride: output stride in input pixels.

    Returns:
        ``(N, C, Ho, Wo)`` in the dtype of ``input``.
    """
    op = "deform_square_dw_conv2d"
    for name, t in (("input", input), ("dilation", dilation), ("weight", weight)):
        _check_tensor(op, name, t)
    _check_tensor(op, "bias", bias, optional=True)
    if input.dim() != 4:
        raise ShapeError(f"deform_square_dw_conv2d: input must be (N, C, H, W), got shape {tuple(input.shape)}")
    stride = _as_int(stride, "stride", op)
    if stride < 1:
        raise ConvforgeError(f"deform_square_dw_conv2d: stride must be an int >= 1, got {stride!r}")
    n, c, h, w = input.shape
    if tuple(weight.shape) != (c, 1, 3, 3):
        raise ShapeError(f"deform_square_dw_conv2d: weight must have shape {(c, 1, 3, 3)}, got {tuple(weight.shape)}")
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    if tuple(dilation.shape) != (n, 1, ho, wo):
        raise ShapeError(
            f"deform_square_dw_conv2d: dilation must have shape {(n, 1, ho, wo)} "
            f"(output resolution for stride {stride}), got {tuple(dilation.shape)}"
        )
    d = dilation.detach()
    if d.is_floating_point() and not bool(torch.isfinite(d).all()):
        raise ConvforgeError(
            "deform_square_dw_conv2d: dilation holds non-finite values (inf/NaN); it must be integer-valued"
        )
    if d.is_floating_point() and not torch.equal(d, torch.floor(d)):
        raise ConvforgeError("deform_square_dw_conv2d: dilation must be integer-valued (round it, e.g. with round_ste)")
    if bool((d < 0).any()):
        raise ConvforgeError(f"deform_square_dw_conv2d: dilation must be >= 0, got minimum {d.min().item()}")
    offset = square_offsets(dilation.to(input.dtype))
    return deform_conv2d(input, offset, weight, bias, stride=stride, padding=1, dilation=1)
