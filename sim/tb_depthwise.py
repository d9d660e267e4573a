"""Random bit-exact regression of :class:`convforge.hw.rtl.depthwise.DepthwiseUnit`.

Cases follow INTEGER_SPEC §7: every built mode, strides 1 and 2, uint8 (0..255) and int8
(-128..127) inputs over the full range (extremes forced in), channel counts and widths
that are not multiples of the lanes or of anything else, weights over the full
``w_bits`` range, dilation maps that contain 0 and ``D_max``, offsets at ``+-R*2**F``
plus integer and fractional values, random valid gaps on every input stream and random
back-pressure on ``out``. One build; all cases are phases of one simulation (the unit
returns to idle between layers). The golden values come from
:func:`convforge.hw.rtl.depthwise_model.golden_depthwise`.

:func:`measure_throughput` plays one large layer per mode without gaps or stalls at two
image heights and reports the marginal cycles per output pixel-vector.
"""

from __future__ import annotations

import numpy as np

from convforge.errors import SimulationError
from convforge.hw.config import EngineConfig
from convforge.hw.layouts.vectors import out_vector_layout
from convforge.hw.packing import pack
from convforge.hw.rtl.depthwise import DepthwiseUnit, line_buffer_rows
from convforge.hw.rtl.depthwise_model import (
    DepthwiseLayer,
    depthwise_accumulator,
    golden_depthwise,
    output_count,
    output_size,
    pack_depthwise_streams,
    unpack_depthwise_output,
)
from convforge.models.quant.intops import M_MAX, M_MIN, S_MAX, act_range, weight_range
from convforge.sim.player import Phase, play_streams
from convforge.sim.regress import RegressionResult, compare_case
from convforge.sim.runner import DesignHandle, build_design


def stream_names(config: EngineConfig) -> list[str]:
    """Input stream members of the unit built for ``config``."""
    names = ["desc", "params", "pixels"]
    if "square" in config.dw_modes:
        names.append("dilation")
    if "bilinear" in config.dw_modes:
        names.append("offsets")
    return names


def build_depthwise(config: EngineConfig, simulator: str = "verilator") -> DesignHandle:
    """Compile (or reuse) the unit for ``config``."""
    return build_design("depthwise", component_factory=lambda: DepthwiseUnit(config),
                        simulator=simulator, params=config.to_dict())


