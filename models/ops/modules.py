"""Float ``nn.Module``s around the deformable operators, for training CoDeNet-style nets.

- ``round_ste``: round half up forward (the float twin of ``rshift_round``), identity gradient.
- ``SquareDeformableDW``: CoDeNet's square deformable depthwise 3x3 with its 1x1 dilation branch.
- ``BoundedDeformConv3x3``: bilinear deformable 3x3 (DCNv1) with offsets clamped to ``+-max_offset``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from convforge.errors import ConfigError
from convforge.models.ops.deform import deform_conv2d, deform_square_dw_conv2d

__all__ = ["RoundSTE", "round_ste", "SquareDeformableDW", "BoundedDeformConv3x3"]


class RoundSTE(torch.autograd.Function):
    """``floor(x + 0.5)`` forward (round half up, as INTEGER_SPEC's ``rshift_round``); identity backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.floor(x + 0.5)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad_output


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half up with a straight-through (identity) gradient."""
    return RoundSTE.apply(x)


class SquareDeformableDW(nn.Module):
    """Square deformable depthwise 3x3 (INTEGER_SPEC §4) with its learned dilation map.

    The dilation branch is ``dilation_conv`` (1x1 conv, ``channels -> 1``, with the block's
    stride, so the map has the output resolution), rounded half up with a straight-through
    gradient and clamped to ``[0, d_max]`` pixels. The depthwise kernel ``weight``
    ``(channels, 1, 3, 3)`` has no bias (a BatchNorm follows in the network).

    Input ``(N, channels, H, W)``; output ``(N, channels, Ho, Wo)`` with
    ``Ho = (H - 1) // stride + 1``. At initialisation the dilation is 1 everywhere, so the
    block starts as a plain depthwise 3x3 with padding 1.
    """

    def __init__(self, channels: int, stride: int = 1, d_max: int = 8) -> None:
        super().__init__()
        if channels < 1 or stride < 1 or d_max < 0:
            raise ConfigError(
                f"SquareDeformableDW: need channels >= 1, stride >= 1, d_max >= 0; "
                f"got channels={channels}, stride={stride}, d_max={d_max}"
            )
        self.channels = channels
        self.stride = stride
        self.d_max = d_max
        self.dilation_conv = nn.Conv2d(channels, 1, 1, stride=stride, bias=True)
        nn.init.zeros_(self.dilation_conv.weight)
        nn.init.constant_(self.dilation_conv.bias, 1.0)
        self.weight = nn.Parameter(torch.empty(channels, 1, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default init

    def dilation_map(self, x: torch.Tensor) -> torch.Tensor:
        """The integer-valued dilation per output pixel, ``(N, 1, Ho, Wo)`` in ``[0, d_max]`` pixels."""
        return torch.clamp(round_ste(self.dilation_conv(x)), 0, self.d_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Depthwise square-deformable 3x3 of ``x`` at the learned dilations."""
        return deform_square_dw_conv2d(x, self.dilation_map(x), self.weight, stride=self.stride)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, stride={self.stride}, d_max={self.d_max}"


class BoundedDeformConv3x3(nn.Module):
    """Bilinear deformable 3x3 (DCNv1, one offset group, dilation 1) with bounded offsets.

    ``offset_conv`` (3x3, ``in_ch -> 18``, same stride and padding as the main conv,
    initialised to zero so the block starts as a plain 3x3) predicts the offsets in
    torchvision layout (channel ``2*(i*3+j)`` is ``dy``, the next ``dx``), clamped to
    ``[-max_offset, max_offset]`` pixels (INTEGER_SPEC's ``R``). The main kernel ``weight``
    is ``(out_ch, in_ch // groups, 3, 3)``; ``bias`` is off by default (a BatchNorm follows).

    Input ``(N, in_ch, H, W)``; output ``(N, out_ch, Ho, Wo)`` with
    ``Ho = (H + 2*padding - 3) // stride + 1``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        padding: int = 1,
        groups: int = 1,
        max_offset: float = 7.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if groups < 1 or in_ch % groups or out_ch % groups:
            raise ConfigError(f"BoundedDeformConv3x3: groups={groups} must divide in_ch={in_ch} and out_ch={out_ch}")
        if stride < 1 or padding < 0 or max_offset < 0:
            raise ConfigError(
                f"BoundedDeformConv3x3: need stride >= 1, padding >= 0, max_offset >= 0; "
                f"got stride={stride}, padding={padding}, max_offset={max_offset}"
            )
        self.in_ch, self.out_ch = in_ch, out_ch
        self.stride, self.padding, self.groups = stride, padding, groups
        self.max_offset = float(max_offset)
        self.offset_conv = nn.Conv2d(in_ch, 18, 3, stride=stride, padding=padding, bias=True)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch // groups, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_ch))
        else:
            self.register_parameter("bias", None)

    def offset_map(self, x: torch.Tensor) -> torch.Tensor:
        """The clamped offsets, ``(N, 18, Ho, Wo)`` in pixels within ``[-max_offset, max_offset]``."""
        return torch.clamp(self.offset_conv(x), -self.max_offset, self.max_offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deformable 3x3 of ``x`` at the learned, bounded offsets."""
        return deform_conv2d(x, self.offset_map(x), self.weight, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_ch}, {self.out_ch}, stride={self.stride}, padding={self.padding}, "
            f"groups={self.groups}, max_offset={self.max_offset}"
        )
