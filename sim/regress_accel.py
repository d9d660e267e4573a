"""Whole-Program regressions of the accelerator top in cocotb, bit-exact with the emulator.

:func:`random_program` builds a Program image of random COPY / ADD / MAXPOOL descriptors
(random shapes, channel offsets, channel strides 1..3, padded pixel and row strides,
upsampled reads, int8 and uint8 operands, descriptors reading earlier outputs) followed
by END. :func:`fault_cases` derives one image per fault from it. :func:`run_engine` runs
a list of images on the RTL (:mod:`convforge.sim.tb_accel`: CSR over AXI4-Lite, DDR as
AxiRam) and returns what the CSRs reported and the buffer after each run; :func:`regress_engine` compares every run with
:class:`convforge.sw.runtime.emulator.Emulator` on the same image: ``np.array_equal`` on
the whole buffer, and the fault code and descriptor index.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convforge.errors import EmulatorFault
from convforge.hw.config import EngineConfig
from convforge.hw.layouts.csr import ErrorCode
from convforge.hw.layouts.program import (
    DESCRIPTOR_BYTES,
    TABLE_ALIGN,
    Opcode,
    config_tag,
    descriptor_layout,
    dw_channel_word_layout,
    requant_word_layout,
    weight_tile_bytes,
    weight_tile_layout,
)
from convforge.hw.packing import pack_array
from convforge.hw.rtl.accel import Accelerator
from convforge.sim.regress import RegressionResult
from convforge.sim.runner import build_design, run_testbench
from convforge.sw.runtime.emulator import Emulator
from convforge.sw.runtime.program import Program

#: The engine configuration of the tests: 64-bit AXI, 256-channel buffers (the shipped model fits).
ACCEL_TEST_CONFIG = EngineConfig(pe_ci=4, pe_co=4, dw_lanes=4, line_width=32, max_channels=256,
                                  axi_data_bits=64, fuse_buffer_bytes=1024)
_VIEW_KEYS = ("offset", "channel_offset", "channel_stride", "pixel_stride", "row_stride", "upsample", "signed",
              "onchip")
#: Descriptor kinds the engine executes (the random programs use each at least once).
ALL_KINDS = (Opcode.COPY, Opcode.ADD, Opcode.MAXPOOL, Opcode.CONV_PW, Opcode.CONV_KXK,
             Opcode.DW_REGULAR, Opcode.DW_SQUARE, Opcode.DW_BILINEAR)
#: Watchdog of the simulated top: cycles without an AXI handshake before TIMEOUT (short, so
#: the test provokes it quickly; random pauses never stall a channel this long).
TEST_WATCHDOG = 1 << 12
#: Where the buffer sits in the simulated DDR (not page aligned: bursts must split at 4 KiB).
BASE_ADDR = 0x1F40


def pack_descriptors(cfg: EngineConfig, records: list[dict[str, Any]]) -> np.ndarray:
    """Descriptor dicts (missing fields 0) -> ``uint8 (N * DESCRIPTOR_BYTES,)``."""
    cols: dict[str, Any] = {}
    for key in descriptor_layout(cfg).members:
        if key in ("src", "src2", "dst"):
            cols[key] = {k: np.array([r.get(key, {}).get(k, 0) for r in records], dtype=np.int64)
                         for k in _VIEW_KEYS}
        elif key != "reserved":
            cols[key] = np.array([r.get(key, 0) for r in records], dtype=np.int64)
    return pack_array(descriptor_layout(cfg), cols, count=len(records)).reshape(-1)


class _Heap:
    def __init__(self, start: int) -> None:
        self.top = start

    def take(self, nbytes: int, align: int = 1) -> int:
        self.top = -(-self.top // align) * align
        at = self.top
        self.top += nbytes
        return at


def _view(rng: random.Random, heap: _Heap, h: int, w: int, c: int, signed: bool, upsample: bool = False
          ) -> dict[str, int]:
    """A random strided view of a logical ``(h, w, c)`` tensor in a fresh region."""
    sh, sw = ((h + 1) // 2, (w + 1) // 2) if upsample else (h, w)
    cs = rng.choice((1, 1, 2, 3))
    ch_off = rng.randint(0, 5)
    ps = ch_off + (c - 1) * cs + 1 + rng.randint(0, 7)
    rs = sw * ps + rng.randint(0, 9)
    return {"offset": heap.take(sh * rs, rng.choice((1, 8))), "channel_offset": ch_off, "channel_stride": cs,
            "pixel_stride": ps, "row_stride": rs, "upsample": int(upsample), "signed": int(signed)}


def random_program(cfg: EngineConfig, rng: random.Random, layers: int = 5,
                   kinds: Sequence[Opcode] = ALL_KINDS,
                   dw_shapes: Sequence[tuple[int, int, int]] | None = None) -> tuple[np.ndarray, int]:
    """A buffer image (descriptors at offset 0, random activations after) and its descriptor
    count (END included): ``layers`` descriptors, each of ``kinds`` at least once (when
    ``layers`` allows); ``dw_shapes``: the ``(stride, pad, dilation)`` depthwise layers draw
    from (default: stride 1, 1 or 2, pad 0-2, dilation 1 or 2)."""
    tag = config_tag(cfg)
    heap = _Heap(DESCRIPTOR_BYTES * (layers + 1))
    records: list[dict[str, Any]] = []
    outputs: list[tuple[dict[str, int], tuple[int, int, int]]] = []
    pool = tuple(kinds)
    kinds = list(pool)
    rng.shuffle(kinds)
    kinds += [rng.choice(pool) for _ in range(layers - len(kinds))]
    tables: list[tuple[int, np.ndarray]] = []
    for op in kinds[:max(layers, 1)]:
        c = rng.randint(1, min(cfg.max_channels, 19))
        h, w = rng.randint(1, 6), rng.randint(1, 7)
        signed = rng.random() < 0.5
        src = None
        if outputs and rng.random() < 0.5:
            prev, (ph, pw, pc) = rng.choice(outputs)
            src, (h, w, c), signed = dict(prev), (ph, pw, pc), bool(prev["signed"])
        up = src is None and rng.random() < 0.3
        if src is None:
            src = _view(rng, heap, h, w, c, signed, up)
        rec: dict[str, Any] = {"opcode": int(op), "config_tag": tag, "in_channels": c, "out_channels": c,
                               "in_height": h, "in_width": w, "src": src, "kernel": 1, "stride": 1}
        if op in (Opcode.CONV_PW, Opcode.CONV_KXK):
            if op == Opcode.CONV_PW:
                k, s, p, d = 1, rng.choice((1, 1, 2)), 0, 1
            else:
                k, s, d = rng.choice((2, 3, 3)), rng.choice((1, 2, 3)), rng.choice((1, 1, 2))
                p = rng.randint(0, k // 2 + 1)
                if k * k * c > cfg.max_channels:  # a fresh, smaller input
                    c = rng.randint(1, cfg.max_channels // (k * k))
                    src = _view(rng, heap, h, w, c, signed)
                    rec.update(in_channels=c, src=src)
            ho, wo = (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1
            if ho < 1 or wo < 1:
                p = d * (k - 1)
                ho, wo = (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1
            co = rng.randint(1, min(cfg.max_channels, 21))
            wb = rng.choice((8, 4, 3, 5, 2, 8))
            out_signed = rng.random() < 0.5
            w_off, r_off = _conv_tables(cfg, rng, heap, tables, k * k * c, co, wb)
            rec.update(kernel=k, stride=s, pad=p, dilation=d, out_channels=co, out_height=ho, out_width=wo,
                       w_bits=wb, acc_bound_bits=cfg.acc_bits, weights_offset=w_off, requant_offset=r_off,
                       weights_bytes=tables[-2][1].size,
                       lo=-128 if out_signed else 0, hi=127 if out_signed else rng.choice((255, 6)))
            rec["dst"] = _view(rng, heap, ho, wo, co, out_signed)
            records.append(rec)
            outputs.append((rec["dst"], (ho, wo, co)))
            continue
        if op in (Opcode.DW_REGULAR, Opcode.DW_SQUARE, Opcode.DW_BILINEAR):
            if dw_shapes is None:
                s = rng.choice((1, 1, 2))
                p, d = rng.randint(0, 2), rng.choice((1, 2))
            else:
                s, p, d = rng.choice(dw_shapes)
            if op == Opcode.DW_SQUARE:
                ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
            else:
                ho, wo = (h + 2 * p - 2 * d - 1) // s + 1, (w + 2 * p - 2 * d - 1) // s + 1
                if ho < 1 or wo < 1:
                    p = 2 * d
                    ho, wo = (h + 2 * p - 2 * d - 1) // s + 1, (w + 2 * p - 2 * d - 1) // s + 1
            out_signed = rng.random() < 0.5
            wt = np.array([[rng.randint(-128, 127) for _ in range(9)] for _ in range(c)], dtype=np.int64)
            words = pack_array(dw_channel_word_layout(cfg), {
                "weights": wt, "bias": np.array([rng.randint(-5000, 5000) for _ in range(c)], dtype=np.int64),
                "m": np.array([rng.randint(1 << 14, (1 << 15) - 1) for _ in range(c)], dtype=np.int64),
                "s": np.array([rng.randint(12, 22) for _ in range(c)], dtype=np.int64)})
            w_off = heap.take(words.size, TABLE_ALIGN)
            tables.append((w_off, words.reshape(-1)))
            rec.update(kernel=3, stride=s, pad=p, dilation=d, out_height=ho, out_width=wo, w_bits=8,
                       weights_offset=w_off, weights_bytes=words.size, requant_offset=w_off,
                       d_max=rng.randint(1, cfg.d_max), frac_bits=cfg.frac_bits, offset_range=cfg.offset_range,
                       lo=-128 if out_signed else 0, hi=127 if out_signed else rng.choice((255, 6)))
            if op == Opcode.DW_SQUARE:
                rec["src2"] = _view(rng, heap, ho, wo, 1, False)
            elif op == Opcode.DW_BILINEAR:
                rec["src2"] = _view(rng, heap, ho, wo, 18, True)
            rec["dst"] = _view(rng, heap, ho, wo, c, out_signed)
            records.append(rec)
            outputs.append((rec["dst"], (ho, wo, c)))
            continue
        if op == Opcode.MAXPOOL:
            k = rng.randint(1, 3)
            s = rng.randint(1, 3)
            p = rng.randint(0, k - 1)
            ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            if ho < 1 or wo < 1:
                k, s, p, ho, wo = 1, 1, 0, h, w
            rec.update(kernel=k, stride=s, pad=p)
        else:
            ho, wo = h, w
        rec.update(out_height=ho, out_width=wo)
        out_signed = signed
        if op == Opcode.ADD:
            b_signed = rng.random() < 0.5
            rec["src2"] = _view(rng, heap, ho, wo, c, b_signed, rng.random() < 0.3)
            out_signed = rng.random() < 0.5
            rec.update(add_ma=rng.randint(1 << 14, (1 << 15) - 1), add_mb=rng.randint(1 << 14, (1 << 15) - 1),
                       add_s=rng.choice((14, 15, 15, 16, 0, 40)),
                       lo=-128 if out_signed else 0, hi=127 if out_signed else rng.choice((255, 6)))
        rec["dst"] = _view(rng, heap, ho, wo, c, out_signed)
        records.append(rec)
        outputs.append((rec["dst"], (ho, wo, c)))
    records.append({"opcode": int(Opcode.END), "config_tag": tag})
    image = np.frombuffer(rng.randbytes(heap.top + 16), dtype=np.uint8).copy()
    for offset, blob in tables:
        image[offset:offset + blob.size] = blob
    desc = pack_descriptors(cfg, records)
    image[: desc.size] = desc
    return image, len(records)


def _conv_tables(cfg: EngineConfig, rng: random.Random, heap: _Heap, tables: list, ci_eff: int, co: int,
                 wb: int) -> tuple[int, int]:
    """Random weights (full ``w_bits`` range) packed as PE tiles, and requant words; appended
    to ``tables`` as (offset, bytes). Returns (weights offset, requant offset)."""
    lim = 1 << (wb - 1)
    w = np.array([[rng.choice((-lim, lim - 1)) if rng.random() < 0.1 else rng.randint(-lim, lim - 1)
                   for _ in range(ci_eff)] for _ in range(co)], dtype=np.int64)
    cig, cog = -(-ci_eff // cfg.pe_ci), -(-co // cfg.pe_co)
    full = np.zeros((cog * cfg.pe_co, cig * cfg.pe_ci), dtype=np.int64)
    full[:co, :ci_eff] = w
    tiles = full.reshape(cog, cfg.pe_co, cig, cfg.pe_ci).transpose(0, 2, 1, 3).reshape(-1, cfg.pe_co, cfg.pe_ci)
    raw = pack_array(weight_tile_layout(cfg, wb), tiles)
    padded = np.zeros((raw.shape[0], weight_tile_bytes(cfg, wb)), dtype=np.uint8)
    padded[:, :raw.shape[1]] = raw
    bias = np.array([rng.randint(-5000, 5000) for _ in range(co)], dtype=np.int64)
    m = np.array([rng.randint(1 << 14, (1 << 15) - 1) for _ in range(co)], dtype=np.int64)
    s = np.array([rng.randint(12, 24) for _ in range(co)], dtype=np.int64)
    rq = pack_array(requant_word_layout(cfg), {"bias": bias, "m": m, "s": s})
    w_off = heap.take(padded.size, TABLE_ALIGN)
    tables.append((w_off, padded.reshape(-1)))
    r_off = heap.take(rq.size, TABLE_ALIGN)
    tables.append((r_off, rq.reshape(-1)))
    return w_off, r_off


def decode(cfg: EngineConfig, image: np.ndarray, n: int) -> list[dict[str, Any]]:
    """The descriptors of ``image`` as dicts (for deriving fault cases)."""
    from convforge.hw.packing import unpack_array

    fields = unpack_array(descriptor_layout(cfg), image[: n * DESCRIPTOR_BYTES].reshape(n, DESCRIPTOR_BYTES))

    def rec(f, i):
        return {k: (rec(v, i) if isinstance(v, dict) else int(v[i])) for k, v in f.items() if k != "reserved"}

    return [rec(fields, i) for i in range(n)]


@dataclass
class EngineRun:
    """One image to run: ``name``, buffer ``image``, descriptors ``n``, optional
    ``poison`` window ``[lo, hi)`` (buffer offsets answering SLVERR, or DECERR when
    ``poison_resp`` is ``"decerr"``), ``soft_reset_at``
    (cycles after start), ``stall_reads`` (the R channel never answers until done),
    ``expect`` (error code the hardware alone can tell, e.g. AXI)."""

    name: str
    image: np.ndarray
    n: int
    prog_offset: int = 0
    buf_bytes: int | None = None
    poison: tuple[int, int] | None = None
    poison_resp: str = "slverr"
    soft_reset_at: int | None = None
    stall_reads: bool = False
    expect: tuple[int, int] | None = None
    result: dict[str, Any] = field(default_factory=dict)
    memory: np.ndarray | None = None


def fault_cases(cfg: EngineConfig, image: np.ndarray, n: int, rng: random.Random) -> list[EngineRun]:
    """One run per fault the engine flags, each derived from a valid Program ``image``."""
    recs = decode(cfg, image, n)
    runs = []

    def variant(name: str, index: int, change: dict[str, Any], **kw) -> None:
        r = [dict(x) for x in recs]
        for key, value in change.items():
            if "." in key:
                view, sub = key.split(".")
                r[index][view] = {**r[index][view], sub: value}
            else:
                r[index][key] = value
        img = image.copy()
        img[: n * DESCRIPTOR_BYTES] = pack_descriptors(cfg, r)
        runs.append(EngineRun(name, img, n, **kw))

    last = n - 2  # the last layer before END
    variant("bad_opcode", 1, {"opcode": 13})
    variant("config_mismatch", 2, {"config_tag": config_tag(cfg) ^ 0x5A5A})
    variant("bad_descriptor", last, {"dst.upsample": 1})
    variant("address_range", 1, {"dst.offset": image.size - 2})
    runs.append(EngineRun("no_end", image.copy(), n - 1))
    runs.append(EngineRun("program_range", image.copy(), n, buf_bytes=(n - 1) * DESCRIPTOR_BYTES))
    runs.append(EngineRun("axi_slverr_read", image.copy(), n, poison=(DESCRIPTOR_BYTES, DESCRIPTOR_BYTES + 1),
                          expect=(ErrorCode.AXI_SLVERR, 1)))
    runs.append(EngineRun("axi_decerr_read", image.copy(), n, poison=(DESCRIPTOR_BYTES, DESCRIPTOR_BYTES + 1),
                          poison_resp="decerr", expect=(ErrorCode.AXI_DECERR, 1)))
    dst = recs[last]["dst"]
    first = dst["offset"] + dst["channel_offset"]
    runs.append(EngineRun("axi_slverr_write", image.copy(), n, poison=(first, first + 1),
                          expect=(ErrorCode.AXI_SLVERR, last)))
    runs.append(EngineRun("timeout", image.copy(), n, stall_reads=True, expect=(ErrorCode.TIMEOUT, 0)))
    runs.append(EngineRun("soft_reset", image.copy(), n, soft_reset_at=rng.randint(300, 900),
                          expect=(ErrorCode.NONE, 0)))
    return runs


def build_accel(cfg: EngineConfig, simulator: str = "verilator", watchdog_cycles: int = TEST_WATCHDOG):
    """Build (or reuse) the accelerator top's simulation (default watchdog: :data:`TEST_WATCHDOG`;
    the SimDevice ``rtl`` backend builds it with the hardware's own, ``controller.WATCHDOG_CYCLES``)."""
    import convforge.hw  # noqa: PLC0415

    return build_design("accel", component_factory=lambda: Accelerator(cfg, watchdog_cycles=watchdog_cycles),
                        simulator=simulator, params={**cfg.to_dict(), "watchdog": watchdog_cycles},
                        source_dirs=[Path(convforge.hw.__file__).parent])


