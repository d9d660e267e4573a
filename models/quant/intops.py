"""INTEGER_SPEC §1 and §3 primitives: the arithmetic every implementation reproduces.

These functions are the single definition of the integer contract in software. They
work on Python ints, NumPy integer arrays and int64 torch tensors alike (anything that
supports ``>>``, ``*``, ``+`` and elementwise min/max), so the integer executor, the
emulator, the testbenches and the compiler's bound checks all call the same code.

The spec is ``docs/integer_spec.md``; section numbers below refer to it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from convforge.errors import ExportError, IntegerOverflowError

# torch is imported lazily: the NumPy-only emulator and the PYNQ driver use these
# primitives on a board's ARM core, where torch is absent. A torch tensor can only reach
# this module if its caller imported torch, so ``sys.modules`` tells whether to look.

#: Requant multipliers are 15-bit: ``2**14 <= M < 2**15`` (or 0).
M_BITS = 15
M_MIN = 1 << (M_BITS - 1)
M_MAX = (1 << M_BITS) - 1
#: Valid right shifts.
S_MIN, S_MAX = 0, 62
#: The reference computes in int64 and never wraps (INTEGER_SPEC §6).
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


def _torch_tensor(v) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(v, torch.Tensor)


def _max_abs(v) -> int:
    """Largest ``|v|`` of an integer array/tensor/scalar, as a Python int (0 if empty)."""
    if isinstance(v, int):
        return abs(v)
    if _torch_tensor(v):
        if v.numel() == 0:
            return 0
        return max(abs(int(v.max())), abs(int(v.min())))
    a = np.asarray(v)
    if a.size == 0:
        return 0
    return max(abs(int(a.max())), abs(int(a.min())))


def _first_offender(mask, *values) -> str:
    """``"index (i, j): a, b"`` of the first True of ``mask`` (for error messages)."""
    m = mask.cpu().numpy() if _torch_tensor(mask) else np.asarray(mask)
    idx = tuple(int(i) for i in np.argwhere(m)[0]) if m.ndim else ()
    shown = []
    for v in values:
        arr = v.cpu().numpy() if _torch_tensor(v) else np.asarray(v)
        arr = np.broadcast_to(arr, m.shape) if arr.ndim else arr
        shown.append(str(int(arr[idx] if arr.ndim else arr)))
    return f"index {idx}: " + ", ".join(shown) if idx else ", ".join(shown)


def as_int64(v, op: str, name: str = "value", unbounded_int: bool = False):
    """``v`` as int64 without wrapping: Python int -> int, NumPy/torch integer -> int64.

    Narrow dtypes (int8, uint8, int16, int32, uint16, uint32) are widened, so arithmetic on
    them cannot wrap in their own width. With ``unbounded_int`` a Python int passes
    unchanged whatever its size (Python ints never wrap). Raises:
        IntegerOverflowError: ``v`` is floating point or bool, or a uint64/Python int
            outside the int64 range.
    """
    if isinstance(v, bool | np.bool_):
        raise IntegerOverflowError(f"{op}: {name} must be an integer, got a bool")
    if isinstance(v, int):
        if unbounded_int:
            return v
        if not INT64_MIN <= v <= INT64_MAX:
            raise IntegerOverflowError(f"{op}: {name} = {v} is outside int64; the reference never wraps")
        return v
    if isinstance(v, np.integer):
        return as_int64(int(v), op, name)
    if _torch_tensor(v):
        import torch

        if v.is_floating_point() or v.is_complex() or v.dtype == torch.bool:
            raise IntegerOverflowError(f"{op}: {name} must be an integer tensor, got {v.dtype}")
        return v.to(torch.int64) if v.dtype != torch.int64 else v
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        raise IntegerOverflowError(f"{op}: {name} must be integer-typed, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and int(a.max()) > INT64_MAX:
        raise IntegerOverflowError(f"{op}: {name} reaches {int(a.max())}, outside int64")
    return a.astype(np.int64, copy=False)


def check_shift(s, op: str):
    """``s`` as int (scalar) or int64 array/tensor, each in ``[0, 62]`` (§3)."""
    s = as_int64(s, op, "shift")
    lo_hi = (int(s), int(s)) if isinstance(s, int) else (
        (int(s.min()), int(s.max())) if (s.numel() if _torch_tensor(s) else s.size) else (0, 0)
    )
    if lo_hi[0] < S_MIN or lo_hi[1] > S_MAX:
        raise IntegerOverflowError(
            f"{op}: shift spans [{lo_hi[0]}, {lo_hi[1]}], outside [{S_MIN}, {S_MAX}] (INTEGER_SPEC §3)"
        )
    return s


def check_int64_bound(bound: int, op: str, detail: str) -> None:
    """Raise if a worst-case magnitude ``bound`` (a Python int) does not fit int64 (§6)."""
    if bound > INT64_MAX:
        raise IntegerOverflowError(
            f"{op}: {detail} reaches {bound} (2**{bound.bit_length() - 1} or more), beyond int64; "
            "the integer reference never wraps (INTEGER_SPEC §6) -- the inputs are far outside "
            "the spec's ranges (8-bit activations, w_bits weights, int32 bias, 15-bit M)"
        )


def rshift_round(v, s):
    """``floor((v + 2**(s-1)) / 2**s)`` for ``s > 0``, ``v`` for ``s == 0`` (§1).

    Round half up, arithmetic shift. ``s`` may be a scalar or broadcast elementwise
    (per-channel shifts) and lies in ``[0, 62]``. ``v`` is a Python int, or a NumPy
    array/torch tensor of any integer dtype (narrow dtypes are widened to int64 first, so
    an int8 127 shifted by 4 gives 8, not -8). Arrays/tensors come back as int64.

    Raises:
        IntegerOverflowError: ``v`` or ``s`` is not integer-typed, ``s`` is outside
            ``[0, 62]``, or ``v + 2**(s-1)`` would exceed int64 (names the value).
    """
    op = "rshift_round"
    v = as_int64(v, op, "v", unbounded_int=True)
    s = check_shift(s, op)
    if isinstance(v, int) and isinstance(s, int):  # Python ints never wrap
        return v if s == 0 else (v + (1 << (s - 1))) >> s
    if isinstance(s, int):
        if s == 0:
            return v
        half = 1 << (s - 1)
        n = v.numel() if _torch_tensor(v) else np.asarray(v).size
        if n and int(v.max()) > INT64_MAX - half:  # adding half can only overflow upwards
            bad = v > INT64_MAX - half
            raise IntegerOverflowError(
                f"{op}: v + 2**{s - 1} wraps int64 at {_first_offender(bad, v)}; the reference never wraps"
            )
        return (v + half) >> s
    # elementwise shifts: half = 2**(s-1) where s > 0, else 0
    if _torch_tensor(s) or _torch_tensor(v):
        import torch

        s_t = torch.as_tensor(s, dtype=torch.int64)
        v_t = torch.as_tensor(v, dtype=torch.int64)
        half = torch.where(s_t > 0, torch.ones_like(s_t) << (s_t - 1).clamp(min=0), torch.zeros_like(s_t))
        bad = v_t > INT64_MAX - half
        if bool(bad.any()):
            raise IntegerOverflowError(
                f"{op}: v + 2**(s-1) wraps int64 at {_first_offender(bad, v_t, s_t)} (v, s)"
            )
        return (v_t + half) >> s_t
    v = np.asarray(v, dtype=np.int64)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    bad = v > INT64_MAX - half
    if bad.any():
        raise IntegerOverflowError(f"{op}: v + 2**(s-1) wraps int64 at {_first_offender(bad, v, s)} (v, s)")
    return np.right_shift(v + half, s)


def sat(v, lo, hi):
    """Clamp ``v`` to ``[lo, hi]`` (§1). ``lo``/``hi`` scalars or broadcastable.

    Raises:
        IntegerOverflowError: scalar bounds with ``lo > hi`` (every value would become ``hi``).
    """
    if isinstance(lo, int | np.integer) and isinstance(hi, int | np.integer) and lo > hi:
        raise IntegerOverflowError(f"sat: lo = {int(lo)} is above hi = {int(hi)}; no value fits [lo, hi]")
    if _torch_tensor(v):
        import torch

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

    ``acc`` is an integer array/tensor with the channel on axis 1 (``N, C, ...``) or a plain
    vector (or a Python int); ``bias``, ``M``, ``S`` are per-channel vectors (broadcast over
    the trailing axes) or scalars, ``lo``/``hi`` scalars. Narrow integer dtypes are widened
    to int64 first; the result is int64 (a Python int for int inputs).

    Cost: one bound check per call (max/min of the operands, vectorised) on top of the
    arithmetic.

    Raises:
        IntegerOverflowError: an operand is not integer-typed, ``M < 0``, ``S`` outside
            ``[0, 62]``, ``lo > hi``, or ``acc + bias`` / ``(acc + bias) * M`` / the rounding
            add would exceed int64 (the message names the first offending element), e.g.
            ``requant([[2**50]], [0], [2**14], [10], -128, 127)``.
    """
    op = "requant"
    if isinstance(lo, int | np.integer) and isinstance(hi, int | np.integer) and lo > hi:
        raise IntegerOverflowError(f"{op}: lo = {int(lo)} is above hi = {int(hi)}; no value fits [lo, hi]")
    if isinstance(acc, int | np.integer) and all(isinstance(t, int | np.integer) for t in (bias, M, S)):
        acc, bias, M, S = (as_int64(t, op, n, True) for t, n in ((acc, "acc"), (bias, "bias"), (M, "M"), (S, "S")))
        if M < 0:
            raise IntegerOverflowError(f"{op}: M = {M} is negative (INTEGER_SPEC §3: M >= 0)")
        check_shift(S, op)
        return sat(rshift_round((acc + bias) * M, S), lo, hi)  # Python ints: exact
    acc = as_int64(acc, op, "acc")
    if _torch_tensor(acc):
        import torch

        shape = (1, -1) + (1,) * (acc.dim() - 2) if acc.dim() >= 2 else (-1,)

        def vec(t, name):
            return as_int64(torch.as_tensor(np.asarray(t) if not _torch_tensor(t) else t), op, name).reshape(shape)

        full = torch.full_like
        nelem = acc.numel()
    else:
        acc = np.asarray(acc, dtype=np.int64)
        shape = (1, -1) + (1,) * (acc.ndim - 2) if acc.ndim >= 2 else (-1,)

        def vec(t, name):
            return as_int64(np.asarray(t), op, name).reshape(shape)

        full = np.full_like
        nelem = acc.size
    b, m, s = vec(bias, "bias"), vec(M, "M"), check_shift(vec(S, "S"), op)
    if nelem and int(m.min()) < 0:
        raise IntegerOverflowError(f"{op}: M reaches {int(m.min())}; multipliers are >= 0 (INTEGER_SPEC §3)")
    if nelem:
        check_int64_bound(_max_abs(acc) + _max_abs(b), op, "|acc + bias|")
        t = acc + b
        # |t| * M + 2**(S-1) must stay inside int64, per element (per-channel M and S).
        limit = (INT64_MAX - (full(m, 1) << s) // 2) // (m + (m == 0))
        bad = (t > limit) | (-t > limit)
        if bool(bad.any()):
            raise IntegerOverflowError(
                f"{op}: (acc + bias) * M wraps int64 at {_first_offender(bad, t, m, s)} (acc + bias, M, S); "
                "the reference never wraps (INTEGER_SPEC §6) -- such an accumulator cannot come from "
                "8-bit activations and w_bits weights"
            )
        return sat(rshift_round(t * m, s), lo, hi)
    return sat(acc, lo, hi)


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
