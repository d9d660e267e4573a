"""INTEGER_SPEC v1.1 §6: the integer primitives never wrap; they raise on inputs that would.

Oracles are Python ints (unbounded), so "fits int64" is decided exactly.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convforge.errors import ConvforgeError, IntegerOverflowError
from convforge.models.quant import executor as ex
from convforge.models.quant.intops import INT64_MAX, INT64_MIN, requant, rshift_round, sat


def py_rshift_round(v: int, s: int) -> int:
    return v if s == 0 else (v + (1 << (s - 1))) >> s


def py_requant(acc: int, bias: int, m: int, s: int, lo: int, hi: int) -> int:
    return min(max(py_rshift_round((acc + bias) * m, s), lo), hi)


def fits(acc: int, bias: int, m: int, s: int) -> bool:
    """What §6 allows: every intermediate of (acc + bias) * M + 2**(S-1) inside int64."""
    half = (1 << (s - 1)) if s else 0
    return abs(acc + bias) * m + half <= INT64_MAX


def test_issue_example_requant_of_2_pow_50_raises_naming_the_values():
    with pytest.raises(IntegerOverflowError, match=r"requant: \(acc \+ bias\) \* M wraps int64.*1125899906842624"):
        requant(torch.tensor([[2**50]]), [0], [2**14], [10], -128, 127)
    with pytest.raises(IntegerOverflowError):
        requant(np.array([[2**50]]), [0], [2**14], [10], -128, 127)
    # Python ints are unbounded: the exact answer.
    assert requant(2**50, 0, 2**14, 10, -128, 127) == 127


@pytest.mark.parametrize("np_dtype,torch_dtype", [(np.int8, torch.int8), (np.int16, torch.int16),
                                                  (np.uint8, torch.uint8), (np.int32, torch.int32)])
def test_rshift_round_on_narrow_dtypes_widens_instead_of_wrapping(np_dtype, torch_dtype):
    info = np.iinfo(np_dtype)
    values = sorted({info.min, -1 if info.min < 0 else 0, 0, 1, info.max})
    for s in (0, 1, 4, 7):
        want = [py_rshift_round(int(v), s) for v in values]
        got_np = rshift_round(np.array(values, dtype=np_dtype), s)
        got_t = rshift_round(torch.tensor(values, dtype=torch_dtype), s)
        assert got_np.dtype == np.int64 and got_np.tolist() == want
        assert got_t.dtype == torch.int64 and got_t.tolist() == want
    assert rshift_round(np.array([127], dtype=np.int8), 4).tolist() == [8]  # the issue's -8
    assert rshift_round(np.int8(127), 4) == 8


@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=1, max_size=4), st.integers(0, 62))
def test_rshift_round_on_wide_values_is_exact_or_raises(values, s):
    half = (1 << (s - 1)) if s else 0
    if all(v + half <= INT64_MAX for v in values):
        want = [py_rshift_round(v, s) for v in values]
        assert rshift_round(np.array(values, dtype=np.int64), s).tolist() == want
        assert rshift_round(torch.tensor(values, dtype=torch.int64), s).tolist() == want
        # elementwise shifts take the same path as per-channel S
        shifts = np.full(len(values), s)
        assert rshift_round(np.array(values, dtype=np.int64), shifts).tolist() == want
        assert rshift_round(torch.tensor(values), torch.as_tensor(shifts)).tolist() == want
    else:
        for v in (np.array(values, dtype=np.int64), torch.tensor(values, dtype=torch.int64)):
            with pytest.raises(IntegerOverflowError, match="rshift_round"):
                rshift_round(v, s)
        with pytest.raises(IntegerOverflowError, match="rshift_round"):
            rshift_round(np.array(values, dtype=np.int64), np.full(len(values), s))


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-(2**62), 2**62) | st.integers(-(2**40), 2**40) | st.integers(-(2**31), 2**31),
            st.integers(-(2**31), 2**31 - 1),
            st.just(0) | st.integers(2**14, 2**15 - 1),
            st.integers(0, 62),
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(-128, 0),
    st.integers(0, 255),
)
def test_requant_on_wide_values_matches_python_ints_or_raises(rows, lo, hi):
    acc, bias, m, s = (list(col) for col in zip(*rows, strict=True))
    if all(fits(*row) for row in rows):
        want = [py_requant(*row, lo, hi) for row in rows]
        assert requant(np.array(acc), bias, m, s, lo, hi).tolist() == want
        assert requant(torch.tensor(acc), bias, m, s, lo, hi).tolist() == want
    else:
        with pytest.raises(IntegerOverflowError, match="requant"):
            requant(np.array(acc), bias, m, s, lo, hi)
        with pytest.raises(IntegerOverflowError, match="requant"):
            requant(torch.tensor(acc), bias, m, s, lo, hi)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: requant(np.array([1.5]), [0], [2**14], [3], 0, 255), "acc must be integer-typed"),
        (lambda: requant(torch.tensor([1.0]), [0], [2**14], [3], 0, 255), "acc must be an integer tensor"),
        (lambda: requant(np.array([1]), [0], [-5], [3], 0, 255), "M reaches -5"),
        (lambda: requant(np.array([1]), [0], [2**14], [63], 0, 255), r"shift spans \[63, 63\]"),
        (lambda: requant(np.array([1]), [0], [2**14], [-1], 0, 255), "shift spans"),
        (lambda: requant(np.array([1]), [0], [2**14], [3], 200, 10), "lo = 200 is above hi = 10"),
        (lambda: sat(5, 200, 10), "lo = 200 is above hi = 10"),
        (lambda: rshift_round(np.array([1.0]), 2), "v must be integer-typed"),
        (lambda: rshift_round(np.array([2**64 - 1], dtype=np.uint64), 2), "outside int64"),
        (lambda: rshift_round(1, 70), "shift spans"),
    ],
)
def test_primitives_refuse_non_integer_and_out_of_spec_operands(call, match):
    with pytest.raises(IntegerOverflowError, match=match):
        call()


def test_executor_kernels_refuse_accumulators_beyond_int64():
    big = torch.full((1, 1, 3, 3), 2**60, dtype=torch.int64)
    with pytest.raises(IntegerOverflowError, match="add_int"):
        ex.add_int(big, big, 2**14, 2**14, 10, -128, 127)
    with pytest.raises(IntegerOverflowError, match="square_deform_dw_int"):
        ex.square_deform_dw_int(big, torch.ones(1, 1, 3, 3, dtype=torch.int64), torch.full((1, 1, 3, 3), 7))
    with pytest.raises(IntegerOverflowError, match="bilinear_deform_int"):
        ex.bilinear_deform_int(big, torch.zeros(1, 18, 3, 3, dtype=torch.int64), torch.full((1, 1, 3, 3), 7))
    assert issubclass(IntegerOverflowError, ConvforgeError)


def test_intops_qgraph_and_validation_import_without_torch():
    """The NumPy emulator and the PYNQ driver run these on a board's ARM core (no torch)."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import convforge.models.quant.intops as I, convforge.models.quant.qgraph, convforge.models.quant.validate\n"
        "assert I.requant(np.array([[100]]), [5], [20000], [16], -128, 127).tolist() == [[32]]\n"
        "assert I.rshift_round(np.array([127], dtype=np.int8), 4).tolist() == [8]\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