def _activations(rng: np.random.Generator, shape: tuple[int, ...], signed: bool) -> np.ndarray:
    lo, hi = act_range(8, signed)
    x = rng.integers(lo, hi + 1, size=shape, dtype=np.int64)
    flat = x.reshape(-1)
    k = max(1, flat.size // 10)
    flat[rng.integers(0, flat.size, size=k)] = lo
    flat[rng.integers(0, flat.size, size=k)] = hi
    return x


def make_case(rng: np.random.Generator, config: EngineConfig, mode: str, small: bool = True) -> dict:
    """One random layer and its inputs (see the module docstring for the coverage)."""
    lanes = config.dw_lanes
    channels = int(rng.integers(1, 2 * lanes + 4))
    if small:
        # tall-and-narrow shapes wrap the line-buffer ring (line_buffer_rows); wide ones
        # reach line_width; the pixel budget keeps a case to a few thousand cycles
        budget = 90 if mode == "bilinear" else 240
        if rng.random() < 0.3:
            width = int(rng.choice([config.line_width, rng.integers(config.line_width // 2, config.line_width + 1)]))
            height = int(rng.integers(1, max(1, budget // width) + 2))
        else:
            height = int(rng.integers(1, line_buffer_rows(config) + 14))
            width = int(rng.integers(1, max(1, min(config.line_width, budget // height)) + 1))
    else:
        height, width = int(rng.integers(8, 17)), config.line_width
    in_signed = bool(rng.integers(0, 2))
    x = _activations(rng, (channels, height, width), in_signed)
    wlo, whi = weight_range(config.w_bits)
    weights = rng.integers(wlo, whi + 1, size=(channels, 3, 3), dtype=np.int64)
    weights[rng.integers(0, channels), rng.integers(0, 3), rng.integers(0, 3)] = whi
    weights[rng.integers(0, channels), rng.integers(0, 3), rng.integers(0, 3)] = wlo
    dilation = int(rng.integers(1, config.d_max + 1)) if mode == "regular" else 1
    stride = int(rng.choice([1, 2]))
    out_h, out_w = output_size(height, stride), output_size(width, stride)
    dmap = offsets = None
    if mode == "square":
        dmap = rng.integers(0, config.d_max + 1, size=(out_h, out_w), dtype=np.int64)
        dmap.reshape(-1)[rng.integers(0, dmap.size)] = 0
        dmap.reshape(-1)[rng.integers(0, dmap.size)] = config.d_max
    if mode == "bilinear":
        rf = config.offset_range << config.frac_bits
        offsets = rng.integers(-rf, rf + 1, size=(18, out_h, out_w), dtype=np.int64)
        pick = rng.random(offsets.shape)
        offsets[pick < 0.15] = rf
        offsets[(pick >= 0.15) & (pick < 0.3)] = -rf
        ints = (pick >= 0.3) & (pick < 0.45)  # whole-pixel offsets (fraction 0)
        offsets[ints] = (offsets[ints] >> config.frac_bits) << config.frac_bits
    # requant chosen from the real accumulators so outputs span [lo, hi] (few saturate)
    probe = DepthwiseLayer(mode, stride, dilation, in_signed, weights, np.zeros(channels, np.int64),
                           np.zeros(channels, np.int64), np.zeros(channels, np.int64), 0, 0)
    acc = depthwise_accumulator(config, probe, x, dmap, offsets).reshape(channels, -1)
    spread = np.maximum(np.percentile(np.abs(acc), 90, axis=1).astype(np.int64), 1)
    bias = (rng.standard_normal(channels) * spread).astype(np.int64)
    mult = rng.integers(M_MIN, M_MAX + 1, size=channels, dtype=np.int64)
    shift = np.array([max(0, int(sp * m).bit_length() - 7 + int(rng.integers(-1, 2)))
                      for sp, m in zip(spread, mult, strict=True)], dtype=np.int64)
    mult[rng.random(channels) < 0.05] = 0
    shift[rng.random(channels) < 0.05] = S_MAX
    shift[rng.random(channels) < 0.05] = 0
    kind = int(rng.integers(0, 3))
    lo, hi = [act_range(8, True), act_range(8, False), (0, int(rng.integers(1, 256)))][kind]
    layer = DepthwiseLayer(mode, stride, dilation, in_signed, weights, bias, mult, shift, lo, hi)
    return {"layer": layer, "x": x, "dmap": dmap, "offsets": offsets}


def describe(case: dict) -> str:
    layer, x = case["layer"], case["x"]
    extra = f" d={layer.dilation}" if layer.mode == "regular" else ""
    return (f"{layer.mode} C={x.shape[0]} H={x.shape[1]} W={x.shape[2]} s={layer.stride}{extra} "
            f"{'int8' if layer.in_signed else 'uint8'} lo={layer.lo} hi={layer.hi}")


def _phase(config: EngineConfig, label: str, case: dict, names: list[str]) -> Phase:
    layer, x = case["layer"], case["x"]
    streams = pack_depthwise_streams(config, layer, x, case["dmap"], case["offsets"])
    want = golden_depthwise(config, layer, x, case["dmap"], case["offsets"])
    count = output_count(config, layer.channels, x.shape[1], x.shape[2], layer.stride)
    # expected payloads: padding lanes of a tail group carry sat(0, lo, hi)
    lanes = config.dw_lanes
    groups = -(-layer.channels // lanes)
    full = np.full((groups * lanes,) + want.shape[1:], min(max(0, layer.lo), layer.hi), dtype=np.int64)
    full[:layer.channels] = want
    o_layout = out_vector_layout(config.dw_lanes)
    expect = [pack(o_layout, [int(v) for v in full[g * lanes:(g + 1) * lanes, yy, xx]])
              for g in range(groups) for yy in range(want.shape[1]) for xx in range(want.shape[2])]
    return Phase(label, inputs={n: streams.get(n, []) for n in names}, outputs={"out": count},
                 expect={"out": expect})


def regress(cfg: EngineConfig, *, seed: int, cases: int, simulator: str = "verilator",
            gap_prob: float = 0.3, stall_prob: float = 0.3) -> RegressionResult:
    """Play ``cases`` random layers (modes in turn) through one build of the unit."""
    handle = build_depthwise(cfg, simulator)
    names = stream_names(cfg)
    rng = np.random.default_rng(seed)
    modes = list(cfg.dw_modes)
    all_cases = [make_case(rng, cfg, modes[k % len(modes)]) for k in range(cases)]
    phases = [_phase(cfg, f"case {k} ({describe(c)})", c, names) for k, c in enumerate(all_cases)]
    play = play_streams(handle, phases, inputs=names, outputs=["out"], seed=seed,
                        gap_prob=gap_prob, stall_prob=stall_prob, run_name="depthwise")
    result = RegressionResult("depthwise")
    for k, case in enumerate(all_cases):
        layer, x = case["layer"], case["x"]
        want = golden_depthwise(cfg, layer, x, case["dmap"], case["offsets"])
        got = None
        if k < len(play.outputs):
            payloads = play.outputs[k]["out"]
            if len(payloads) == output_count(cfg, layer.channels, x.shape[1], x.shape[2], layer.stride):
                got = unpack_depthwise_output(cfg, payloads, layer.channels, *want.shape[1:])
        compare_case(result, label=f"case {k}", got=got, want=want,
                     context=f"seed {seed}, {describe(case)}", waves=play.tb.waves)
    result.check_simulation(play.tb)
    result.figures.update(count_by_mode(all_cases))
    return result


def count_by_mode(cases: list[dict]) -> dict[str, int]:
    """``{"cases_<mode>": n}`` for a list of cases."""
    counts: dict[str, int] = {}
    for case in cases:
        key = f"cases_{case['layer'].mode}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def measure_throughput(cfg: EngineConfig, *, seed: int = 1, simulator: str = "verilator",
                       heights: tuple[int, int] = (24, 40)) -> dict[str, float]:
    """Marginal cycles per output pixel-vector per mode and stride, no gaps or stalls.

    Plays the same one-channel-group layer of width ``line_width`` at two heights (both
    taller than the line-buffer window, so the fill is the same) and divides the
    difference in cycles by the difference in output vectors; that removes the fixed
    costs (parameter load, line-buffer fill, drain, pipeline latency). Outputs are checked
    against the golden model too. Returns ``{"<mode>_s<stride>": cycles, ...}``.
    """
    handle = build_depthwise(cfg, simulator)
    names = stream_names(cfg)
    rng = np.random.default_rng(seed)
    lanes = cfg.dw_lanes
    rf = cfg.offset_range << cfg.frac_bits
    phases, keys = [], []
    for mode in cfg.dw_modes:
        for stride in (1, 2):
            base = make_case(rng, cfg, mode, small=False)["layer"]
            layer = DepthwiseLayer(mode, stride, base.dilation, base.in_signed, base.weights[:lanes],
                                   base.bias[:lanes], base.M[:lanes], base.S[:lanes], base.lo, base.hi)
            for h in heights:
                x = _activations(rng, (layer.channels, h, cfg.line_width), layer.in_signed)
                oh, ow = output_size(h, stride), output_size(cfg.line_width, stride)
                dmap = rng.integers(0, cfg.d_max + 1, size=(oh, ow)) if mode == "square" else None
                offsets = rng.integers(-rf, rf + 1, size=(18, oh, ow)) if mode == "bilinear" else None
                case = {"layer": layer, "x": x, "dmap": dmap, "offsets": offsets}
                phases.append(_phase(cfg, f"{mode} s{stride} H{h}", case, names))
                keys.append((f"{mode}_s{stride}", oh * ow))
    play = play_streams(handle, phases, inputs=names, outputs=["out"], seed=seed,
                        gap_prob=0.0, stall_prob=0.0, run_name="depthwise-throughput")
    if not play.tb.ok:
        raise SimulationError(f"depthwise throughput run failed: {play.tb.summary()}")
    figures = {}
    for k in range(0, len(keys), 2):
        (name, n_small), (_, n_large) = keys[k], keys[k + 1]
        figures[name] = (play.cycles[k + 1] - play.cycles[k]) / (n_large - n_small)
    return figures


def run_layer(cfg: EngineConfig, layer: DepthwiseLayer, x: np.ndarray, dmap: np.ndarray | None = None,
              offsets: np.ndarray | None = None, *, simulator: str = "verilator",
              seed: int = 0) -> tuple[np.ndarray | None, np.ndarray, int]:
    """Play one layer through the unit (no gaps or stalls) and return ``(rtl, golden, cycles)``.

    ``x`` is ``(C, H, W)``, ``dmap`` ``(Ho, Wo)`` for square mode, ``offsets``
    ``(18, Ho, Wo)`` for bilinear mode. ``rtl`` is the unit's ``(C, Ho, Wo)`` output
    integers (None if the simulation produced the wrong number of vectors).
    """
    handle = build_depthwise(cfg, simulator)
    names = stream_names(cfg)
    case = {"layer": layer, "x": x, "dmap": dmap, "offsets": offsets}
    want = golden_depthwise(cfg, layer, x, dmap, offsets)
    play = play_streams(handle, [_phase(cfg, describe(case), case, names)], inputs=names, outputs=["out"],
                        seed=seed, gap_prob=0.0, stall_prob=0.0, run_name="depthwise-layer",
                        timeout_cycles=max(200_000, 40 * x.size))
    got = None
    if play.outputs:
        payloads = play.outputs[0]["out"]
        if len(payloads) == output_count(cfg, layer.channels, x.shape[1], x.shape[2], layer.stride):
            got = unpack_depthwise_output(cfg, payloads, layer.channels, *want.shape[1:])
    return got, want, (play.cycles[0] if play.cycles else 0)
