"""Cycle model: predicted cycles of each descriptor and of a whole frame, calibrated to the
RTL engine (:class:`convforge.hw.rtl.controller.Engine`).

The engine executes one descriptor at a time and one operand move at a time, so the model
walks its controller's states and adds them up; the one overlap is a PE layer's store span,
whose data phase runs during the MAC state (the slower of the two sets the pace). Per
descriptor:

* **fetch** (``FETCH``/``FETCH_DATA``, then ``DECODE``, ``DIV``, ``CHECK``, ``BARRIER``):
  the read latency, :data:`DESCRIPTOR_BYTES` bytes at one byte per cycle plus one bubble per
  AXI beat after the first, ``max(ceil(k*k*C_in/pe_ci), ceil(C_out/pe_co)) + 1`` cycles of
  division and :attr:`CycleCoefficients.descriptor_overhead` control cycles;
* **spans** (``ADDR``, ``RCMD``/``WCMD``, ``RDATA``/``WDATA``): each operand's channel vector
  of one pixel (or one tap) is one span of ``(C-1)*channel_stride + 1`` bytes, moved at one
  byte per cycle after :data:`SPAN_SETUP_CYCLES` cycles of set-up, plus the read latency
  (:attr:`CycleCoefficients.read_latency`) on DDR reads, :data:`SCRATCH_READ_LATENCY` on
  scratchpad reads, and :data:`BEAT_BUBBLE_CYCLES` per AXI beat after the first (the beat
  count follows the span's byte address, so alignment is exact); a ``src`` span into
  buffer A (PE layers, COPY, ADD) from DDR at channel stride 1 moves wide: one cycle per
  piece of a beat that falls in one ``pe_ci``-byte word of A instead of one per byte;
  table loads (weights, requant words, depthwise words) are one read span each;
* **steps** (``SEQ``): one cycle per tap and per phase of each output pixel;
* **compute**: PE layers issue ``ceil(k*k*C_in/pe_ci)`` cycles per output group and drain
  one channel per cycle while the next group issues (:func:`mac_cycles`), plus
  :data:`REQUANT_TAIL_CYCLES` per pixel; padded taps zero-fill ``C_in`` cycles; depthwise
  layers stream their accumulators through requant into the store span
  (:data:`DW_PIXEL_CYCLES` per pixel; a pixel's first tap overwrites the accumulators, so
  there is no clear pass); DW_REGULAR at stride 1 and dilation 1 reads a row's three
  columns at its first pixel and one new column per pixel after it (the column cache),
  and a new column in the padding costs ``C`` cycles per row.

Deformable layers depend on their maps: the RTL skips a square layer's taps outside the
image and a bilinear layer's neighbours outside it or with a zero weight. Given the map's
taps (:func:`deform_taps`; the emulator passes them, so its counters follow the data) the
model counts exactly those reads; from the fields alone (the compiler) it assumes the
dilation :attr:`CycleCoefficients.square_dilation` for every pixel and every neighbour of
the undeformed bilinear tap. Every other descriptor depends on its fields only.

Measured against the RTL (Verilator, cocotbext-axi ``AxiRam`` without pauses, every
descriptor run alone on the buffer it sees in its frame; ``tests/sim/test_accel.py``):
every non-deformable layer within 2 %, and ``benchmarks/results.json`` ``cycle_model``.

The DDR port is never the bound of this engine (at most one byte per cycle); a board whose
DDR delivers less than that (``ddr_gbps``) bounds the span cycles from below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convforge.hw.config import EngineConfig
from convforge.hw.layouts import DESCRIPTOR_BYTES, Opcode, weight_tile_bytes
from convforge.hw.rtl.pool_add import ADD_LATENCY
from convforge.hw.rtl.requant import LATENCY as REQUANT_LATENCY

#: Default DDR bandwidth in GB/s when no board is given (the Ultra96-V2 profile's figure).
DEFAULT_DDR_GBPS = 4.2
#: ``ADDR`` + ``RCMD``/``WCMD``: cycles before a span's data state.
SPAN_SETUP_CYCLES = 2
#: Cycles lost per AXI beat after a span's first (the DMA holds one beat; it accepts the
#: next the cycle after the last byte of the previous leaves).
BEAT_BUBBLE_CYCLES = 1
#: The scratchpad's synchronous read port: one cycle before a span's first byte.
SCRATCH_READ_LATENCY = 1
#: PE array: cycles from an output group's last issue to its first drain (2 pipeline stages).
MAC_PIPELINE_CYCLES = 2
#: Per output pixel after the last drain: the requant pipeline and the store span's last item.
REQUANT_TAIL_CYCLES = REQUANT_LATENCY + 1
#: PE layers: cycles from the ``MAC`` state's entry to the first output byte the store span
#: can take, besides the first group's issue (pipeline, drain stage, requant).
STORE_LEAD_CYCLES = 7
#: Depthwise, per output pixel besides its taps: the ``SEQ`` steps and the requant pipeline
#: ahead of the store span's first byte (the accumulators stream through requant into it).
DW_PIXEL_CYCLES = REQUANT_LATENCY + 4
#: ``SEQ`` visits per pixel besides one per tap: COPY 3 (read, store, next pixel), ADD 4
#: (read, read, store, next), max pool 3 (end of taps, store, next), PE layers 3 (end of
#: taps, store span + MAC, next). Depthwise layers: 4 plus one at the end of the taps.
_STEPS = {Opcode.COPY: 3, Opcode.ADD: 4, Opcode.MAXPOOL: 3, Opcode.CONV_PW: 3, Opcode.CONV_KXK: 3}


@dataclass(frozen=True)
class CycleCoefficients:
    """Calibration knobs of the model (defaults: fitted to the RTL in simulation).

    Attributes:
        read_latency: cycles from a read span's command to its first byte. 4 with
            cocotbext-axi's ``AxiRam`` (measured); a Zynq PS DDR port adds its own latency
            (tens of cycles), so raise it to predict a board.
        descriptor_overhead: control cycles of a descriptor besides its fetch and division
            (``FETCH`` command, ``DECODE``, ``CHECK``, ``BARRIER``; measured: 7).
        square_dilation: the dilation a square-deformable layer's map is assumed to give
            every pixel (the hardware skips taps outside the image; 1 matched the shipped
            CoDeNet model's layers within 6 % at 32x32).
    """

    read_latency: int = 4
    descriptor_overhead: int = 7
    square_dilation: int = 1


class _Spans:
    """Accumulates span cycles and DDR bytes of one descriptor."""

    def __init__(self, beat: int, coeff: CycleCoefficients, word: int = 1) -> None:
        self.beat, self.coeff, self.word = beat, coeff, word
        self.cycles = 0
        self.read_bytes = 0         # whole R beats, as the RTL's DMA_RD_BYTES counts them
        self.write_bytes = 0        # strobed bytes, as DMA_WR_BYTES counts them
        self.scratch_bytes = 0

    def _data(self, view: dict[str, Any], ys: np.ndarray, xs: np.ndarray, channels: int, write: bool,
              paired: bool, a_index: int | None = None) -> np.ndarray:
        """Data cycles of each span (one per pixel of ``ys x xs``, or per pair with ``paired``):
        its bytes plus one bubble per AXI beat after the first (none on the scratchpad);
        counts the bytes moved. ``a_index``: the span fills activation buffer A from this
        byte on, wide when it comes from DDR at channel stride 1 (one cycle per piece of a
        beat inside one A word of ``word`` bytes, instead of one per byte)."""
        span = (channels - 1) * int(view.get("channel_stride", 1) or 1) + 1
        n = xs.size if paired else ys.size * xs.size
        if int(view.get("onchip", 0)):
            self.scratch_bytes += n * channels
            return np.full(n, span)
        up = int(view.get("upsample", 0))
        start = int(view.get("offset", 0)) + int(view.get("channel_offset", 0))
        rows = (ys >> up) if paired else (ys >> up)[:, None]
        lead = (start + rows * int(view.get("row_stride", 0))
                + (xs >> up)[None, :] * int(view.get("pixel_stride", 0))) % self.beat
        beats = ((lead + span + self.beat - 1) // self.beat).reshape(-1)
        if write:
            self.write_bytes += n * channels
        else:
            self.read_bytes += int(beats.sum()) * self.beat
        if a_index is not None and span == channels:
            # pieces = 1 + the distinct beat and A-word boundaries inside the span; both sizes
            # are powers of two, so the smaller one's boundaries fall on the larger one's
            # either always or never
            lead = lead.reshape(-1)
            small = min(self.beat, self.word)
            a_bounds = (a_index % self.word + span - 1) // self.word
            coincide = (a_index - lead) % small == 0
            if self.word <= self.beat:
                pieces = 1 + a_bounds + np.where(coincide, 0, beats - 1)
            else:
                pieces = 1 + (beats - 1) + np.where(coincide, 0, a_bounds)
            return pieces + (beats - 1) * BEAT_BUBBLE_CYCLES
        return span + (beats - 1) * BEAT_BUBBLE_CYCLES

    def move(self, view: dict[str, Any], ys: np.ndarray, xs: np.ndarray, channels: int, write: bool = False,
             paired: bool = False, a_index: int | None = None) -> None:
        """One span per pixel of ``ys x xs`` (rows, columns of the view's logical image); with
        ``paired``, one span per pair ``(ys[i], xs[i])``; ``a_index``: see :meth:`_data`."""
        if ys.size == 0 or xs.size == 0 or channels <= 0:
            return
        per_span = self._data(view, ys, xs, channels, write, paired, a_index)
        latency = 0 if write else (SCRATCH_READ_LATENCY if int(view.get("onchip", 0)) else self.coeff.read_latency)
        self.cycles += int(per_span.sum()) + per_span.size * (SPAN_SETUP_CYCLES + latency)

    def store(self, view: dict[str, Any], ys: np.ndarray, xs: np.ndarray, channels: int) -> np.ndarray:
        """A store span per pixel of ``ys x xs`` whose data phase overlaps compute (the PE
        array drains into it): counts its set-up cycles and bytes, returns each span's data
        cycles for the caller to overlap."""
        per_span = self._data(view, ys, xs, channels, True, False)
        self.cycles += per_span.size * SPAN_SETUP_CYCLES
        return per_span

    def move_at(self, view: dict[str, Any], ys: np.ndarray, xs: np.ndarray, channels: int) -> None:
        """One read span per position ``(ys[i], xs[i])`` (paired coordinates)."""
        self.move(view, np.asarray(ys).reshape(-1), np.asarray(xs).reshape(-1), channels, paired=True)

    def table(self, nbytes: int) -> None:
        """A table load (weights, requant or depthwise words): one read span from an aligned start."""
        beats = -(-nbytes // self.beat)
        self.cycles += 1 + self.coeff.read_latency + nbytes + (beats - 1) * BEAT_BUBBLE_CYCLES
        self.read_bytes += beats * self.beat


def mac_cycles(cig: int, drains: list[int]) -> int:
    """Cycles of the PE array's ``MAC`` state for one output pixel, up to its last drain.

    Output group ``n`` issues ``cig`` columns and drains ``drains[n]`` channels. The next
    group issues while the previous one drains, except its last column, which waits until
    the drain register is free; so consecutive groups are ``max(cig, drains[n] + 2)``
    cycles apart, and the last group adds its issue, :data:`MAC_PIPELINE_CYCLES` and its drain.
    """
    spacing = sum(max(cig, dn + MAC_PIPELINE_CYCLES) for dn in drains[:-1])
    return spacing + cig + MAC_PIPELINE_CYCLES + drains[-1]


def _taps(out: int, stride: int, first: int, step: int, size: int) -> np.ndarray:
    """Input coordinates ``o*stride + first + step`` of outputs ``0..out-1`` inside ``[0, size)``."""
    pos = np.arange(out) * stride + first + step
    return pos[(pos >= 0) & (pos < size)]


def descriptor_figures(d: dict[str, Any], cfg: EngineConfig, ddr_gbps: float = DEFAULT_DDR_GBPS,
                       coeff: CycleCoefficients = CycleCoefficients(),
                       taps: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Predicted figures of one descriptor on the RTL engine (see the module docstring).

    Args:
        d: decoded descriptor fields (nested ``src``/``src2``/``dst`` dicts), as the
            emulator decodes them or the compiler records them.
        cfg: the engine.
        ddr_gbps: sustained DDR bandwidth in GB/s (board profile ``ddr_gbps``): a lower bound
            on the span cycles.
        coeff: calibration knobs.
        taps: deformable layers only: the input positions ``(ys, xs)`` (paired, one per read)
            the hardware reads, as the emulator finds them from the layer's map
            (:func:`deform_taps`); without them, those of the map the module docstring
            assumes.

    Returns:
        ``{"unit", "cycles", "compute_cycles", "dma_cycles", "fetch_cycles", "ddr_bytes",
        "ddr_read_bytes", "ddr_write_bytes", "scratch_bytes", "macs"}``: ``cycles`` =
        fetch + spans (``dma_cycles``) + the rest (``compute_cycles``: steps, MAC issue and
        drain, zero fill, the depthwise requant wait); bytes as the RTL's DMA counters
        count them (whole beats read, strobed bytes written); ``macs`` of the layer.
    """
    op = Opcode(int(d["opcode"]))
    beat = cfg.axi_data_bits // 8
    ci, co = int(d["in_channels"]), int(d["out_channels"])
    hi, wi = int(d["in_height"]), int(d["in_width"])
    ho, wo = int(d["out_height"]), int(d["out_width"])
    k, st, pad = int(d["kernel"]), int(d["stride"]), int(d.get("pad", 0))
    dil = int(d.get("dilation", 1)) if op in (Opcode.CONV_PW, Opcode.CONV_KXK, Opcode.DW_REGULAR,
                                              Opcode.DW_BILINEAR) else 1
    if op == Opcode.END:
        return {"unit": "controller", "cycles": 0, "compute_cycles": 0, "dma_cycles": 0, "fetch_cycles": 0,
                "ddr_bytes": 0, "ddr_read_bytes": 0, "ddr_write_bytes": 0, "scratch_bytes": 0, "macs": 0}
    cig, cog = -(-k * k * ci // cfg.pe_ci), -(-co // cfg.pe_co)
    fetch = (coeff.read_latency + DESCRIPTOR_BYTES + (DESCRIPTOR_BYTES // beat - 1) * BEAT_BUBBLE_CYCLES
             + coeff.descriptor_overhead)
    compute = max(cig, cog) + 1                      # DIV
    s = _Spans(beat, coeff, cfg.pe_ci)
    src, src2, dst = d["src"], d["src2"], d["dst"]
    oy, ox = np.arange(ho), np.arange(wo)
    npx = ho * wo
    macs = 0
    if op == Opcode.COPY:
        unit = "dma"
        iy, ix = np.arange(hi), np.arange(wi)
        s.move(src, iy, ix, ci, a_index=0)
        s.move(dst, iy, ix, ci, write=True)
        compute += _STEPS[op] * hi * wi
    elif op == Opcode.ADD:
        unit = "add"
        s.move(src, oy, ox, ci, a_index=0)
        s.move(src2, oy, ox, co)
        s.move(dst, oy, ox, co, write=True)
        compute += (_STEPS[op] + ADD_LATENCY) * npx          # the store waits for the add pipeline
    elif op in (Opcode.MAXPOOL, Opcode.CONV_PW, Opcode.CONV_KXK):
        padded = 0
        for i in range(k):
            ty = _taps(ho, st, -pad, i * dil, hi)
            for j in range(k):
                tx = _taps(wo, st, -pad, j * dil, wi)
                s.move(src, ty, tx, ci, a_index=None if op == Opcode.MAXPOOL else (i * k + j) * ci)
                padded += npx - ty.size * tx.size
        compute += (k * k + _STEPS[op]) * npx
        if op == Opcode.MAXPOOL:
            unit = "pool"
            s.move(dst, oy, ox, ci, write=True)
        else:
            unit = "pe_array"
            per_pixel = mac_cycles(cig, [min(cfg.pe_co, co - g * cfg.pe_co) for g in range(cog)])
            # the drain streams into the store span: the slower of the two sets the pace
            store = s.store(dst, oy, ox, co)
            paced = np.maximum(per_pixel + REQUANT_TAIL_CYCLES, cig + STORE_LEAD_CYCLES + store)
            compute += padded * ci + int(paced.sum())
            s.table(cig * cog * weight_tile_bytes(cfg, int(d["w_bits"])))
            s.table(co * 8)
            macs = npx * k * k * ci * co
    else:
        unit = "depthwise"
        band = int(d.get("band_top", 0))
        s.table(ci * 16)
        compute += npx * DW_PIXEL_CYCLES
        if op == Opcode.DW_REGULAR and st == 1 and dil == 1:
            # the column cache: a row's first pixel reads its three columns, every other pixel
            # the new column only (9 + end and 3 + end tap steps); a new column in the padding
            # adds the row's two cached taps alone, one channel per cycle
            compute += ho * (10 + 4 * (wo - 1))
            new_cols = np.arange(wo) - pad + 2
            cols = np.concatenate([np.arange(-pad, 2 - pad), new_cols])
            cols = cols[(cols >= 0) & (cols < wi)]
            padded_new = int(((new_cols < 0) | (new_cols >= wi)).sum())
            for i in range(3):
                rows = _taps(ho, 1, band - pad, i, hi)
                s.move(src, rows, cols, ci)
                compute += rows.size * padded_new * ci
        elif op == Opcode.DW_REGULAR:
            compute += 10 * npx                                    # 9 taps + end of taps
            for i in range(3):
                for j in range(3):
                    s.move(src, _taps(ho, st, band - pad, i * dil, hi), _taps(wo, st, -pad, j * dil, wi), ci)
        else:                                                      # deformable: the map's taps
            square = op == Opcode.DW_SQUARE
            compute += (10 if square else 37) * npx                # 9 taps / 36 neighbours + end
            s.move(src2, oy, ox, 1 if square else 18)
            if taps is None:
                taps = deform_taps(d, _assumed_map(d, coeff))
            s.move_at(src, *taps, ci)
        s.move(dst, oy, ox, co, write=True)
        macs = npx * co * 9
    ddr_bytes = s.read_bytes + s.write_bytes + DESCRIPTOR_BYTES
    bytes_per_cycle = min(beat, ddr_gbps * 1e3 / cfg.clock_mhz)
    dma = max(s.cycles, int(np.ceil(ddr_bytes / bytes_per_cycle)))
    return {"unit": unit, "cycles": int(fetch + dma + compute), "compute_cycles": int(compute),
            "dma_cycles": int(dma), "fetch_cycles": int(fetch), "ddr_bytes": int(ddr_bytes),
            "ddr_read_bytes": int(s.read_bytes + DESCRIPTOR_BYTES), "ddr_write_bytes": int(s.write_bytes),
            "scratch_bytes": int(s.scratch_bytes), "macs": int(macs)}


def _assumed_map(d: dict[str, Any], coeff: CycleCoefficients) -> np.ndarray:
    """The map the compiler assumes for a deformable layer it cannot see: the dilation
    ``coeff.square_dilation`` everywhere (square), or offsets of half a pixel, which give
    every neighbour of the undeformed tap a nonzero weight (bilinear)."""
    ho, wo = int(d["out_height"]), int(d["out_width"])
    if Opcode(int(d["opcode"])) == Opcode.DW_SQUARE:
        return np.full((ho, wo), coeff.square_dilation)
    return np.full((ho, wo, 18), (1 << int(d["frac_bits"])) >> 1)


def deform_taps(d: dict[str, Any], dmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The input positions a deformable descriptor reads on the RTL, from its map.

    Args:
        d: the decoded DW_SQUARE or DW_BILINEAR descriptor.
        dmap: ``(H_out, W_out)`` dilations already clamped to ``d_max`` (square), or
            ``(H_out, W_out, 18)`` offsets already clamped to ``offset_range`` (bilinear),
            INTEGER_SPEC §4.

    Returns:
        ``(ys, xs)``, 1-D, one entry per read: every tap inside the image (square), every
        neighbour inside the image with a nonzero bilinear weight (bilinear) -- the taps
        the controller does not skip.
    """
    op = Opcode(int(d["opcode"]))
    hi, wi, ho, wo = (int(d[k]) for k in ("in_height", "in_width", "out_height", "out_width"))
    st = int(d["stride"])
    ys, xs = [], []

    def keep(ty, tx, used=True):
        used = used & (ty >= 0) & (ty < hi) & (tx >= 0) & (tx < wi)
        ys.append(ty[used])
        xs.append(tx[used])

    oy, ox = np.arange(ho)[:, None] * st, np.arange(wo)[None, :] * st
    if op == Opcode.DW_SQUARE:
        dm = dmap.astype(np.int64)
        oy = oy + int(d.get("band_top", 0))
        for i in range(3):
            for j in range(3):
                keep(oy + (i - 1) * dm, ox + (j - 1) * dm)
    else:
        frac, pad, dil = int(d["frac_bits"]), int(d["pad"]), int(d["dilation"])
        one = 1 << frac
        for i in range(3):
            for j in range(3):
                t = i * 3 + j
                py = (oy - pad + i * dil) * one + dmap[:, :, 2 * t].astype(np.int64)
                px = (ox - pad + j * dil) * one + dmap[:, :, 2 * t + 1].astype(np.int64)
                y0, x0 = py >> frac, px >> frac
                fy, fx = py - (y0 << frac), px - (x0 << frac)
                for ny, wy in ((0, one - fy), (1, fy)):
                    for nx, wx in ((0, one - fx), (1, fx)):
                        keep(y0 + ny, x0 + nx, (wy * wx) != 0)
    return np.concatenate(ys), np.concatenate(xs)


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
