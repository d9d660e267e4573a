"""Per-layer descriptors of the units: each unit latches ONE of these words when it starts a
layer and holds it until the layer's last output left (no loose per-layer ports).

A descriptor arrives on the unit's ``desc`` stream; the unit accepts it only while idle
(``busy`` low), reports ``busy`` while the layer runs and pulses ``done`` for one cycle
when its last output vector was accepted downstream. Pack with :mod:`convforge.hw.packing`.
"""

from __future__ import annotations

from amaranth import unsigned
from amaranth.lib import data, enum

from convforge.hw.config import EngineConfig
from convforge.hw.layouts.vectors import BOUND_SHAPE

#: Widest image height and channel count a descriptor can carry.
HEIGHT_BITS = 16
CHANNEL_BITS = 16


class DwMode(enum.IntEnum, shape=2):
    """Depthwise mode field of the depthwise descriptor."""

    REGULAR = 0
    SQUARE = 1
    BILINEAR = 2


#: Mode name (``EngineConfig.dw_modes``) -> descriptor code.
MODE_CODES = {"regular": DwMode.REGULAR, "square": DwMode.SQUARE, "bilinear": DwMode.BILINEAR}


def dw_descriptor_layout(config: EngineConfig) -> data.StructLayout:
    """Depthwise unit (:class:`convforge.hw.rtl.depthwise.DepthwiseUnit`).

    Fields: ``mode`` (:class:`DwMode`), ``stride`` (1 or 2), ``dilation`` (regular mode,
    1..D_max pixels), ``width`` (pixels, 1..line_width), ``height`` (pixels),
    ``channels``, ``in_signed`` (1: int8 input, 0: uint8), ``lo``/``hi`` (inclusive
    output clamp, signed 9 bits).
    """
    return data.StructLayout({
        "mode": DwMode,
        "stride": unsigned(2),
        "dilation": unsigned(config.d_max.bit_length()),
        "width": unsigned(config.line_width.bit_length()),
        "height": unsigned(HEIGHT_BITS),
        "channels": unsigned(CHANNEL_BITS),
        "in_signed": unsigned(1),
        "lo": BOUND_SHAPE,
        "hi": BOUND_SHAPE,
    })


def add_descriptor_layout(config: EngineConfig) -> data.StructLayout:
    """Residual add (:class:`convforge.hw.rtl.pool_add.ResidualAdd`),
    ``y = sat(rshift_round(a*ma + b*mb, s), lo, hi)`` over ``count`` vector pairs.

    Fields: ``count`` (vector pairs in the layer, 1..2**32-1), ``a_signed``/``b_signed``
    (operand bytes int8 when 1, uint8 when 0), ``ma``/``mb`` (unsigned ``m_bits``),
    ``s`` (unsigned ``s_bits``, 0..62), ``lo``/``hi``.
    """
    return data.StructLayout({
        "count": unsigned(32),
        "a_signed": unsigned(1),
        "b_signed": unsigned(1),
        "ma": unsigned(config.m_bits),
        "mb": unsigned(config.m_bits),
        "s": unsigned(config.s_bits),
        "lo": BOUND_SHAPE,
        "hi": BOUND_SHAPE,
    })


#: Width of the max pool descriptor's pixel dimensions and of its window fields.
POOL_DIM_BITS = 16
POOL_WINDOW_BITS = 4


def pool_descriptor_layout() -> data.StructLayout:
    """Max pool (:class:`convforge.hw.rtl.pool_add.MaxPool`) over one block.

    Fields: ``height``/``width`` (block size in pixels, >= 1, ``height*width`` within the
    block buffer), ``out_height``/``out_width`` (output pixels), ``kernel`` (window side),
    ``stride``, ``pad`` (top/left padding, 0..kernel-1), ``act_signed`` (1: int8 input).
    Limits (block buffer, largest kernel and stride) are the unit's; the compiler checks
    them before it emits the descriptor.
    """
    return data.StructLayout({
        "height": unsigned(POOL_DIM_BITS),
        "width": unsigned(POOL_DIM_BITS),
        "out_height": unsigned(POOL_DIM_BITS),
        "out_width": unsigned(POOL_DIM_BITS),
        "kernel": unsigned(POOL_WINDOW_BITS),
        "stride": unsigned(POOL_WINDOW_BITS),
        "pad": unsigned(POOL_WINDOW_BITS),
        "act_signed": unsigned(1),
    })


def pe_descriptor_layout() -> data.StructLayout:
    """Pointwise PE array (:class:`convforge.hw.rtl.pe_array.PEArray`), one layer pass.

    Fields: ``pixels`` (pixels in the pass), ``ci_groups``/``co_groups`` (``ceil(Ci /
    Ci_p)``, ``ceil(Co / Co_p)``, >= 1), ``act_signed`` (1: int8 input), ``lo``/``hi``.
    """
    return data.StructLayout({
        "pixels": unsigned(32),
        "ci_groups": unsigned(CHANNEL_BITS),
        "co_groups": unsigned(CHANNEL_BITS),
        "act_signed": unsigned(1),
        "lo": BOUND_SHAPE,
        "hi": BOUND_SHAPE,
    })
