"""Random bit-exact regressions of :class:`MaxPool` and :class:`ResidualAdd`.

Max pool cases: random channel counts (not multiples of the lanes; padded lanes hold
random bytes), block sizes, ``k`` in 1..3, strides 1..3, padding ``0..k//2``, int8 or
uint8 activations over their full range. Golden:
:func:`convforge.models.quant.executor.maxpool_int`.

Residual add cases: random vectors of int8/uint8 ``a`` and ``b`` (signedness per
tensor), ``Ma``/``Mb`` of 0 or ``[2**14, 2**15)``, ``S`` mostly near the in-range value
and sometimes 0, 1 or 62, ``(lo, hi)`` of int8/uint8/ReLU6 outputs. Golden:
:func:`convforge.models.quant.executor.add_int`.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from convforge.hw.config import EngineConfig
from convforge.hw.layouts.units import add_descriptor_layout, pool_descriptor_layout
from convforge.hw.layouts.vectors import act_vector_layout, out_vector_layout
from convforge.hw.packing import pack, unpack
from convforge.hw.rtl.pool_add import (
    MaxPool,
    ResidualAdd,
    pool_block_pixels,
)
from convforge.models.quant.executor import add_int, maxpool_int
from convforge.models.quant.intops import M_MAX, M_MIN, S_MAX, act_range
from convforge.sim.player import Phase, play_streams
from convforge.sim.regress import RegressionResult, compare_case
from convforge.sim.runner import build_design


def _acts(rng: random.Random, signed: bool, shape: tuple[int, ...]) -> np.ndarray:
    lo, hi = act_range(8, signed)
    flat = [rng.choice((lo, hi)) if rng.random() < 0.1 else rng.randint(lo, hi)
            for _ in range(math.prod(shape))]
    return np.array(flat, dtype=np.int64).reshape(shape)


def _bytes(values, lanes: int, rng: random.Random) -> list[int]:
    row = [int(v) & 0xFF for v in values]
    return row + [rng.randint(0, 255) for _ in range(lanes - len(row))]


# -- max pool -----------------------------------------------------------------------------

def make_pool_case(rng: random.Random, cfg: EngineConfig, lanes: int) -> dict:
    k = rng.choice((1, 2, 2, 3, 3, 3))
    s = rng.choice((1, 2, 2, 3)) if k > 1 else rng.choice((1, 2))
    p = rng.randint(0, k // 2)
    cap = pool_block_pixels(cfg)
    while True:
        h, w = rng.randint(max(1, k - 2 * p), 14), rng.randint(max(1, k - 2 * p), 14)
        if h * w <= cap:
            break
    c = rng.randint(1, 2 * lanes + 1)
    signed = rng.random() < 0.5
    return {"k": k, "s": s, "p": p, "h": h, "w": w, "c": c, "signed": signed,
            "x": _acts(rng, signed, (c, h, w))}


def pool_golden(case: dict) -> np.ndarray:
    out = maxpool_int(torch.from_numpy(case["x"]).unsqueeze(0), case["k"], case["s"], case["p"])
    return out[0].numpy()


def regress_maxpool(cfg: EngineConfig, *, seed: int, cases: int, simulator: str = "verilator",
                    gap_prob: float = 0.3, stall_prob: float = 0.3) -> RegressionResult:
    """Play ``cases`` random pooling layers (one block per channel group)."""
    lanes = cfg.dw_lanes
    handle = build_design("maxpool", component_factory=lambda: MaxPool(cfg), simulator=simulator,
                          params=cfg.to_dict())
    rng = random.Random(seed)
    in_l, out_l = act_vector_layout(lanes), out_vector_layout(lanes)
    all_cases, phases, index = [], [], []
    for k in range(cases):
        case = make_pool_case(rng, cfg, lanes)
        want = pool_golden(case)
        oh, ow = want.shape[1:]
        groups = math.ceil(case["c"] / lanes)
        index.append((len(phases), groups, oh, ow))
        for g in range(groups):
            chans = case["x"][g * lanes:(g + 1) * lanes]
            pix = [pack(in_l, _bytes(chans[:, y, x], lanes, rng))
                   for y in range(case["h"]) for x in range(case["w"])]
            desc = pack(pool_descriptor_layout(), {
                "height": case["h"], "width": case["w"], "out_height": oh, "out_width": ow,
                "kernel": case["k"], "stride": case["s"], "pad": case["p"],
                "act_signed": int(case["signed"])})
            phases.append(Phase(f"case {k} group {g}", inputs={"desc": [desc], "x": pix},
                                outputs={"o": oh * ow}))
        all_cases.append(case)
    play = play_streams(handle, phases, inputs=["desc", "x"], outputs=["o"], seed=seed,
                        gap_prob=gap_prob, stall_prob=stall_prob, run_name="maxpool")
    result = RegressionResult("maxpool")
    for k, (case, (first, groups, oh, ow)) in enumerate(zip(all_cases, index, strict=True)):
        got = None
        if first + groups <= len(play.outputs):
            vecs = []
            for g in range(groups):
                vecs.append([unpack(out_l, v) for v in play.outputs[first + g]["o"]])
            if all(len(v) == oh * ow for v in vecs):
                arr = np.concatenate([np.array(v, dtype=np.int64).T for v in vecs])  # (C', oh*ow)
                got = arr[: case["c"]].reshape(case["c"], oh, ow)
        compare_case(result, label=f"case {k}", got=got, want=pool_golden(case),
                     context=f"seed {seed}, C={case['c']} H={case['h']} W={case['w']} "
                             f"k={case['k']} s={case['s']} p={case['p']} signed={case['signed']}",
                     waves=play.tb.waves)
    result.check_simulation(play.tb)
    return result


# -- residual add -------------------------------------------------------------------------

def make_add_case(rng: random.Random, lanes: int) -> dict:
    n = rng.randint(1, 10)
    a_signed, b_signed = rng.random() < 0.5, rng.random() < 0.5
    a, b = _acts(rng, a_signed, (n, lanes)), _acts(rng, b_signed, (n, lanes))
    ma, mb = (0 if rng.random() < 0.05 else rng.choice((M_MIN, M_MAX, rng.randint(M_MIN, M_MAX)))
              for _ in range(2))
    s = rng.randint(13, 19) if rng.random() < 0.7 else rng.choice((0, 1, S_MAX, rng.randint(0, S_MAX)))
    kind = rng.randrange(3)
    lo, hi = act_range(8, kind == 0) if kind < 2 else (0, rng.randint(1, 255))
    return {"n": n, "a": a, "b": b, "a_signed": a_signed, "b_signed": b_signed,
            "ma": ma, "mb": mb, "s": s, "lo": lo, "hi": hi}


def add_golden(case: dict) -> np.ndarray:
    return add_int(torch.from_numpy(case["a"]), torch.from_numpy(case["b"]), case["ma"],
                   case["mb"], case["s"], case["lo"], case["hi"]).numpy()


def regress_add(cfg: EngineConfig, *, seed: int, cases: int, simulator: str = "verilator",
                gap_prob: float = 0.3, stall_prob: float = 0.3) -> RegressionResult:
    """Play ``cases`` random residual adds."""
    lanes = cfg.dw_lanes
    handle = build_design("residual_add", component_factory=lambda: ResidualAdd(cfg),
                          simulator=simulator, params=cfg.to_dict())
    rng = random.Random(seed)
    in_l, out_l = act_vector_layout(lanes), out_vector_layout(lanes)
    all_cases = [make_add_case(rng, lanes) for _ in range(cases)]
    desc_l = add_descriptor_layout(cfg)
    phases = [Phase(f"case {k}",
                    inputs={"desc": [pack(desc_l, {
                                "count": c["n"], "a_signed": int(c["a_signed"]),
                                "b_signed": int(c["b_signed"]), "ma": c["ma"], "mb": c["mb"],
                                "s": c["s"], "lo": c["lo"], "hi": c["hi"]})],
                            "a": [pack(in_l, _bytes(r, lanes, rng)) for r in c["a"]],
                            "b": [pack(in_l, _bytes(r, lanes, rng)) for r in c["b"]]},
                    outputs={"o": c["n"]},
                    expect={"o": [pack(out_l, [int(v) for v in r]) for r in add_golden(c)]})
              for k, c in enumerate(all_cases)]
    play = play_streams(handle, phases, inputs=["desc", "a", "b"], outputs=["o"], seed=seed,
                        gap_prob=gap_prob, stall_prob=stall_prob, run_name="residual_add")
    result = RegressionResult("residual_add")
    for k, case in enumerate(all_cases):
        got = None
        if k < len(play.outputs) and len(play.outputs[k]["o"]) == case["n"]:
            got = [unpack(out_l, v) for v in play.outputs[k]["o"]]
        compare_case(result, label=f"case {k}", got=got, want=add_golden(case),
                     context=f"seed {seed}, {case['n']} vectors x {lanes} lanes, Ma={case['ma']} "
                             f"Mb={case['mb']} S={case['s']} lo={case['lo']} hi={case['hi']}",
                     waves=play.tb.waves)
    result.check_simulation(play.tb)
    return result
