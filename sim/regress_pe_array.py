"""Random bit-exact regression and utilisation measurement of the pointwise PE array.

Each case draws a layer: ``Ci``, ``Co`` in ``[1, 3 * parallelism + 3]`` (mostly not
multiples of ``Ci_p``/``Co_p``), 1..5 pixels, activations int8 or uint8 over their full
range (with extremes), ``w_bits`` weights over their symmetric range (with extremes), int32
biases, per-channel ``(M, S)`` chosen so outputs mostly land inside ``[lo, hi]``, and
``(lo, hi)`` of an int8 / uint8 / ReLU6 output. Padded activation lanes hold random bytes
(padded weights are 0, so they must not matter). Golden values:
:func:`convforge.models.quant.executor.conv2d_int` (k = 1) and
:func:`convforge.models.quant.intops.requant`.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from convforge.hw.config import EngineConfig
from convforge.hw.layouts.units import pe_descriptor_layout
from convforge.hw.layouts.vectors import act_vector_layout, out_vector_layout
from convforge.hw.packing import pack, unpack
from convforge.hw.rtl import pe_array as pe
from convforge.models.quant.executor import conv2d_int
from convforge.models.quant.intops import (
    M_MAX,
    M_MIN,
    S_MAX,
    act_range,
    requant,
    weight_range,
)
from convforge.sim.player import Phase, play_streams
from convforge.sim.regress import RegressionResult, compare_case
from convforge.sim.runner import DesignHandle, build_design


def build(cfg: EngineConfig, simulator: str = "verilator", weight_depth: int = 256) -> DesignHandle:
    """Build the PE array (a small weight buffer keeps test builds fast)."""
    return build_design("pe_array", component_factory=lambda: pe.PEArray(cfg, weight_depth),
                        simulator=simulator, params={**cfg.to_dict(), "weight_depth": weight_depth})


def _ints(rng: random.Random, lo: int, hi: int, shape: tuple[int, ...], extreme: float = 0.1) -> np.ndarray:
    flat = [rng.choice((lo, hi)) if rng.random() < extreme else rng.randint(lo, hi)
            for _ in range(math.prod(shape))]
    return np.array(flat, dtype=np.int64).reshape(shape)


def make_case(rng: random.Random, cfg: EngineConfig, ci: int | None = None, co: int | None = None,
              npix: int | None = None) -> dict:
    """A random pointwise layer and its input pixels."""
    ci = ci or rng.randint(1, 3 * cfg.pe_ci + 3)
    co = co or rng.randint(1, 3 * cfg.pe_co + 3)
    npix = npix or rng.randint(1, 5)
    act_signed = rng.random() < 0.5
    x = _ints(rng, *act_range(cfg.act_bits, act_signed), (npix, ci))
    w = _ints(rng, *weight_range(cfg.w_bits), (co, ci), extreme=0.2)
    bias = _ints(rng, -(1 << 31), (1 << 31) - 1, (co,), extreme=0.02)
    bias = np.where(rng.random() < 0.7, bias >> rng.randint(8, 31), bias)
    mult = np.array([rng.choice((M_MIN, M_MAX, rng.randint(M_MIN, M_MAX))) for _ in range(co)])
    # shift so |acc + bias| * M / 2**S is around the output range (some saturate)
    bound = int(np.abs(w).sum(1).max() * 128 + np.abs(bias).max() + 1)
    base = bound.bit_length() + 15 - 8
    shift = np.array([min(S_MAX, max(0, base + rng.randint(-3, 3))) for _ in range(co)])
    kind = rng.randrange(3)
    lo, hi = act_range(8, kind == 0) if kind < 2 else (0, rng.randint(1, 255))
    return {"ci": ci, "co": co, "npix": npix, "act_signed": act_signed, "x": x, "w": w,
            "bias": bias.astype(np.int64), "m": mult.astype(np.int64), "s": shift.astype(np.int64),
            "lo": lo, "hi": hi}


def golden(case: dict) -> np.ndarray:
    """(npix, co) output activations."""
    x = torch.from_numpy(case["x"].T.copy()).reshape(1, case["ci"], 1, case["npix"])
    w = torch.from_numpy(case["w"]).reshape(case["co"], case["ci"], 1, 1)
    acc = conv2d_int(x, w).reshape(case["co"], case["npix"]).T.numpy()
    return requant(acc, case["bias"], case["m"], case["s"], case["lo"], case["hi"])


def case_phases(case: dict, cfg: EngineConfig, label: str, rng: random.Random,
                weight_depth: int = 256) -> list[Phase]:
    """Two phases: load weights + parameters, then stream the pixels."""
    ci_p, co_p = cfg.pe_ci, cfg.pe_co
    cig, cog = math.ceil(case["ci"] / ci_p), math.ceil(case["co"] / co_p)
    if cig * cog > weight_depth:
        raise ValueError(f"{label}: {cig * cog} weight tiles exceed the buffer ({weight_depth})")
    w = np.zeros((cog * co_p, cig * ci_p), dtype=np.int64)
    w[: case["co"], : case["ci"]] = case["w"]
    w_layout = pe.weight_load_layout(cfg, weight_depth)
    tiles = [pack(w_layout, {"addr": co * cig + ci,
                             "tile": w[co * co_p:(co + 1) * co_p, ci * ci_p:(ci + 1) * ci_p].tolist()})
             for co in range(cog) for ci in range(cig)]
    pad = cog * co_p - case["co"]
    bias, mult, shift = (np.concatenate([case[k], np.zeros(pad, np.int64)]) for k in ("bias", "m", "s"))
    p_layout = pe.param_load_layout(cfg)
    params = [pack(p_layout, {"addr": co, "lanes": [
        {"bias": int(bias[o]), "m": int(mult[o]), "s": int(shift[o])}
        for o in range(co * co_p, (co + 1) * co_p)]}) for co in range(cog)]
    x_layout = act_vector_layout(cfg.pe_ci)
    chunks = []
    for p in range(case["npix"]):
        row = [int(v) & 0xFF for v in case["x"][p]]
        row += [rng.randint(0, 255) for _ in range(cig * ci_p - case["ci"])]  # junk padding
        chunks += [pack(x_layout, row[ci * ci_p:(ci + 1) * ci_p]) for ci in range(cig)]
    desc = pack(pe_descriptor_layout(), {"pixels": case["npix"], "ci_groups": cig, "co_groups": cog,
                                         "act_signed": int(case["act_signed"]),
                                         "lo": case["lo"], "hi": case["hi"]})
    return [Phase(f"{label} load", inputs={"w": tiles, "p": params}),
            Phase(f"{label} compute", inputs={"desc": [desc], "x": chunks},
                  outputs={"o": case["npix"] * cog})]


def decode(payloads: list[int], case: dict, cfg: EngineConfig) -> np.ndarray | None:
    cog = math.ceil(case["co"] / cfg.pe_co)
    if len(payloads) != case["npix"] * cog:
        return None
    lay = out_vector_layout(cfg.pe_co)
    vecs = np.array([unpack(lay, p) for p in payloads], dtype=np.int64)
    return vecs.reshape(case["npix"], cog * cfg.pe_co)[:, : case["co"]]


def regress(cfg: EngineConfig, *, seed: int, cases: int, simulator: str = "verilator",
            gap_prob: float = 0.3, stall_prob: float = 0.3) -> RegressionResult:
    """Play ``cases`` random layers through one build of the PE array."""
    handle = build(cfg, simulator)
    rng = random.Random(seed)
    all_cases = [make_case(rng, cfg) for _ in range(cases)]
    phases: list[Phase] = []
    for k, case in enumerate(all_cases):
        phases += case_phases(case, cfg, f"case {k}", rng)
    play = play_streams(handle, phases, inputs=["desc", "x", "w", "p"], outputs=["o"], seed=seed,
                        gap_prob=gap_prob, stall_prob=stall_prob, run_name="pe_array")
    result = RegressionResult("pe_array")
    for k, case in enumerate(all_cases):
        idx = 2 * k + 1
        got = decode(play.outputs[idx]["o"], case, cfg) if idx < len(play.outputs) else None
        compare_case(result, label=f"case {k}", got=got, want=golden(case),
                     context=f"seed {seed}, Ci={case['ci']} Co={case['co']} pixels={case['npix']} "
                             f"act_signed={case['act_signed']} lo={case['lo']} hi={case['hi']}",
                     waves=play.tb.waves)
    result.check_simulation(play.tb)
    return result


def measure_utilisation(cfg: EngineConfig, ci: int, co: int, npix: int = 16, *,
                        simulator: str = "verilator", seed: int = 0) -> dict:
    """Cycles per pixel and MAC utilisation of one layer, back-to-back input, no stalls.

    Counts every cycle of the compute phase (first chunk in to last vector out, including
    the pipeline fill), so it is a lower bound on steady-state utilisation. The outputs
    are checked bit-exact as well.
    """
    weight_depth = max(256, math.ceil(ci / cfg.pe_ci) * math.ceil(co / cfg.pe_co))
    handle = build(cfg, simulator, weight_depth)
    rng = random.Random(seed)
    case = make_case(rng, cfg, ci=ci, co=co, npix=npix)
    phases = case_phases(case, cfg, f"{ci}x{co}", rng, weight_depth)
    play = play_streams(handle, phases, inputs=["desc", "x", "w", "p"], outputs=["o"], seed=seed,
                        gap_prob=0.0, stall_prob=0.0, run_name="pe_array_util")
    got = decode(play.outputs[1]["o"], case, cfg) if len(play.outputs) > 1 else None
    exact = got is not None and np.array_equal(got, golden(case))
    cycles = play.cycles[1] if len(play.cycles) > 1 else 0
    macs = ci * co * npix
    return {"ci": ci, "co": co, "pixels": npix, "pe": f"{cfg.pe_ci}x{cfg.pe_co}",
            "cycles": cycles, "cycles_per_pixel": cycles / npix,
            "ideal_cycles_per_pixel": pe.cycles_per_pixel(ci, co, cfg),
            "utilisation": macs / (cfg.pe_ci * cfg.pe_co * cycles) if cycles else 0.0,
            "bit_exact": bool(exact and play.tb.ok)}
