"""The building blocks of convforge networks: every graph operation is one of these modules.

A network built only from these blocks (plus containers such as ``nn.Sequential`` whose
``forward`` just calls blocks) can be traced into a dataflow graph by
:func:`convforge.models.nets.graph.trace`, quantised by :mod:`convforge.models.quant.qat`
and exported to a QGraph by :mod:`convforge.models.quant.export`, one block per QGraph layer.

Compute blocks (they own weights and, in the integer graph, requantise their output):

- :class:`ConvBNAct`: convolution -> optional BatchNorm -> activation (``none``, ``relu``,
  ``relu6`` or ``dilation``, the last turning the output into an integer dilation map in
  ``[0, d_max]`` pixels). It can fold an input normalisation (mean/std over ``/255`` pixels)
  into its weights so that it reads raw 0..255 pixels.
- :class:`SquareDeformDW`: CoDeNet's square deformable depthwise 3x3, reading a feature map
  and a dilation map (INTEGER_SPEC §4).
- :class:`Add`: elementwise sum of two tensors of one shape (MobileNetV2's residual, a
  decoder skip), optionally followed by ReLU; no weights, but the integer graph requantises
  it (INTEGER_SPEC §4 "Add": one ``(Ma, Mb, S)``).

Data-movement blocks (no arithmetic; in the integer graph they keep their input's scale):
:class:`ChannelSplit`, :class:`Concat`, :class:`ChannelShuffle`, :class:`Upsample2x`,
:class:`MaxPool`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from convforge.errors import ConfigError, ShapeError
from convforge.models.ops import deform_square_dw_conv2d, round_ste

#: Activations a :class:`ConvBNAct` may end with.
ACTIVATIONS = ("none", "relu", "relu6", "dilation")


class ConvBNAct(nn.Module):
    """``act(bn(conv(x)))``: a k x k convolution, an optional BatchNorm and an activation.

    Args:
        in_ch, out_ch: channel counts.
        kernel, stride, padding, groups: the convolution's geometry (square, in pixels);
            ``groups == in_ch == out_ch`` is a depthwise convolution.
        bn: follow the convolution with ``nn.BatchNorm2d(out_ch)`` (folded away at export).
        bias: give the convolution its own bias (heads and the dilation branch; layers with
            a BatchNorm do not need one).
        act: ``"none"``, ``"relu"``, ``"relu6"`` or ``"dilation"`` (round half up with a
            straight-through gradient, then clamp to ``[0, d_max]``: the output is a
            per-pixel dilation in pixels).
        d_max: largest dilation, for ``act="dilation"``.
        input_norm: ``(mean, std)`` per input channel over pixels scaled to ``[0, 1]``.
            When given, the layer reads RAW pixels ``0..255``: its weights stay in the
            normalised domain (``self.conv.weight``), and :meth:`conv_weight_bias` returns
            the effective weights ``w / (255 * std[c])`` and bias
            ``b - sum w * mean[c] / std[c]``. Zero padding then pads with raw pixel 0,
            exactly as the integer graph does.

    Input ``(N, in_ch, H, W)``; output ``(N, out_ch, Ho, Wo)``,
    ``Ho = (H + 2*padding - kernel) // stride + 1``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        bn: bool = True,
        bias: bool = False,
        act: str = "relu",
        d_max: int = 8,
        input_norm: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        if act not in ACTIVATIONS:
            raise ConfigError(f"ConvBNAct: act must be one of {ACTIVATIONS}, got {act!r}")
        if groups < 1 or in_ch % groups or out_ch % groups:
            raise ConfigError(f"ConvBNAct: groups={groups} must divide in_ch={in_ch} and out_ch={out_ch}")
        if padding is None:
            padding = kernel // 2
        self.in_ch, self.out_ch = in_ch, out_ch
        self.kernel, self.stride, self.padding, self.groups = kernel, stride, padding, groups
        self.act = act
        self.d_max = int(d_max)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_ch) if bn else None
        if input_norm is not None:
            mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in input_norm)
            if mean.shape != (in_ch,) or std.shape != (in_ch,) or bool((std <= 0).any()):
                raise ConfigError(
                    f"ConvBNAct: input_norm must give {in_ch} means and {in_ch} positive stds, "
                    f"got {input_norm!r}"
                )
            self.register_buffer("in_mean", mean)
            self.register_buffer("in_std", std)
        else:
            self.register_buffer("in_mean", None)
            self.register_buffer("in_std", None)

    @property
    def folds_input_norm(self) -> bool:
        """True when the layer reads raw 0..255 pixels and folds mean/std into its weights."""
        return self.in_mean is not None

    def conv_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The convolution's effective ``(weight, bias)`` on this layer's actual input.

        Without ``input_norm`` this is ``(conv.weight, conv.bias)``. With it, the weights
        apply to raw pixels: ``W[o,c] = w[o,c] / (255*std[c])`` and
        ``b[o] = conv.bias[o] - sum_{c,i,j} w[o,c,i,j] * mean[c] / std[c]`` (bias always present).
        """
        w, b = self.conv.weight, self.conv.bias
        if self.in_mean is None:
            return w, b
        std = self.in_std.view(1, -1, 1, 1)
        mean = self.in_mean.view(1, -1, 1, 1)
        w_eff = w / (255.0 * std)
        shift = (w * (mean / std)).sum(dim=(1, 2, 3))
        b_eff = -shift if b is None else b - shift
        return w_eff, b_eff

    def activate(self, y: torch.Tensor) -> torch.Tensor:
        """Apply this layer's activation to a float pre-activation."""
        if self.act == "relu":
            return F.relu(y)
        if self.act == "relu6":
            return F.relu6(y)
        if self.act == "dilation":
            return torch.clamp(round_ste(y), 0, self.d_max)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.conv_weight_bias()
        y = F.conv2d(x, w, b, self.stride, self.padding, 1, self.groups)
        if self.bn is not None:
            y = self.bn(y)
        return self.activate(y)

    def extra_repr(self) -> str:
        norm = ", input_norm" if self.folds_input_norm else ""
        return f"act={self.act}{norm}"


