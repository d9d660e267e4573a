"""INTEGER_SPEC §1 and §3 primitives: the arithmetic every implementation reproduces.

These functions are the single definition of the integer contract in software. They
work on Python ints, NumPy integer arrays and int64 torch tensors alike (anything that
supports ``>>``, ``*``, ``+`` and elementwise min/max), so the integer executor, the
emulator, the testbenches and the compiler's bound checks all call the same code.

The spec is ``docs/integer_spec.md``; section numbers below refer to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from convforge.errors import ExportError

#: Requant multipliers are 15-bit: ``2**14 <= M < 2**15`` (or 0).
M_BITS = 15
M_MIN = 1 << (M_BITS - 1)
M_MAX = (1 << M_BITS) - 1
#: Valid right shifts.
S_MIN, S_MAX = 0, 62


def rshift_round(v, s):
    """``floor((v + 2**(s-1)) / 2**s)`` for ``s > 0``, ``v`` for ``s == 0`` (§1).

    Round half up, arithmetic shift. ``s`` may be a scalar or broadcast elementwise
    (per-channel shifts). Inputs must be integer-typed (int64 for tensors/arrays).
    """
    if isinstance(s, int | np.integer):
        if s == 0:
            return v
        return (v + (1 << (int(s) - 1))) >> int(s)
    # elementwise shifts: half = 2**(s-1) where s > 0, else 0
    if isinstance(s, torch.Tensor):
        one = torch.ones_like(s)
        half = torch.where(s > 0, one << (s - 1).clamp(min=0), torch.zeros_like(s))
        return (v + half) >> s
    s = np.asarray(s, dtype=np.int64)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    return np.right_shift(np.asarray(v, dtype=np.int64) + half, s)


def sat(v, lo, hi):
    """Clamp ``v`` to ``[lo, hi]`` (§1). ``lo``/``hi`` scalars or broadcastable."""
    if isinstance(v, torch.Tensor):
        lo_t = torch.as_tensor(lo, dtype=v.dtype, device=v.device)
        hi_t = torch.as_tensor(hi, dtype=v.dtype, device=v.device)
        return torch.minimum(torch.maximum(v, lo_t), hi_t)
    if isinstance(v, np.ndarray):
        return np.minimum(np.maximum(v, lo), hi)
    return min(max(v, lo), hi)


def round_half_even(x: float) -> int:
    """Python's ``round`` on floats is half-to-even; named for the spec's wording."""
    return int(round(x))


def round_half_up(x: float) -> int:
    """``floor(x + 0.5)``: the float twin of :func:`rshift_round`."""
    return int(math.floor(x + 0.5))


@dataclass(frozen=True)
class Requant:
    """One output channel's requantisation ``(M, S)`` (§3)."""

    M: int
    S: int


def derive_requant(r: float, layer: str = "?") -> Requant:
    """Choose ``(M, S)`` for a real multiplier ``r = s_x * s_w / s_y`` (§3).

    ``S = 14 - floor(log2(r))``, ``M = round_half_even(r * 2**S)``; ``M == 2**15``
    becomes ``M = 2**14, S = S - 1``. ``r == 0`` gives ``M = 0, S = 0``.

    Raises:
        ExportError: ``r`` is negative or not finite, or ``S`` falls outside ``[0, 62]``;
            the message names ``layer``.
    """
    if not math.isfinite(r) or r < 0:
        raise ExportError(
            f"layer {layer!r}: requant multiplier {r!r} is not a finite non-negative number; "
            "check the layer's scales (a zero or NaN activation scale usually means the "
            "calibration saw no data)"
        )
    if r == 0.0:
        return Requant(0, 0)
    S = 14 - math.floor(math.log2(r))
    M = round_half_even(math.ldexp(r, S))
    # log2 can be off by one ulp at powers of two; renormalise into [2**14, 2**15).
    while M >= (1 << 15):
        S -= 1
        M = round_half_even(math.ldexp(r, S))
        if M == (1 << 15):
            M, S = 1 << 14, S - 1
            break
    while 0 < M < (1 << 14):
        S += 1
        M = round_half_even(math.ldexp(r, S))
    if not S_MIN <= S <= S_MAX:
        raise ExportError(
            f"layer {layer!r}: requant shift S={S} for multiplier r={r:.3e} is outside "
            f"[{S_MIN}, {S_MAX}]; the layer's output scale is far too small or too large "
            "for its input and weight scales (recalibrate, or check for a dead layer)"
        )
    return Requant(int(M), int(S))


def requant(acc, bias, M, S, lo, hi):
    """``sat(rshift_round((acc + bias) * M, S), lo, hi)`` (§3), elementwise.

    ``acc`` is int64 with the channel on axis 1 (``N, C, ...``) or a plain vector;
    ``bias``, ``M``, ``S`` are per-channel vectors (broadcast over the trailing axes),
    ``lo``/``hi`` scalars.
    """
    if isinstance(acc, torch.Tensor):
        shape = (1, -1) + (1,) * (acc.dim() - 2) if acc.dim() >= 2 else (-1,)
        b = torch.as_tensor(bias, dtype=torch.int64).reshape(shape)
        m = torch.as_tensor(M, dtype=torch.int64).reshape(shape)
        s = torch.as_tensor(S, dtype=torch.int64).reshape(shape)
        return sat(rshift_round((acc + b) * m, s), lo, hi)
    acc = np.asarray(acc, dtype=np.int64)
    shape = (1, -1) + (1,) * (acc.ndim - 2) if acc.ndim >= 2 else (-1,)
    b = np.asarray(bias, dtype=np.int64).reshape(shape)
    m = np.asarray(M, dtype=np.int64).reshape(shape)
    s = np.asarray(S, dtype=np.int64).reshape(shape)
    return sat(rshift_round((acc + b) * m, s), lo, hi)


def act_range(bits: int, signed: bool) -> tuple[int, int]:
    """Full integer range of an activation type (§2)."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def weight_range(bits: int) -> tuple[int, int]:
    """Symmetric narrow weight range ``[-(2**(b-1)-1), 2**(b-1)-1]`` (§2)."""
    q = (1 << (bits - 1)) - 1
    return -q, q


def signed_bits_for(bound: int) -> int:
    """Smallest two's-complement width that holds every value in ``[-bound, bound]``."""
    return max(1, int(bound).bit_length() + 1)
