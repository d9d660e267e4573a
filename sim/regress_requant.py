"""Random bit-exact regression of :class:`convforge.hw.rtl.requant.Requant`.

Each case is a burst of 1..12 vectors with per-lane random ``acc`` (full ``acc_bits``
range with its extremes), ``bias`` (full int32 range), ``M`` (0 or ``[2**14, 2**15)``),
``S`` (``[0, 62]``: half chosen so results land inside the output range, half uniform)
and one ``(lo, hi)`` per case (int8, uint8, ReLU6, dilation and offset ranges, random).
Golden values: :mod:`convforge.models.quant.intops`.
"""

from __future__ import annotations

import random

import numpy as np

from convforge.hw.config import EngineConfig
from convforge.hw.layouts.vectors import out_vector_layout
from convforge.hw.packing import pack, unpack
from convforge.hw.rtl.requant import Requant, requant_in_layout
from convforge.models.quant.intops import M_MAX, M_MIN, S_MAX, act_range, rshift_round, sat
from convforge.sim.player import Phase, play_streams
from convforge.sim.regress import RegressionResult, compare_case
from convforge.sim.runner import build_design


def _bounds(rng: random.Random, cfg: EngineConfig) -> tuple[int, int]:
    kind = rng.randrange(6)
    if kind == 0:
        return act_range(8, signed=True)
    if kind == 1:
        return act_range(8, signed=False)
    if kind == 2:
        return 0, rng.randint(1, 255)  # ReLU6-style upper bound
    if kind == 3:
        return 0, cfg.d_max  # dilation map
    if kind == 4:
        r = cfg.offset_range << cfg.frac_bits
        return -r, r  # offset map
    lo = rng.randint(-256, 255)
    return lo, rng.randint(lo, 255)


def _value(rng: random.Random, bits: int) -> int:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    pick = rng.random()
    if pick < 0.1:
        return rng.choice((lo, hi, 0, -1, 1))
    if pick < 0.6:
        mag = rng.randint(0, bits - 1)
        return rng.randint(-(1 << mag), (1 << mag) - 1) if mag else rng.randint(-1, 0)
    return rng.randint(lo, hi)


def make_case(rng: random.Random, cfg: EngineConfig, lanes: int) -> dict:
    """Random vectors and parameters of one case (numpy int64 arrays, shape (n, lanes))."""
    n = rng.randint(1, 12)
    acc = np.array([[_value(rng, cfg.acc_bits) for _ in range(lanes)] for _ in range(n)])
    bias = np.array([[_value(rng, cfg.bias_bits) for _ in range(lanes)] for _ in range(n)])
    mult = np.array([[0 if rng.random() < 0.05 else rng.choice((M_MIN, M_MAX, rng.randint(M_MIN, M_MAX)))
                      for _ in range(lanes)] for _ in range(n)])
    shift = np.zeros((n, lanes), dtype=np.int64)
    for idx in np.ndindex(n, lanes):
        mag = int(abs(int(acc[idx]) + int(bias[idx]))).bit_length() + 15
        shift[idx] = (rng.randint(max(0, mag - 10), min(S_MAX, mag - 5)) if rng.random() < 0.5
                      else rng.choice((0, 1, S_MAX, rng.randint(0, S_MAX))))
    lo, hi = _bounds(rng, cfg)
    return {"acc": acc.astype(np.int64), "bias": bias.astype(np.int64),
            "m": mult.astype(np.int64), "s": shift, "lo": lo, "hi": hi}


def golden(case: dict) -> np.ndarray:
    """INTEGER_SPEC §3 through intops, elementwise per lane and vector."""
    v = (case["acc"] + case["bias"]) * case["m"]
    return sat(rshift_round(v, case["s"]), case["lo"], case["hi"])


def regress(cfg: EngineConfig, *, seed: int, cases: int, simulator: str = "verilator",
            gap_prob: float = 0.3, stall_prob: float = 0.3) -> RegressionResult:
    """Play ``cases`` random cases through one build of the requant unit."""
    lanes = cfg.pe_co
    in_layout, out_layout = requant_in_layout(cfg, lanes), out_vector_layout(lanes)
    handle = build_design("requant", component_factory=lambda: Requant(cfg),
                          simulator=simulator, params=cfg.to_dict())
    rng = random.Random(seed)
    all_cases = [make_case(rng, cfg, lanes) for _ in range(cases)]
    phases = []
    for k, case in enumerate(all_cases):
        vecs = [[{"acc": int(case["acc"][r, c]),
                  "requant": {"bias": int(case["bias"][r, c]), "m": int(case["m"][r, c]),
                              "s": int(case["s"][r, c])}} for c in range(lanes)]
                for r in range(len(case["acc"]))]
        want = golden(case)
        phases.append(Phase(f"case {k}", signals={"lo": case["lo"], "hi": case["hi"]},
                            inputs={"i": [pack(in_layout, v) for v in vecs]},
                            outputs={"o": len(vecs)},
                            expect={"o": [pack(out_layout, [int(x) for x in row]) for row in want]}))
    play = play_streams(handle, phases, inputs=["i"], outputs=["o"], seed=seed,
                        gap_prob=gap_prob, stall_prob=stall_prob, run_name="requant")
    result = RegressionResult("requant")
    for k, case in enumerate(all_cases):
        got = None
        if k < len(play.outputs) and len(play.outputs[k]["o"]) == len(case["acc"]):
            got = [unpack(out_layout, x) for x in play.outputs[k]["o"]]
        compare_case(result, label=f"case {k}", got=got, want=golden(case),
                     context=f"seed {seed}, {len(case['acc'])} vectors x {lanes} lanes, "
                             f"lo={case['lo']} hi={case['hi']}",
                     waves=play.tb.waves)
    result.check_simulation(play.tb)
    return result
