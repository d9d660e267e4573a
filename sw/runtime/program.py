"""The Program: what the accelerator executes, as one versioned file (NumPy only, no torch).

A Program is a memory image (descriptors, packed weights, requant tables) plus a JSON
header describing it: the EngineConfig it was compiled for, one entry per descriptor
(its layer, unit and predicted cycles), the memory plan (every region's byte range and
lifetime) and the tensor map (where every QGraph tensor lives, so any intermediate can be
read back), the input view, the output heads with their scales, and the predicted cycles.

File format (``.cfprog``, version :data:`FORMAT_VERSION`): a ZIP archive holding

* ``program.json`` -- the header (``format``, ``version``, ``image_sha256``, ...);
* ``image.bin``    -- the first ``image_bytes`` bytes of the buffer (descriptors and tables).

The driver allocates ``buffer_bytes`` (the whole memory plan) contiguously, copies the
image to its start, writes the image of the input, and points the engine at it. Every
address inside is a byte offset from that buffer's start (``program_offset`` is 0).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convforge.errors import ProgramFormatError, ShapeError
from convforge.hw.config import EngineConfig
from convforge.jsonio import numpy_default

FORMAT_NAME = "convforge.program"
#: 2: the ``onchip`` view bit and the ``band_top`` descriptor field (fused chains), fused
#: tensors in the tensor map, the memory plan's ``space``.
FORMAT_VERSION = 2


@dataclass(frozen=True)
class Piece:
    """Channels ``[start, start + count)`` of a tensor, stored at one affine view.

    Element ``(y, x, c)`` (``c`` counted from ``start``) is at byte ``offset +
    channel_offset + (y >> upsample) * row_stride + (x >> upsample) * pixel_stride +
    c * channel_stride`` of the buffer.
    """

    start: int
    count: int
    offset: int
    channel_offset: int
    channel_stride: int
    pixel_stride: int
    row_stride: int
    upsample: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: (bool(v) if k == "upsample" else int(v)) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class TensorPlace:
    """Where one QGraph tensor lives: shape ``(C, H, W)``, type, and its pieces."""

    name: str
    shape: tuple[int, int, int]
    signed: bool
    scale: float
    pieces: tuple[Piece, ...]
    #: Index of the descriptor after which the tensor is complete (-1: before the first,
    #: i.e. the input image).
    ready_after: int
    #: Non-empty for an intermediate of a fused chain (``"a -> b -> d"``): it lives only
    #: band by band in the on-chip scratchpad, never whole in DDR, and has no pieces.
    fused: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "signed": self.signed, "scale": self.scale,
                "ready_after": self.ready_after, "pieces": [p.to_dict() for p in self.pieces],
                "fused": self.fused}

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> TensorPlace:
        return cls(name, tuple(int(s) for s in d["shape"]), bool(d["signed"]), float(d["scale"]),
                   tuple(Piece(**{k: (bool(v) if k == "upsample" else int(v)) for k, v in p.items()})
                         for p in d["pieces"]), int(d["ready_after"]), str(d.get("fused", "")))


def read_tensor(memory: np.ndarray, place: TensorPlace) -> np.ndarray:
    """Read a tensor back from the buffer: int64 ``(C, H, W)`` (the QGraph's logical shape).

    Raises:
        ValueError: the tensor is a fused chain's intermediate (never whole in DDR).
    """
    if place.fused:
        raise ValueError(f"tensor {place.name!r} is an intermediate of the fused chain {place.fused} and never "
                         "leaves the on-chip scratchpad; compile with fuse='never' (`convforge compile --fuse never`) "
                         "to read it back")
    c, h, w = place.shape
    out = np.empty((h, w, c), dtype=np.int64)
    for p in place.pieces:
        out[:, :, p.start:p.start + p.count] = read_view(
            memory, p.offset + p.channel_offset, p.channel_stride, p.pixel_stride, p.row_stride,
            bool(p.upsample), place.signed, h, w, p.count)
    return out.transpose(2, 0, 1)


def write_tensor(memory: np.ndarray, place: TensorPlace, values: np.ndarray) -> None:
    """Write int ``(C, H, W)`` values (in the tensor's type range) into the buffer."""
    c, h, w = place.shape
    values = np.asarray(values)
    if values.shape != (c, h, w):
        raise ShapeError(f"tensor {place.name!r}: got shape {values.shape}, the Program expects {(c, h, w)}")
    hwc = values.transpose(1, 2, 0)
    for p in place.pieces:
        if p.upsample:
            raise ShapeError(f"tensor {place.name!r} is an upsampled view and cannot be written")
        write_view(memory, p.offset + p.channel_offset, p.channel_stride, p.pixel_stride, p.row_stride,
                   hwc[:, :, p.start:p.start + p.count])


def _strided(memory: np.ndarray, base: int, ch_stride: int, px_stride: int, row_stride: int,
             h: int, w: int, c: int) -> np.ndarray:
    if h <= 0 or w <= 0 or c <= 0:
        return np.zeros((max(h, 0), max(w, 0), max(c, 0)), dtype=np.uint8)
    last = base + (h - 1) * row_stride + (w - 1) * px_stride + (c - 1) * ch_stride
    if base < 0 or last >= memory.shape[0]:
        raise IndexError(f"bytes [{base}, {last}] outside the {memory.shape[0]}-byte buffer")
    return np.lib.stride_tricks.as_strided(memory[base:], shape=(h, w, c),
                                           strides=(row_stride, px_stride, ch_stride))


def read_view(memory: np.ndarray, base: int, ch_stride: int, px_stride: int, row_stride: int,
              upsample: bool, signed: bool, h: int, w: int, c: int) -> np.ndarray:
    """``(h, w, c)`` elements of a view as int16 (logical size; ``upsample`` reads 2x nearest).

    Raises:
        IndexError: the view reaches outside ``memory``.
    """
    sh, sw = ((h + 1) // 2, (w + 1) // 2) if upsample else (h, w)
    raw = _strided(memory, base, ch_stride, px_stride, row_stride, sh, sw, c)
    vals = raw.view(np.int8).astype(np.int16) if signed else raw.astype(np.int16)
    if upsample:
        vals = np.repeat(np.repeat(vals, 2, axis=0)[:h], 2, axis=1)[:, :w]
    return vals


def write_view(memory: np.ndarray, base: int, ch_stride: int, px_stride: int, row_stride: int,
               values: np.ndarray) -> None:
    """Store ``(h, w, c)`` integer ``values`` (their low 8 bits) through a view."""
    h, w, c = values.shape
    target = _strided(memory, base, ch_stride, px_stride, row_stride, h, w, c)
    target[...] = np.asarray(values).astype(np.uint8)  # integer -> uint8 keeps the low 8 bits


@dataclass
class Program:
    """A compiled network: memory image + header (see the module docstring).

    Attributes:
        config: the EngineConfig it was compiled for.
        image: uint8 bytes of descriptors and tables (offset 0 of the buffer).
        buffer_bytes: size of the whole buffer (image + activation regions), bytes.
        n_descriptors: descriptors in the image, END included.
        descriptors: per descriptor ``{"layer", "opcode", "unit", "cycles", "ddr_bytes", ...}``.
        regions: the memory plan, ``{"name", "offset", "bytes", "first", "last"}`` per region
            (first/last: descriptor indices of its lifetime).
        tensors: the tensor map, QGraph tensor name -> :class:`TensorPlace`.
        input: name of the input tensor (uint8 RGB image, ``(3, H, W)``).
        outputs: head name -> tensor name.
        cycles: the predicted per-frame figures (cycles, fps, mac_utilisation, ddr_bytes).
        meta: the QGraph's metadata plus compile options.
        report: the compiler's pass report lines.
    """

    config: EngineConfig
    image: np.ndarray
    buffer_bytes: int
    n_descriptors: int
    descriptors: list[dict[str, Any]]
    regions: list[dict[str, Any]]
    tensors: dict[str, TensorPlace]
    input: str
    outputs: dict[str, str]
    cycles: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)

    program_offset: int = 0

    # -- host helpers --------------------------------------------------------------------
    def new_buffer(self) -> np.ndarray:
        """A zeroed buffer of ``buffer_bytes`` with the image in place."""
        mem = np.zeros(self.buffer_bytes, dtype=np.uint8)
        mem[: self.image.size] = self.image
        return mem

    def place_image(self, memory: np.ndarray, image_hwc: np.ndarray) -> None:
        """Write a uint8 ``(H, W, 3)`` image into the input tensor's view."""
        place = self.tensors[self.input]
        c, h, w = place.shape
        img = np.asarray(image_hwc)
        if img.dtype != np.uint8 or img.shape != (h, w, c):
            raise ShapeError(f"the Program expects a uint8 ({h}, {w}, {c}) image, got {img.dtype} {img.shape}")
        write_tensor(memory, place, img.transpose(2, 0, 1))

    def readable(self) -> list[str]:
        """Names of the tensors :meth:`read` can read back (all but fused intermediates)."""
        return [name for name, place in self.tensors.items() if not place.fused]

    def read(self, memory: np.ndarray, tensor: str) -> np.ndarray:
        """Read QGraph tensor ``tensor`` back from the buffer as int64 ``(C, H, W)``.

        Raises:
            KeyError: no such tensor; ValueError: a fused intermediate (see :func:`read_tensor`).
        """
        if tensor not in self.tensors:
            raise KeyError(f"no tensor {tensor!r} in the Program's tensor map")
        return read_tensor(memory, self.tensors[tensor])

    # -- file format ---------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "engine_config": self.config.to_dict(),
            "image_bytes": int(self.image.size),
            "image_sha256": hashlib.sha256(self.image.tobytes()).hexdigest(),
            "buffer_bytes": int(self.buffer_bytes),
            "program_offset": int(self.program_offset),
            "n_descriptors": int(self.n_descriptors),
            "descriptors": self.descriptors,
            "regions": self.regions,
            "tensors": {k: v.to_dict() for k, v in self.tensors.items()},
            "input": self.input,
            "outputs": self.outputs,
            "cycles": self.cycles,
            "meta": self.meta,
            "report": self.report,
        }

    def save(self, path: str | Path) -> Path:
        """Write the Program file atomically (a temporary file beside it, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = json.dumps(self.header(), indent=1, default=numpy_default)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("program.json", doc)
                zf.writestr("image.bin", self.image.tobytes())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> Program:
        """Read a Program file; another format/version or a corrupt file is a ProgramFormatError."""
        path = Path(path)
        if not path.is_file():
            raise ProgramFormatError(f"{path}: no such Program file; compile one with `convforge compile`")
        try:
            with zipfile.ZipFile(path) as zf:
                doc = json.loads(zf.read("program.json"))
                blob = zf.read("image.bin")
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            raise ProgramFormatError(
                f"{path}: not a readable convforge Program ({exc}); recompile it with `convforge compile`"
            ) from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise ProgramFormatError(f"{path}: not a convforge Program (no 'format': {FORMAT_NAME!r})")
        if doc.get("version") != FORMAT_VERSION:
            raise ProgramFormatError(
                f"{path}: Program format version {doc.get('version')!r}, this convforge reads version "
                f"{FORMAT_VERSION}; recompile the QGraph with `convforge compile`"
            )
        if hashlib.sha256(blob).hexdigest() != doc.get("image_sha256") or len(blob) != doc.get("image_bytes"):
            raise ProgramFormatError(f"{path}: memory image checksum mismatch; the file is corrupt, recompile it")
        try:
            return cls(
                config=EngineConfig.from_dict(doc["engine_config"], source=str(path)),
                image=np.frombuffer(blob, dtype=np.uint8).copy(),
                buffer_bytes=int(doc["buffer_bytes"]),
                n_descriptors=int(doc["n_descriptors"]),
                descriptors=list(doc["descriptors"]),
                regions=list(doc["regions"]),
                tensors={k: TensorPlace.from_dict(k, v) for k, v in doc["tensors"].items()},
                input=str(doc["input"]),
                outputs=dict(doc["outputs"]),
                cycles=dict(doc.get("cycles", {})),
                meta=dict(doc.get("meta", {})),
                report=list(doc.get("report", [])),
                program_offset=int(doc.get("program_offset", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProgramFormatError(f"{path}: malformed Program header ({exc!r}); recompile it") from exc

