"""Deformable convolution operators and the float modules built on them."""

from convforge.models.ops.deform import deform_conv2d, deform_square_dw_conv2d, square_offsets
from convforge.models.ops.modules import BoundedDeformConv3x3, RoundSTE, SquareDeformableDW, round_ste

__all__ = [
    "deform_conv2d",
    "deform_square_dw_conv2d",
    "square_offsets",
    "RoundSTE",
    "round_ste",
    "SquareDeformableDW",
    "BoundedDeformConv3x3",
]
