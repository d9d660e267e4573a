"""Functional emulator of the accelerator: executes a Program's descriptors on a byte buffer.

It reads the descriptors from the buffer exactly as the controller does, decodes them with
the shared layouts (:mod:`convforge.hw.layouts`), and runs each one reading and writing the
buffer through the operand views, with INTEGER_SPEC arithmetic (bit-exact with the integer
reference). NumPy only: it never imports torch, so it runs on a board's ARM core too.

Speed: a PE-array pass is one GEMM. The descriptor carries the compiler's worst-case
accumulator bound (``acc_bound_bits``, INTEGER_SPEC §6); below ``2**24`` a float32 GEMM is
exact (every partial sum is an integer float32 represents), below ``2**53`` float64, else
int64. Decoded weights are cached per descriptor and reused while the bytes they were
decoded from are unchanged.

Fusion scratchpad: operand views with the ``onchip`` flag address :attr:`Emulator.scratch`,
a separate ``EngineConfig.fuse_buffer_bytes``-byte memory (the accelerator's on-chip RAM),
not the DDR buffer; it keeps its contents between descriptors and runs, as the RAM does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convforge.errors import EmulatorFault
from convforge.hw.config import EngineConfig
from convforge.hw.layouts import (
    DESCRIPTOR_BYTES,
    Fault,
    Opcode,
    config_tag,
    descriptor_layout,
    dw_channel_word_layout,
    requant_word_layout,
    weight_tile_bytes,
    weight_tile_layout,
)
from convforge.hw.packing import layout_bytes, unpack_array
from convforge.models.quant.intops import requant, rshift_round, sat
from convforge.sw.runtime.cycles import DEFAULT_DDR_GBPS, deform_taps, descriptor_figures, frame_figures
from convforge.sw.runtime.program import Program, read_view, write_view

_OPCODES = {int(o) for o in Opcode}
_DW_MODE = {Opcode.DW_REGULAR: "regular", Opcode.DW_SQUARE: "square", Opcode.DW_BILINEAR: "bilinear"}


@dataclass
class RunStats:
    """What one run did.

    Attributes:
        descriptors: descriptors executed (END excluded).
        per_descriptor: the cycle model's figures per executed descriptor.
        cycles, fps, mac_utilisation, ddr_bytes: the frame totals (predicted).
    """

    descriptors: int
    per_descriptor: list[dict[str, Any]] = field(default_factory=list)
    cycles: int = 0
    fps: float = 0.0
    mac_utilisation: float = 0.0
    ddr_bytes: int = 0


class Emulator:
    """Executes Programs compiled for ``config`` (see the module docstring).

    Args:
        config: the EngineConfig the emulated engine is built with; descriptors carrying
            another configuration's tag fault with ``Fault.CONFIG_MISMATCH``.
        ddr_gbps: DDR bandwidth for the cycle figures (board profile ``ddr_gbps``).
    """

    def __init__(self, config: EngineConfig, ddr_gbps: float = DEFAULT_DDR_GBPS) -> None:
        self.config = config
        self.ddr_gbps = ddr_gbps
        self._tag = config_tag(config)
        self._layout = descriptor_layout(config)
        #: The on-chip fusion scratchpad (uint8, ``fuse_buffer_bytes``); views with ``onchip``
        #: set read and write it. Tests may inspect it between descriptors.
        self.scratch = np.zeros(config.fuse_buffer_bytes, dtype=np.uint8)
        self._desc_cache: tuple[bytes, list[dict[str, Any]]] | None = None
        self._weights: dict[int, tuple[bytes, Any]] = {}

    # -- descriptors ---------------------------------------------------------------------
    def _decode(self, memory: np.ndarray, program_offset: int, n: int) -> list[dict[str, Any]]:
        end = program_offset + n * DESCRIPTOR_BYTES
        if program_offset < 0 or n <= 0 or end > memory.shape[0]:
            raise EmulatorFault(
                f"program of {n} descriptors at byte {program_offset} lies outside the {memory.shape[0]}-byte "
                "buffer", Fault.ADDRESS_RANGE, 0)
        raw = memory[program_offset:end]
        key = raw.tobytes()
        if self._desc_cache is not None and self._desc_cache[0] == key:
            return self._desc_cache[1]
        fields = unpack_array(self._layout, raw.reshape(n, DESCRIPTOR_BYTES))
        decoded = [_record(fields, i) for i in range(n)]
        self._desc_cache = (key, decoded)
        self._weights.clear()
        return decoded

    def run(self, memory: np.ndarray, program_offset: int, n_descriptors: int,
            on_descriptor: Callable[[int], None] | None = None) -> RunStats:
        """Execute the program at ``program_offset`` (bytes) of ``memory`` (uint8, the whole
        buffer) until its END descriptor; ``memory`` is read and written in place.
        ``on_descriptor(index)`` (optional) is called after each executed descriptor.

        Raises:
            EmulatorFault: what the hardware would flag, with its :class:`Fault` code and
                the descriptor index (bad opcode, field, address, config tag, missing END).
        """
        if not isinstance(memory, np.ndarray) or memory.dtype != np.uint8 or memory.ndim != 1:
            raise EmulatorFault("memory must be a 1-D uint8 array (the whole buffer)", Fault.ADDRESS_RANGE, 0)
        descs = self._decode(memory, program_offset, n_descriptors)
        figures = []
        for index, d in enumerate(descs):
            op = int(d["opcode"])
            if op not in _OPCODES:
                raise EmulatorFault(f"descriptor {index}: opcode {op} is not an engine opcode",
                                    Fault.BAD_OPCODE, index)
            if op == Opcode.END:
                totals = frame_figures(figures, self.config)
                return RunStats(len(figures), figures, totals["cycles"], totals["fps"],
                                totals["mac_utilisation"], totals["ddr_bytes"])
            if int(d["config_tag"]) != self._tag:
                raise EmulatorFault(
                    f"descriptor {index}: compiled for another EngineConfig (tag {int(d['config_tag']):#06x}, "
                    f"this engine {self._tag:#06x}); recompile the QGraph for this engine",
                    Fault.CONFIG_MISMATCH, index)
            try:
                taps = self._execute(memory, index, d)
            except IndexError as exc:
                raise EmulatorFault(f"descriptor {index}: {exc}", Fault.ADDRESS_RANGE, index) from exc
            figures.append(descriptor_figures(d, self.config, self.ddr_gbps, taps=taps))
            if on_descriptor is not None:
                on_descriptor(index)
        raise EmulatorFault(f"no END among the {n_descriptors} descriptors", Fault.NO_END, n_descriptors - 1)

    # -- operands ------------------------------------------------------------------------
    def _read(self, memory: np.ndarray, v: dict[str, Any], h: int, w: int, c: int) -> np.ndarray:
        if int(v["onchip"]):
            memory = self.scratch
        return read_view(memory, int(v["offset"]) + int(v["channel_offset"]), int(v["channel_stride"]),
                         int(v["pixel_stride"]), int(v["row_stride"]), bool(v["upsample"]), bool(v["signed"]),
                         h, w, c)

    def _write(self, memory: np.ndarray, v: dict[str, Any], values: np.ndarray) -> None:
        if int(v["onchip"]):
            memory = self.scratch
        write_view(memory, int(v["offset"]) + int(v["channel_offset"]), int(v["channel_stride"]),
                   int(v["pixel_stride"]), int(v["row_stride"]), values)

    def _table(self, memory: np.ndarray, offset: int, nbytes: int) -> np.ndarray:
        if offset < 0 or offset + nbytes > memory.shape[0]:
            raise IndexError(f"table bytes [{offset}, {offset + nbytes}) outside the {memory.shape[0]}-byte buffer")
        return memory[offset:offset + nbytes]

    def _pe_weights(self, memory: np.ndarray, index: int, d: dict[str, Any]) -> tuple[np.ndarray, ...]:
        cfg = self.config
        ci_eff = int(d["kernel"]) ** 2 * int(d["in_channels"])
        co, wb = int(d["out_channels"]), int(d["w_bits"])
        cig, cog = -(-ci_eff // cfg.pe_ci), -(-co // cfg.pe_co)
        tile_bytes = weight_tile_bytes(cfg, wb)
        wraw = self._table(memory, int(d["weights_offset"]), cig * cog * tile_bytes)
        rraw = self._table(memory, int(d["requant_offset"]), co * 8)
        key = wraw.tobytes() + rraw.tobytes()
        hit = self._weights.get(index)
        if hit is not None and hit[0] == key:
            return hit[1]
        layout = weight_tile_layout(cfg, wb)
        tiles = unpack_array(layout, wraw.reshape(cig * cog, tile_bytes)[:, :layout_bytes(layout)])
        w = tiles.reshape(cog, cig, cfg.pe_co, cfg.pe_ci).transpose(0, 2, 1, 3)
        w = w.reshape(cog * cfg.pe_co, cig * cfg.pe_ci)
        w = np.ascontiguousarray(w[:co, :ci_eff].T)  # (ci_eff, co)
        rq = unpack_array(requant_word_layout(cfg), rraw.reshape(co, 8))
        bits = int(d["acc_bound_bits"])
        dtype = np.float32 if bits <= 24 else (np.float64 if bits <= 53 else np.int64)
        value = (w.astype(dtype), rq["bias"], rq["m"], rq["s"], dtype)
        self._weights[index] = (key, value)
        return value

    def _dw_words(self, memory: np.ndarray, index: int, d: dict[str, Any]) -> tuple[np.ndarray, ...]:
        c = int(d["out_channels"])
        layout = dw_channel_word_layout(self.config)
        nb = layout_bytes(layout)
        raw = self._table(memory, int(d["weights_offset"]), c * nb)
        key = raw.tobytes()
        hit = self._weights.get(index)
        if hit is not None and hit[0] == key:
            return hit[1]
        words = unpack_array(layout, raw.reshape(c, nb))
        value = (words["weights"], words["bias"], words["m"], words["s"])
        self._weights[index] = (key, value)
        return value

    # -- execution -----------------------------------------------------------------------
    def _check(self, index: int, op: Opcode, d: dict[str, Any]) -> None:
        """What the controller's descriptor decoder refuses (Fault.BAD_OPCODE / BAD_DESCRIPTOR)."""
        cfg = self.config

        def bad(what: str, code: Fault = Fault.BAD_DESCRIPTOR) -> None:
            raise EmulatorFault(f"descriptor {index} ({op.name}): {what}", code, index)

        if op in _DW_MODE and _DW_MODE[op] not in cfg.dw_modes:
            bad(f"depthwise mode {_DW_MODE[op]!r} is not built in this engine", Fault.BAD_OPCODE)
        if int(d["dst"]["upsample"]):
            bad("the destination view has the upsample flag")
        band_top = int(d["band_top"])
        if band_top and (op not in (Opcode.DW_REGULAR, Opcode.DW_SQUARE)
                         or (op == Opcode.DW_REGULAR and band_top > int(d["pad"]))):
            bad(f"band_top {band_top}: only a DW_REGULAR (band_top <= pad) or DW_SQUARE band has one")
        ci, co = int(d["in_channels"]), int(d["out_channels"])
        if not (0 < ci <= cfg.max_channels and 0 < co <= cfg.max_channels):
            bad(f"{ci} input / {co} output channels outside 1..{cfg.max_channels}")
        k, s = int(d["kernel"]), int(d["stride"])
        if op != Opcode.COPY and (s < 1 or k < 1):
            bad(f"kernel {k} / stride {s} must be at least 1")
        if op in _DW_MODE and (k != 3 or s not in (1, 2) or int(d["in_width"]) > cfg.line_width):
            bad(f"kernel {k}, stride {s}, width {int(d['in_width'])}: the depthwise unit runs 3x3, stride 1 or 2, "
                f"rows up to {cfg.line_width} pixels")
        if op == Opcode.MAXPOOL and (k > cfg.pool_k_max or s > cfg.pool_s_max):
            bad(f"pool kernel {k} / stride {s} beyond {cfg.pool_k_max} / {cfg.pool_s_max}")
        if op in (Opcode.CONV_PW, Opcode.CONV_KXK):
            cig = -(-k * k * ci // cfg.pe_ci)
            if k * k * ci > cfg.max_channels or cig * -(-co // cfg.pe_co) > cfg.weight_depth:
                bad(f"{k * k * ci} x {co} weights do not fit the weight buffer ({cfg.weight_depth} tiles)")
            if int(d["acc_bound_bits"]) > cfg.acc_bits:
                bad(f"accumulator bound of {int(d['acc_bound_bits'])} bits exceeds acc_bits={cfg.acc_bits}")
        if op in (Opcode.COPY, Opcode.ADD) and (ci != co or int(d["in_height"]) != int(d["out_height"])
                                                or int(d["in_width"]) != int(d["out_width"])):
            bad("input and output shapes differ")

    def _execute(self, memory: np.ndarray, index: int, d: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
        """Execute one descriptor on ``memory``; returns the input positions a deformable layer
        read (:func:`~convforge.sw.runtime.cycles.deform_taps`, for the cycle model), else None."""
        op = Opcode(int(d["opcode"]))
        taps = None
        ci, co = int(d["in_channels"]), int(d["out_channels"])
        hi_, wi = int(d["in_height"]), int(d["in_width"])
        ho, wo = int(d["out_height"]), int(d["out_width"])
        k, s, p, dil = int(d["kernel"]), int(d["stride"]), int(d["pad"]), int(d["dilation"])
        lo, hi = int(d["lo"]), int(d["hi"])
        self._check(index, op, d)
        x = self._read(memory, d["src"], hi_, wi, ci)
        if op in (Opcode.CONV_PW, Opcode.CONV_KXK):
            w, bias, m, sh, dtype = self._pe_weights(memory, index, d)
            cols = _im2col(x, k, s, p, dil, ho, wo)
            acc = cols.astype(dtype) @ w
            if dtype != np.int64:
                acc = np.rint(acc).astype(np.int64) if dtype == np.float64 else acc.astype(np.int64)
            out = requant(acc, bias, m, sh, lo, hi, channel_axis=-1).reshape(ho, wo, co)
        elif op in _DW_MODE:
            if co != ci:
                raise EmulatorFault(f"descriptor {index}: depthwise pass with {ci} input and {co} output channels",
                                    Fault.BAD_DESCRIPTOR, index)
            w, bias, m, sh = self._dw_words(memory, index, d)
            if op == Opcode.DW_REGULAR:
                exact = np.float32 if int(d["acc_bound_bits"]) <= 24 else np.int64
                acc = _dw_regular(x, w, s, p, dil, ho, wo, exact, top=p - int(d["band_top"]))
            elif op == Opcode.DW_SQUARE:
                dmap = np.minimum(self._read(memory, d["src2"], ho, wo, 1)[:, :, 0], int(d["d_max"]))
                acc = _dw_square(x, w, dmap, s, ho, wo, int(d["band_top"]))
                taps = deform_taps(d, dmap)
            else:
                lim = int(d["offset_range"]) << int(d["frac_bits"])
                offs = np.clip(self._read(memory, d["src2"], ho, wo, 18), -lim, lim)
                acc = _dw_bilinear(x, w, offs, s, p, dil, int(d["frac_bits"]), ho, wo)
                taps = deform_taps(d, offs)
            out = requant(acc, bias, m, sh, lo, hi, channel_axis=-1)
        elif op == Opcode.MAXPOOL:
            out = _maxpool(x, k, s, p, ho, wo)
        elif op == Opcode.ADD:
            b = self._read(memory, d["src2"], ho, wo, co)
            # INTEGER_SPEC §4 add: sat(rshift_round(a*Ma + b*Mb, S), lo, hi)
            out = sat(rshift_round(x.astype(np.int64) * int(d["add_ma"]) + b.astype(np.int64) * int(d["add_mb"]),
                                   int(d["add_s"])), lo, hi)
        elif op == Opcode.COPY:
            out = x
        else:  # pragma: no cover - END is handled by run()
            raise EmulatorFault(f"descriptor {index}: opcode {op!r} cannot execute", Fault.BAD_OPCODE, index)
        self._write(memory, d["dst"], out)
        return taps


def _record(fields: dict[str, Any], i: int) -> dict[str, Any]:
    return {k: (_record(v, i) if isinstance(v, dict) else int(v[i])) for k, v in fields.items()}


def _pad(x: np.ndarray, top: int, bottom: int, left: int, right: int, value: int = 0) -> np.ndarray:
    return np.pad(x, ((top, max(bottom, 0)), (left, max(right, 0)), (0, 0)), constant_values=value)


def _window(xp: np.ndarray, y0: int, x0: int, s: int, ho: int, wo: int) -> np.ndarray:
    return xp[y0:y0 + (ho - 1) * s + 1:s, x0:x0 + (wo - 1) * s + 1:s]


def _im2col(x: np.ndarray, k: int, s: int, p: int, d: int, ho: int, wo: int) -> np.ndarray:
    """``(ho*wo, k*k*C)`` columns, tap order ``(i, j, c)`` (the CONV_KXK weight order)."""
    h, w, c = x.shape
    if k == 1 and p == 0:
        return _window(x, 0, 0, s, ho, wo).reshape(ho * wo, c)
    need_h, need_w = (ho - 1) * s + (k - 1) * d + 1, (wo - 1) * s + (k - 1) * d + 1
    xp = _pad(x, p, need_h - h - p, p, need_w - w - p)
    cols = np.stack([_window(xp, i * d, j * d, s, ho, wo) for i in range(k) for j in range(k)], axis=2)
    return cols.reshape(ho * wo, k * k * c)


def _dw_regular(x, w, s, p, d, ho, wo, dtype=np.int64, top=None) -> np.ndarray:
    """3x3 depthwise accumulator; ``dtype`` float32 is exact when the bound is below 2**24.
    ``top``: zero rows above ``x`` (``pad - band_top``; default ``p``)."""
    h, wd, c = x.shape
    top = p if top is None else top
    xp = _pad(x.astype(dtype), top, (ho - 1) * s + 2 * d + 1 - h - top, p, (wo - 1) * s + 2 * d + 1 - wd - p)
    wt = w.astype(dtype)
    acc = np.zeros((ho, wo, c), dtype=dtype)
    for i in range(3):
        for j in range(3):
            acc += wt[:, i * 3 + j] * _window(xp, i * d, j * d, s, ho, wo)
    return acc.astype(np.int64)


def _gather(x: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    h, w, _ = x.shape
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    vals = x[np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)]
    return vals * inside[..., None]


def _dw_square(x, w, dmap, s, ho, wo, band_top=0) -> np.ndarray:
    x = x.astype(np.int64)
    dm = dmap.astype(np.int64)
    oy = (np.arange(ho) * s + band_top)[:, None]
    ox = (np.arange(wo) * s)[None, :]
    acc = np.zeros((ho, wo, x.shape[2]), dtype=np.int64)
    for i in range(3):
        for j in range(3):
            acc += w[:, i * 3 + j] * _gather(x, oy + (i - 1) * dm, ox + (j - 1) * dm)
    return acc


def _dw_bilinear(x, w, offs, s, p, d, frac, ho, wo) -> np.ndarray:
    x = x.astype(np.int64)
    one = 1 << frac
    by = (np.arange(ho) * s - p)[:, None]
    bx = (np.arange(wo) * s - p)[None, :]
    acc = np.zeros((ho, wo, x.shape[2]), dtype=np.int64)
    for i in range(3):
        for j in range(3):
            t = i * 3 + j
            py = (by + i * d) * one + offs[:, :, 2 * t].astype(np.int64)
            px = (bx + j * d) * one + offs[:, :, 2 * t + 1].astype(np.int64)
            y0, x0 = py >> frac, px >> frac
            fy, fx = (py - (y0 << frac))[..., None], (px - (x0 << frac))[..., None]
            v = ((one - fy) * (one - fx) * _gather(x, y0, x0) + (one - fy) * fx * _gather(x, y0, x0 + 1)
                 + fy * (one - fx) * _gather(x, y0 + 1, x0) + fy * fx * _gather(x, y0 + 1, x0 + 1))
            acc += w[:, t] * v
    return acc


def _maxpool(x, k, s, p, ho, wo) -> np.ndarray:
    h, w, _ = x.shape
    floor = -(1 << 15)
    xp = _pad(x.astype(np.int32), p, (ho - 1) * s + k - h - p, p, (wo - 1) * s + k - w - p, floor)
    out = np.full((ho, wo, x.shape[2]), floor, dtype=np.int32)
    for i in range(k):
        for j in range(k):
            np.maximum(out, _window(xp, i, j, s, ho, wo), out=out)
    return out


def run_program(program: Program, image_uint8_hwc: np.ndarray, emulator: Emulator | None = None,
                memory: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Place ``image_uint8_hwc`` (``(H, W, 3)`` uint8), run the Program, read every tensor back.

    Each tensor is captured right after the descriptor that completes it (the tensor map's
    ``ready_after``), so tensors whose buffers the memory plan reuses are read before they
    are overwritten. Returns ``{tensor name: int64 (1, C, H, W)}`` for every readable QGraph
    tensor (:meth:`Program.readable`: all but the intermediates of fused chains, which
    exist only band by band in :attr:`Emulator.scratch`), plus the head names.
    """
    emu = emulator or Emulator(program.config)
    mem = program.new_buffer() if memory is None else memory
    if memory is not None:
        mem[: program.image.size] = program.image
    program.place_image(mem, image_uint8_hwc)
    by_ready: dict[int, list[str]] = {}
    for name in program.readable():
        by_ready.setdefault(program.tensors[name].ready_after, []).append(name)
    values: dict[str, np.ndarray] = {}

    def capture(index: int) -> None:
        for name in by_ready.get(index, ()):
            values[name] = program.read(mem, name)[None]

    capture(-1)
    emu.run(mem, program.program_offset, program.n_descriptors, on_descriptor=capture)
    return {**values, **{head: values[t] for head, t in program.outputs.items()}}