class SquareDeformDW(nn.Module):
    """CoDeNet's square deformable depthwise 3x3 (INTEGER_SPEC §4), no bias, no activation.

    ``forward(x, dilation)``: ``x`` is ``(N, C, H, W)``, ``dilation`` the integer-valued
    dilation map ``(N, 1, Ho, Wo)`` in pixels (produced by a :class:`ConvBNAct` with
    ``act="dilation"``), ``Ho = (H - 1) // stride + 1``. Output ``(N, C, Ho, Wo)``.
    ``weight`` is ``(C, 1, 3, 3)``.
    """

    def __init__(self, channels: int, stride: int = 1, d_max: int = 8) -> None:
        super().__init__()
        if channels < 1 or stride < 1 or d_max < 0:
            raise ConfigError(
                f"SquareDeformDW: need channels >= 1, stride >= 1, d_max >= 0; got {channels}, {stride}, {d_max}"
            )
        self.channels, self.stride, self.d_max = channels, stride, int(d_max)
        self.weight = nn.Parameter(torch.empty(channels, 1, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, dilation: torch.Tensor) -> torch.Tensor:
        return deform_square_dw_conv2d(x, dilation.to(x.dtype), self.weight.to(x.dtype), stride=self.stride)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, stride={self.stride}, d_max={self.d_max}"


class Add(nn.Module):
    """``act(a + b)``: elementwise sum of two ``(N, C, H, W)`` tensors of the same shape.

    Args:
        act: ``"none"`` (a signed sum: MobileNetV2's residual of two linear bottlenecks) or
            ``"relu"`` (the sum clamped at 0: two ReLU feature maps joined by a decoder skip).

    Raises:
        ConfigError: unknown activation. ShapeError (in ``forward``): shapes differ.
    """

    def __init__(self, act: str = "none") -> None:
        super().__init__()
        if act not in ("none", "relu"):
            raise ConfigError(f"Add: act must be 'none' or 'relu', got {act!r}")
        self.act = act

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape:
            raise ShapeError(f"Add: operand shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
        y = a + b
        return F.relu(y) if self.act == "relu" else y

    def extra_repr(self) -> str:
        return f"act={self.act}"


class ChannelSplit(nn.Module):
    """Split ``(N, sum(sizes), H, W)`` along channels into a tuple of ``len(sizes)`` tensors."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.sizes = [int(s) for s in sizes]
        if not self.sizes or min(self.sizes) < 1:
            raise ConfigError(f"ChannelSplit: sizes must be positive channel counts, got {sizes!r}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.shape[1] != sum(self.sizes):
            raise ShapeError(f"ChannelSplit{self.sizes}: input has {x.shape[1]} channels, expected {sum(self.sizes)}")
        return tuple(torch.split(x, self.sizes, dim=1))

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"


class Concat(nn.Module):
    """Concatenate tensors along channels: ``forward(a, b, ...)``."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: view channels as ``(groups, C/groups)``, transpose, flatten."""

    def __init__(self, groups: int = 2) -> None:
        super().__init__()
        self.groups = int(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if c % self.groups:
            raise ShapeError(f"ChannelShuffle: {c} channels are not divisible by {self.groups} groups")
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class Upsample2x(nn.Module):
    """Nearest-neighbour 2x upsample: ``(N, C, H, W) -> (N, C, 2H, 2W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


class MaxPool(nn.Module):
    """k x k max pool with stride and padding (padded taps are ignored)."""

    def __init__(self, kernel: int = 3, stride: int = 2, padding: int = 1) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = int(kernel), int(stride), int(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding={self.padding}"


#: Blocks that do arithmetic (and requantise their output in the integer graph).
COMPUTE_BLOCKS: tuple[type[nn.Module], ...] = (ConvBNAct, SquareDeformDW, Add)
#: Blocks that only move data.
MOVE_BLOCKS: tuple[type[nn.Module], ...] = (ChannelSplit, Concat, ChannelShuffle, Upsample2x, MaxPool)
#: Every block the tracer treats as one graph node.
BLOCKS: tuple[type[nn.Module], ...] = COMPUTE_BLOCKS + MOVE_BLOCKS
