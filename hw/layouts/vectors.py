"""The vectors that cross unit boundaries, defined once (INTEGER_SPEC §2, §3).

* :func:`act_vector_layout` -- ``lanes`` raw activation **bytes** (uint8, or int8 two's
  complement when the tensor is signed; the signedness travels in the unit's descriptor).
  Every unit consumes activations in this form, so units chain byte for byte.
* :func:`out_vector_layout` -- ``lanes`` activations after requant/saturation, each
  :data:`ACT_OUT_SHAPE` (signed 9 bits holds int8 and uint8 results and any ``[lo, hi]``
  inside ``[-256, 255]``; the stored byte is its low 8 bits).
* :func:`requant_params_layout` -- one output channel's requantisation parameters
  ``(bias, M, S)``: int32 bias, uint15 multiplier, uint6 shift (0..62).

Pack and unpack them with :mod:`convforge.hw.packing`.
"""

from __future__ import annotations

from amaranth import signed, unsigned
from amaranth.lib import data

from convforge.hw.config import EngineConfig

#: Bits of a stored activation (INTEGER_SPEC §2: activations are 8-bit).
ACT_BITS = 8
#: One output activation lane (signed 9 bits); the stored byte is the low 8 bits.
ACT_OUT_SHAPE = signed(9)
#: Per-layer clamp bounds ``lo``/``hi`` (inclusive), same shape as an output lane.
BOUND_SHAPE = signed(9)


def act_vector_layout(lanes: int) -> data.ArrayLayout:
    """``lanes`` raw activation bytes (element ``c`` is channel ``c`` of the vector)."""
    return data.ArrayLayout(unsigned(ACT_BITS), lanes)


def out_vector_layout(lanes: int) -> data.ArrayLayout:
    """``lanes`` output activations, :data:`ACT_OUT_SHAPE` each."""
    return data.ArrayLayout(ACT_OUT_SHAPE, lanes)


def requant_params_layout(cfg: EngineConfig) -> data.StructLayout:
    """One channel's requant parameters (INTEGER_SPEC §3): ``bias`` (signed
    ``bias_bits`` = int32), ``m`` (unsigned ``m_bits`` = 15), ``s`` (unsigned ``s_bits``
    = 6, 0..62)."""
    return data.StructLayout({
        "bias": signed(cfg.bias_bits),
        "m": unsigned(cfg.m_bits),
        "s": unsigned(cfg.s_bits),
    })

