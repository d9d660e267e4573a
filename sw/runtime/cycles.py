"""Cycle model: predicted cycles of each descriptor and of a whole frame.

Per descriptor (one layer pass on one unit) the model adds

* **compute** cycles of the unit, from the figures the RTL states
  (:func:`convforge.hw.rtl.pe_array.cycles_per_pixel`, the depthwise unit's
  ``CYCLES_PER_OUTPUT``, the max pool's ``k*k`` taps per output, one add per vector, and
  each unit's pipeline ``LATENCY``);
* **DMA** cycles: the bytes the pass moves (whole 128-bit beats per pixel run, weights and
  tables, maps re-read per channel group) over ``min(AXI bytes/cycle, DDR bytes/cycle)``;
* operands whose view has the ``onchip`` flag (a fused chain's intermediates in the fusion
  scratchpad) move no DDR bytes: they are counted as ``scratch_bytes`` over the
  scratchpad's own port (one AXI beat wide per cycle), which runs beside the DDR port,
  so the transfer time is ``max(DDR time, scratchpad time)``;
* and overlaps them with ping-pong buffers: ``max(compute, dma) + min(compute, dma) /
  bands`` (the first band's load and the last band's store are not hidden), plus a fixed
  cost per descriptor (fetch and decode).

Every coefficient is a field of :class:`CycleCoefficients`, so the accelerator issue can fit
them to RTL-measured cycles. This module works on decoded descriptor fields (a dict of the
:func:`convforge.hw.layouts.descriptor_layout` fields), so the compiler and the emulator
predict from the very same words the hardware reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from convforge.hw.config import EngineConfig
from convforge.hw.layouts import DESCRIPTOR_BYTES, Opcode, weight_tile_bytes
from convforge.hw.rtl import depthwise as dw_rtl
from convforge.hw.rtl import pe_array as pe_rtl
from convforge.hw.rtl import pool_add as pool_rtl

#: Default DDR bandwidth in GB/s when no board is given (the Ultra96-V2 profile's figure).
DEFAULT_DDR_GBPS = 4.2


@dataclass(frozen=True)
class CycleCoefficients:
    """Calibration knobs of the model (defaults: the RTL's stated figures, no fitting yet).

    Attributes:
        descriptor_overhead: cycles to fetch and decode one descriptor
            (``DESCRIPTOR_BYTES`` over the bus plus a few control cycles).
        dma_efficiency: fraction of the bus/DDR bandwidth a strided transfer reaches.
        compute_scale: multiplies every unit's compute cycles (stalls not modelled).
        wide_weight_passes: an 8-bit-weight PE layer on a ``w_bits``-wide array takes
            ``ceil(w_bits_layer / cfg.w_bits)`` passes per tile when True.
    """

    descriptor_overhead: int = 32
    dma_efficiency: float = 1.0
    compute_scale: float = 1.0
    wide_weight_passes: bool = True


def _beats_per_pixel(channels: int, channel_stride: int, beat: int) -> int:
    span = (channels - 1) * max(channel_stride, 1) + 1 if channels > 0 else 0
    return -(-span // beat)


def operand_bytes(view: dict[str, Any], height: int, width: int, channels: int, beat: int) -> int:
    """Bytes a DMA moves for one operand over its stored pixels: a row of pixels narrower
    than a beat is one contiguous burst of whole beats; wider pixels move the whole beats
    their channel run spans."""
    if view.get("upsample"):
        height, width = (height + 1) // 2, (width + 1) // 2
    pixel_stride = int(view.get("pixel_stride", 0))
    if 0 < pixel_stride <= beat:
        return height * -(-width * pixel_stride // beat) * beat
    return height * width * _beats_per_pixel(channels, view.get("channel_stride", 1), beat) * beat


def descriptor_figures(d: dict[str, Any], cfg: EngineConfig, ddr_gbps: float = DEFAULT_DDR_GBPS,
                       coeff: CycleCoefficients = CycleCoefficients()) -> dict[str, Any]:
    """Predicted figures of one descriptor.

    Args:
        d: decoded descriptor fields (nested ``src``/``src2``/``dst`` dicts).
        cfg: the engine.
        ddr_gbps: sustained DDR bandwidth in GB/s (board profile ``ddr_gbps``).

    Returns:
        ``{"unit", "compute_cycles", "dma_cycles", "cycles", "ddr_bytes", "scratch_bytes",
        "macs"}``; ``dma_cycles`` = the larger of DDR bytes over the DDR rate and scratchpad
        bytes over one beat per cycle (separate ports).
    """
    op = Opcode(int(d["opcode"]))
    beat = cfg.axi_data_bits // 8
    ci, co = int(d["in_channels"]), int(d["out_channels"])
    hi_, wi = int(d["in_height"]), int(d["in_width"])
    ho, wo = int(d["out_height"]), int(d["out_width"])
    k = int(d["kernel"]) or 1
    bands = max(1, math.ceil(ho / max(1, int(d["tile_rows"]) or ho or 1))) if ho else 1
    src_bytes = operand_bytes(d["src"], hi_, wi, ci, beat) if op != Opcode.END else 0
    dst_bytes = operand_bytes(d["dst"], ho, wo, co, beat) if op != Opcode.END else 0
    scratch = 0
    if d["src"].get("onchip"):
        scratch, src_bytes = scratch + src_bytes, 0
    if d["dst"].get("onchip"):
        scratch, dst_bytes = scratch + dst_bytes, 0
    other = 0
    macs = 0
    if op in (Opcode.CONV_PW, Opcode.CONV_KXK):
        unit = "pe_array"
        ci_eff = k * k * ci
        passes = math.ceil(int(d["w_bits"]) / cfg.w_bits) if coeff.wide_weight_passes else 1
        compute = ho * wo * pe_rtl.cycles_per_pixel(ci_eff, co, cfg) * passes + pe_rtl.LATENCY
        tiles = math.ceil(ci_eff / cfg.pe_ci) * math.ceil(co / cfg.pe_co)
        other = tiles * weight_tile_bytes(cfg, int(d["w_bits"])) + co * 8
        compute += tiles  # weight tiles load one per cycle before the first pixel
        macs = ho * wo * ci_eff * co
    elif op in (Opcode.DW_REGULAR, Opcode.DW_SQUARE, Opcode.DW_BILINEAR):
        unit = "depthwise"
        mode = {Opcode.DW_REGULAR: "regular", Opcode.DW_SQUARE: "square", Opcode.DW_BILINEAR: "bilinear"}[op]
        groups = math.ceil(co / cfg.dw_lanes)
        per_group = max(ho * wo * dw_rtl.CYCLES_PER_OUTPUT[mode], hi_ * wi) + cfg.dw_lanes + dw_rtl.LATENCY + 1
        compute = groups * per_group
        other = co * 16
        if op != Opcode.DW_REGULAR:
            map_ch = 1 if op == Opcode.DW_SQUARE else 18
            other += groups * operand_bytes(d["src2"], ho, wo, map_ch, beat)
        macs = ho * wo * co * 9
    elif op == Opcode.MAXPOOL:
        unit = "pool"
        groups = math.ceil(co / cfg.dw_lanes)
        compute = groups * (hi_ * wi + ho * wo * k * k + pool_rtl.MAXPOOL_LATENCY)
    elif op == Opcode.ADD:
        unit = "add"
        compute = ho * wo * math.ceil(co / cfg.dw_lanes) + pool_rtl.ADD_LATENCY
        other = operand_bytes(d["src2"], ho, wo, co, beat)
    elif op == Opcode.COPY:
        unit = "dma"
        compute = 0
    else:
        unit = "controller"
        compute, src_bytes, dst_bytes = 0, 0, 0
    ddr_bytes = src_bytes + dst_bytes + other + DESCRIPTOR_BYTES
    bytes_per_cycle = min(beat, ddr_gbps * 1e3 / cfg.clock_mhz) * coeff.dma_efficiency
    dma = math.ceil(max(ddr_bytes / bytes_per_cycle, scratch / beat))
    compute = math.ceil(compute * coeff.compute_scale)
    cycles = max(compute, dma) + math.ceil(min(compute, dma) / bands) + coeff.descriptor_overhead
    return {"unit": unit, "compute_cycles": compute, "dma_cycles": dma, "cycles": cycles,
            "ddr_bytes": ddr_bytes, "scratch_bytes": scratch, "macs": macs}


def frame_figures(per_descriptor: list[dict[str, Any]], cfg: EngineConfig) -> dict[str, Any]:
    """Per-frame totals: cycles, FPS at ``cfg.clock_mhz``, MAC utilisation vs the peak."""
    cycles = sum(f["cycles"] for f in per_descriptor)
    macs = sum(f["macs"] for f in per_descriptor)
    ddr = sum(f["ddr_bytes"] for f in per_descriptor)
    scratch = sum(f.get("scratch_bytes", 0) for f in per_descriptor)
    fps = cfg.clock_mhz * 1e6 / cycles if cycles else 0.0
    util = macs / (cycles * cfg.macs_per_cycle) if cycles else 0.0
    by_unit: dict[str, int] = {}
    for f in per_descriptor:
        by_unit[f["unit"]] = by_unit.get(f["unit"], 0) + f["cycles"]
    return {"cycles": int(cycles), "fps": fps, "mac_utilisation": util, "ddr_bytes": int(ddr),
            "scratch_bytes": int(scratch),
            "macs": int(macs), "clock_mhz": cfg.clock_mhz, "cycles_by_unit": by_unit}
