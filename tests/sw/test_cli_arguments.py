"""Every numeric CLI argument is checked when parsed (issue 13, kind 5): one line, exit 2,
before any work; and no command declares a bare int/float option."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convforge.sw import argtypes
from convforge.sw.cli import build_parser, main


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_no_command_has_an_unchecked_numeric_option():
    unchecked = [
        f"{name} {'/'.join(action.option_strings)}"
        for name, p in _subparsers().items()
        for action in p._actions
        if action.type in (int, float)
    ]
    assert not unchecked, f"use a convforge.sw.argtypes type for: {unchecked}"


BAD = [
    (["export", "--config", "tiny", "--input", "0", "0", "--out", "X"], "--input: 0 px is not a multiple of 32"),
    (["export", "--input", "100", "100", "--out", "X"], "--input: 100 px is not a multiple of 32 .* try 128"),
    (["export", "--classes", "0", "--out", "X"], "--classes: 0 must be at least 1"),
    (["export", "--acc-bits", "70", "--out", "X"], r"--acc-bits: 70 is outside \[8, 63\]"),
    (["sim", "--unit", "requant", "--seed", "3", "--gap", "1.5"], r"--gap: 1.5 is not a probability in \[0, 1\)"),
    (["sim", "--stall", "1"], r"--stall: 1 is not a probability"),
    (["sim", "--stall", "nan"], r"--stall: 'nan' is not a finite number"),
    (["sim", "--cases", "0"], "--cases: 0 must be at least 1"),
    (["sim", "--seed", "-1"], "--seed: -1 must be 0 or more"),
    (["train", "--val-fraction", "1"], r"--val-fraction: 1 is not a fraction in \[0, 1\)"),
    (["train", "--lr", "0"], "--lr: 0 must be greater than 0"),
    (["train", "--w-bits", "9"], r"--w-bits: 9 is outside \[2, 8\]"),
    (["train", "--batch-size", "two"], "--batch-size: 'two' is not an integer"),
    (["train", "--input-size", "250"], "--input-size: 250 px is not a multiple of 32"),
    (["eval", "--limit", "0"], "--limit: 0 must be at least 1"),
    (["eval", "--threads", "0"], "--threads: 0 must be at least 1"),
    (["demo", "--views", "0"], "--views: 0 must be at least 1"),
    (["demo", "--score-thresh", "1.2"], r"--score-thresh: 1.2 is not a score in \[0, 1\]"),
    (["model-info", "--input", "31", "64"], "--input: 31 px is not a multiple of 32"),
    (["synth", "--jobs", "0"], "--jobs: 0 must be at least 1"),
]


@pytest.mark.parametrize("argv,match", BAD, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD])
def test_bad_numeric_argument_is_one_line_exit_2(argv, match, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"convforge {argv[0]}: error: argument ")
    import re

    assert re.search(match, err), err


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)))
def test_probability_accepts_exactly_0_to_below_1(value):
    text = repr(value) if isinstance(value, float) else str(value)
    ok = isinstance(value, int | float) and value == value and 0 <= value < 1
    if ok:
        assert argtypes.probability(text) == float(value)
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            argtypes.probability(text)


@settings(max_examples=200, deadline=None)
@given(st.integers(-100, 9000))
def test_image_size_accepts_exactly_multiples_of_32(value):
    if 32 <= value <= argtypes.IMAGE_MAX and value % 32 == 0:
        assert argtypes.image_size(str(value)) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="multiple of 32"):
            argtypes.image_size(str(value))


def test_simulation_library_refuses_probabilities_before_simulating():
    from convforge.errors import ConfigError
    from convforge.sim.regress import run_unit_regression  # refused first: no simulator needed

    with pytest.raises(ConfigError, match=r"gap_prob = 1.5 is not a probability in \[0, 1\)"):
        run_unit_regression("requant", gap_prob=1.5)
    with pytest.raises(ConfigError, match="stall_prob"):
        run_unit_regression("requant", stall_prob=-0.1)
