"""Argument types shared by every ``convforge`` command: numbers are checked when parsed.

Use them as argparse ``type=`` functions (``p.add_argument("--cases", type=positive_int)``):
a bad value is refused before any work starts, with argparse's one-line error naming the
option, the value and the allowed range (exit status 2), instead of a traceback or a run
that blames the hardware. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = [
    "bounded_int",
    "fraction",
    "image_size",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "probability",
    "score",
]


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def bounded_int(lo: int | None = None, hi: int | None = None, what: str = "") -> Callable[[str], int]:
    """An integer in ``[lo, hi]`` (either bound optional)."""

    def parse(text: str) -> int:
        value = _int(text)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            lo_s = "-inf" if lo is None else str(lo)
            hi_s = "inf" if hi is None else str(hi)
            raise argparse.ArgumentTypeError(f"{value} is outside [{lo_s}, {hi_s}]{' (' + what + ')' if what else ''}")
        return value

    parse.__name__ = f"integer in [{lo}, {hi}]"  # argparse shows this name in "invalid ... value"
    return parse


def positive_int(text: str) -> int:
    """An integer >= 1 (counts: cases, views, batches, threads, epochs per validation)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds, epoch counts that may be zero)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, width multipliers)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be greater than 0")
    return value


def probability(text: str) -> float:
    """A probability in ``[0, 1)``: 1 would stall a stream forever (gaps, back-pressure)."""
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is not a probability in [0, 1)")
    return value


def fraction(text: str) -> float:
    """A share in ``[0, 1)`` (a validation split can be empty, never everything)."""
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is not a fraction in [0, 1)")
    return value


def score(text: str) -> float:
    """A detection score threshold in ``[0, 1]``."""
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is not a score in [0, 1]")
    return value


#: Image sides: the CoDeNet backbone downsamples by 32 (models/nets/codenet.py).
IMAGE_MULTIPLE = 32
IMAGE_MAX = 8192


def image_size(text: str) -> int:
    """An image side in pixels: a multiple of 32 in ``[32, 8192]``."""
    value = _int(text)
    if value < IMAGE_MULTIPLE or value % IMAGE_MULTIPLE or value > IMAGE_MAX:
        up = max(IMAGE_MULTIPLE, -(-value // IMAGE_MULTIPLE) * IMAGE_MULTIPLE)
        raise argparse.ArgumentTypeError(
            f"{value} px is not a multiple of {IMAGE_MULTIPLE} in [{IMAGE_MULTIPLE}, {IMAGE_MAX}] "
            f"(the backbone downsamples by {IMAGE_MULTIPLE}); try {min(up, IMAGE_MAX)}"
        )
    return value