def run_engine(cfg: EngineConfig, runs: list[EngineRun], *, seed: int, pause_prob: float = 0.3,
               simulator: str = "verilator", max_cycles: int = 400_000) -> float:
    """Run every image on the accelerator RTL in one simulation; fills ``result`` and ``memory`` of each.
    Returns the simulation wall time in seconds.

    Raises:
        SimulationError: the build failed, or the testbench failed (message names its log).
    """
    from convforge.errors import SimulationError

    handle = build_accel(cfg, simulator)
    with tempfile.TemporaryDirectory(prefix="cf-accel-") as tmp:
        params_runs = []
        for i, r in enumerate(runs):
            path = Path(tmp) / f"image{i}.bin"
            path.write_bytes(r.image.tobytes())
            params_runs.append({"image": str(path), "prog_offset": r.prog_offset, "prog_length": r.n,
                                "buf_bytes": r.image.size if r.buf_bytes is None else r.buf_bytes,
                                "max_cycles": max_cycles, "poison": list(r.poison) if r.poison else None,
                                "poison_resp": r.poison_resp,
                                "soft_reset_at": r.soft_reset_at, "stall_reads": r.stall_reads})
        ram = -(-(BASE_ADDR + max(r.image.size for r in runs) + 4096) // 4096) * 4096
        t0 = time.monotonic()
        res = run_testbench(handle, "convforge.sim.tb_accel", seed=seed,
                            params={"seed": seed, "pause_prob": pause_prob, "base": BASE_ADDR,
                                    "ram_bytes": ram, "runs": params_runs})
        seconds = time.monotonic() - t0
        if not res.ok:
            raise SimulationError(f"accelerator testbench failed: {res.summary()}")
        for i, r in enumerate(runs):
            r.result = json.loads((res.run_dir / f"run{i}.json").read_text())
            r.memory = np.frombuffer((res.run_dir / f"run{i}.bin").read_bytes(), dtype=np.uint8).copy()
    return seconds


def emulate(cfg: EngineConfig, run: EngineRun) -> tuple[np.ndarray, int, int]:
    """The emulator on ``run``'s image: (buffer after, fault code, failing index)."""
    mem = run.image.copy()
    if run.buf_bytes is not None:
        mem = mem[: run.buf_bytes].copy()
    try:
        Emulator(cfg).run(mem, run.prog_offset, run.n)
        code, index = 0, 0
    except EmulatorFault as exc:
        code, index = int(exc.code), int(exc.index)
    if run.buf_bytes is not None:
        full = run.image.copy()
        full[: mem.size] = mem
        mem = full
    return mem, code, index


def check_run(cfg: EngineConfig, run: EngineRun) -> list[str]:
    """Differences between the RTL and the emulator (or ``expect``) for one run."""
    problems = []
    res = run.result
    if run.soft_reset_at is None and not res.get("finished"):
        return [f"{run.name}: no irq within the cycle limit ({res})"]
    if run.soft_reset_at is not None:
        if res["busy"] or res["done"] or res["error_code"] or res["irq_status"]:
            problems.append(f"{run.name}: after soft reset busy={res['busy']} done={res['done']} "
                            f"error={res['error_code']} irq_status={res['irq_status']}")
        return problems
    want_irq = 0b01 | (0b10 if res["error_code"] else 0)
    if (not res["done"] or res["busy"] or res["irq_status"] != want_irq or res["irq_after_clear"]
            or res["error"] != (res["error_code"] != 0)):
        problems.append(f"{run.name}: status/interrupt inconsistent: {res}")
    fetched = (res["error_code"], res["error_index"]) != (ErrorCode.ADDRESS_RANGE, 0)
    if res["cycles"] <= 0 or (fetched and res["dma_rd_bytes"] < DESCRIPTOR_BYTES):
        problems.append(f"{run.name}: counters did not count: {res}")
    if run.expect is not None:
        code, index = run.expect
        if res["error_code"] != code or (index >= 0 and res["error_index"] != index):
            problems.append(f"{run.name}: error {res['error_code']} at {res['error_index']}, "
                            f"expected {code} at {index}")
        return problems  # the emulator does not model this case
    mem, code, index = emulate(cfg, run)
    if run.expect is None and (res["error_code"], res["error_index"]) != (code, index):
        problems.append(f"{run.name}: RTL error {res['error_code']} at {res['error_index']}, "
                        f"emulator {code} at {index}")
    if not np.array_equal(mem, run.memory):
        bad = np.flatnonzero(mem != run.memory)
        problems.append(f"{run.name}: {bad.size} bytes differ from the emulator, first at offsets {bad[:8].tolist()}")
    return problems


def run_compiled(cfg: EngineConfig, program: Program, image_hwc: np.ndarray, *, seed: int,
                 pause_prob: float = 0.1, max_cycles: int = 50_000_000) -> EngineRun:
    """Place ``image_hwc`` in a fresh buffer of ``program`` and run it on the accelerator RTL;
    the returned run holds the CSR figures (``result``: cycles, unit busy cycles, DMA bytes)
    and the buffer after the frame (``memory``)."""
    mem = program.new_buffer()
    program.place_image(mem, image_hwc)
    run = EngineRun("compiled", mem, program.n_descriptors, prog_offset=program.program_offset)
    run.result["sim_seconds"] = run_engine(cfg, [run], seed=seed, pause_prob=pause_prob, max_cycles=max_cycles)
    return run


def measure_descriptors(cfg: EngineConfig, program: Program, image_hwc: np.ndarray, *, seed: int = 0,
                        max_cycles: int = 50_000_000) -> list[dict[str, Any]]:
    """RTL cycles of every descriptor of ``program`` on ``image_hwc``, one at a time.

    The emulator runs the frame first; then each descriptor runs alone (followed by END) on
    the buffer the emulator left, in program order and in one simulation (so a fused
    chain's scratchpad holds what that descriptor reads), without AXI pauses. A
    descriptor's cycles are its run's CYCLES counter minus that of an END-only run, so the
    figures add up to the whole frame's cycles. The Program must be compiled with
    ``reuse_buffers=False`` (every input still in place at the end).

    Returns:
        per descriptor before END: ``{"index", "opcode" (name), "cycles", "descriptor"}``
        (``descriptor``: the decoded fields).

    Raises:
        ValueError: the Program reuses buffers.
        SimulationError: the build or the testbench failed, or a run ended with an error.
    """
    from convforge.errors import SimulationError  # noqa: PLC0415

    if program.meta.get("reuse_buffers", True):
        raise ValueError("measure_descriptors needs a Program compiled with reuse_buffers=False")
    mem = program.new_buffer()
    program.place_image(mem, image_hwc)
    n, po = program.n_descriptors, program.program_offset
    Emulator(cfg).run(mem, po, n)
    words = program.image[po:po + n * DESCRIPTOR_BYTES].reshape(n, DESCRIPTOR_BYTES)
    runs = []
    for i in range(n):           # descriptor i then END; the last run is END alone
        img = mem.copy()
        img[po:po + DESCRIPTOR_BYTES] = words[i]
        img[po + DESCRIPTOR_BYTES:po + 2 * DESCRIPTOR_BYTES] = words[n - 1]
        runs.append(EngineRun(f"descriptor{i}", img, 2 if i < n - 1 else 1, prog_offset=po))
    run_engine(cfg, runs, seed=seed, pause_prob=0.0, max_cycles=max_cycles)
    failed = [r.name for r in runs if not r.result.get("finished") or r.result.get("error_code")]
    if failed:
        raise SimulationError(f"descriptor runs did not end cleanly: {failed[:5]}")
    end = runs[-1].result["cycles"]
    records = decode(cfg, program.image, n)
    return [{"index": i, "opcode": Opcode(records[i]["opcode"]).name, "cycles": int(r.result["cycles"]) - end,
             "descriptor": records[i]} for i, r in enumerate(runs[:-1])]


def cycle_model_errors(cfg: EngineConfig, measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cycle model (:func:`convforge.sw.runtime.cycles.descriptor_figures`) beside each
    of :func:`measure_descriptors`' figures: adds ``"model"`` (cycles) and ``"error"``
    (``model / rtl - 1``) to a copy of each record."""
    from convforge.sw.runtime.cycles import descriptor_figures  # noqa: PLC0415

    out = []
    for m in measured:
        model = descriptor_figures(m["descriptor"], cfg)["cycles"]
        out.append({**m, "model": model, "error": model / m["cycles"] - 1})
    return out


def check_compiled(graph: Any, program: Program, image_hwc: np.ndarray, run: EngineRun) -> tuple[int, list[str]]:
    """Every tensor of ``graph`` in DDR (all but the intermediates of fused chains, which
    exist only in the on-chip scratchpad) read back from the RTL's buffer against the integer
    reference (:func:`~convforge.models.quant.executor.run_qgraph`) and the emulator
    (:func:`~convforge.sw.runtime.emulator.run_program`), ``np.array_equal``. The Program
    must be compiled with ``reuse_buffers=False`` (every tensor still in place at the end).
    Returns (tensors compared, problems)."""
    from convforge.models.quant.executor import run_qgraph  # noqa: PLC0415
    from convforge.sw.runtime.emulator import run_program  # noqa: PLC0415

    if program.meta.get("reuse_buffers", True):
        raise ValueError("check_compiled needs a Program compiled with reuse_buffers=False")
    problems = []
    res = run.result
    if not res.get("finished") or res.get("error_code"):
        return 0, [f"frame did not end cleanly: {res}"]
    ref = run_qgraph(graph, image_hwc, keep_all=True)
    emu = run_program(program, image_hwc)
    names = program.readable()  # a fused chain's intermediates never leave the scratchpad
    for name in names:
        rtl = program.read(run.memory, name)[None]
        if not np.array_equal(rtl, ref[name].numpy()):
            problems.append(f"tensor {name}: RTL differs from the integer reference")
        if not np.array_equal(rtl, emu[name]):
            problems.append(f"tensor {name}: RTL differs from the emulator")
    return len(names), problems


def regress(cfg: EngineConfig, *, seed: int = 0, cases: int = 3, simulator: str = "verilator",
            gap_prob: float = 0.3, stall_prob: float = 0.3) -> RegressionResult:
    """``cases`` random Programs of every descriptor kind (:func:`random_program`) plus one
    run per fault (:func:`fault_cases`) on the accelerator top; each case passes when the
    RTL's buffer and fault code equal the emulator's (see :func:`check_run`)."""
    from convforge.errors import SimulationError  # noqa: PLC0415

    rng = random.Random(seed)
    runs = [EngineRun(f"program{i}", *random_program(cfg, rng, layers=len(ALL_KINDS) + i)) for i in range(cases)]
    image, n = random_program(cfg, rng, layers=len(ALL_KINDS))
    runs += fault_cases(cfg, image, n, rng)
    runs.append(EngineRun("after_soft_reset", image, n))
    res = RegressionResult("accel")
    try:
        run_engine(cfg, runs, seed=seed, pause_prob=max(gap_prob, stall_prob), simulator=simulator)
    except SimulationError as exc:
        res.failed, res.failures = 1, [f"accel seed {seed}: {exc}"]
        return res
    for r in runs:
        problems = check_run(cfg, r)
        res.passed += not problems
        res.failed += bool(problems)
        res.failures += [f"accel seed {seed}: {p}" for p in problems]
    res.figures = {"cycles": {r.name: r.result.get("cycles") for r in runs}}
    return res
