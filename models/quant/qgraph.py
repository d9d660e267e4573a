"""The QGraph: convforge's integer graph, and its on-disk format.

A QGraph is what export produces and what everything downstream reads: the integer
reference executor, the compiler, the RTL/HLS testbenches. Its semantics are
``docs/integer_spec.md``; its file format is documented in ``docs/qgraph.md``.

Tensors are logical ``(C, H, W)`` with batch 1 (memory layout is NHWC, spec §2).
Layers are kept in topological order.

Layer ops and what they hold (``attrs`` are JSON scalars/lists, ``params`` int64 arrays):

========================  ==================  =================================================
op                        inputs              attrs / params
========================  ==================  =================================================
``conv``                  x                   kernel, stride, padding, dilation (each [h, w]),
                                              groups, w_bits, lo, hi /
                                              weight (O, C/g, kh, kw), bias (O), M (O), S (O)
``square_deform_dw``      x, dilation_map     stride, d_max, w_bits, lo, hi /
                                              weight (C, 1, 3, 3), bias, M, S
``bilinear_deform``       x, offset           stride, padding, dilation, groups, F, R, w_bits,
                                              lo, hi / weight (O, C/g, 3, 3), bias, M, S
``add``                   a, b                lo, hi / Ma (1), Mb (1), S (1)
``concat``                x0, x1, ...         (channel axis)
``split``                 x                   sizes (list of channel counts); one output each
``shuffle``               x                   groups
``upsample2x``            x                   (nearest)
``maxpool``               x                   kernel, stride, padding (ints)
========================  ==================  =================================================
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convforge.errors import QGraphFormatError
from convforge.jsonio import numpy_default

FORMAT_NAME = "convforge.qgraph"
FORMAT_VERSION = 1

OPS = (
    "conv",
    "square_deform_dw",
    "bilinear_deform",
    "add",
    "concat",
    "split",
    "shuffle",
    "upsample2x",
    "maxpool",
)
#: Ops whose output is requantised from an accumulator (they carry M, S, lo, hi).
REQUANT_OPS = ("conv", "square_deform_dw", "bilinear_deform", "add")
#: Params each op must carry.
REQUIRED_PARAMS = {
    "conv": ("weight", "bias", "M", "S"),
    "square_deform_dw": ("weight", "bias", "M", "S"),
    "bilinear_deform": ("weight", "bias", "M", "S"),
    "add": ("Ma", "Mb", "S"),
}


@dataclass(frozen=True)
class TensorType:
    """An activation tensor: shape ``(C, H, W)``, ``bits``-wide, signed or not.

    ``scale`` is the real value of one LSB (``real = scale * q``, zero point 0).
    """

    shape: tuple[int, int, int]
    bits: int = 8
    signed: bool = False
    scale: float = 1.0

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


@dataclass
class Layer:
    """One QGraph node."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise QGraphFormatError(
                f"layer {self.name!r}: unknown op {self.op!r}; known ops: {', '.join(OPS)}"
            )


@dataclass
class QGraph:
    """An integer network: tensors, layers in topological order, named outputs."""

    input: str
    tensors: dict[str, TensorType]
    layers: list[Layer]
    outputs: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)

    # -- queries -------------------------------------------------------------------------
    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r} in the QGraph")

    def producer(self, tensor: str) -> Layer | None:
        for layer in self.layers:
            if tensor in layer.outputs:
                return layer
        return None

    def validate(self, source: str | None = None) -> None:
        """Check the whole graph against INTEGER_SPEC and the op table above.

        The one place the QGraph rules live: :meth:`load` and export call it, and so can
        any consumer (compiler, emulator) handed a graph built in memory. Checked: names,
        topological order, tensor types (``(C, H, W)`` positive ints, 2..16 bits, finite
        positive scale, uint8 input), per op the number of inputs/outputs, the required
        attributes with their types and ranges (no unknown ones), ``lo <= hi`` inside the
        output tensor's type, the params present with integer dtypes and the shapes implied
        by the tensor table, output shapes, weights inside ``w_bits``, bias inside int32,
        ``M`` in ``{0} | [2**14, 2**15)``, ``S`` in ``[0, 62]``, dilation/offset producers
        clamped to ``[0, D_max]`` / ``[-R*2**F, R*2**F]``, and §6: the worst-case
        ``|acc + bias| * M + 2**(S-1)`` (``|a*Ma + b*Mb| + 2**(S-1)`` for an add) below
        ``2**63`` so that the int64 reference never wraps.

        Args:
            source: file name prefixed to messages (``load`` passes the JSON path).

        Raises:
            QGraphFormatError: the first broken rule, naming the layer (or tensor) and field.
        """
        from convforge.models.quant.validate import validate_graph

        validate_graph(self, source)

    # -- file format ---------------------------------------------------------------------
    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.json`` (structure) and ``<path>.npz`` (integer params).

        ``path`` may be given with or without the ``.json`` suffix. Returns both paths.
        """
        json_path, npz_path = _paths(path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            f"{layer.name}/{key}": np.asarray(value, dtype=np.int64)
            for layer in self.layers
            for key, value in layer.params.items()
        }
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        blob = buf.getvalue()
        doc = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "params_file": npz_path.name,
            "params_sha256": hashlib.sha256(blob).hexdigest(),
            "input": self.input,
            "outputs": self.outputs,
            "meta": self.meta,
            "tensors": {
                name: {**asdict(t), "shape": list(t.shape)} for name, t in self.tensors.items()
            },
            "layers": [
                {
                    "name": layer.name,
                    "op": layer.op,
                    "inputs": layer.inputs,
                    "outputs": layer.outputs,
                    "attrs": layer.attrs,
                    "params": {k: list(np.shape(v)) for k, v in layer.params.items()},
                }
                for layer in self.layers
            ],
        }
        npz_path.write_bytes(blob)
        json_path.write_text(json.dumps(doc, indent=1, default=numpy_default) + "\n")
        return json_path, npz_path

    @classmethod
    def load(cls, path: str | Path) -> QGraph:
        """Read a QGraph written by :meth:`save`; every defect is a QGraphFormatError."""
        json_path, npz_path = _paths(path)
        if not json_path.is_file():
            raise QGraphFormatError(f"{json_path}: no such QGraph file")
        try:
            doc = json.loads(json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise QGraphFormatError(f"{json_path}: not valid JSON ({exc}); re-export the model") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise QGraphFormatError(f"{json_path}: not a convforge QGraph (no 'format': {FORMAT_NAME!r})")
        if doc.get("version") != FORMAT_VERSION:
            raise QGraphFormatError(
                f"{json_path}: QGraph format version {doc.get('version')!r}, this convforge reads "
                f"version {FORMAT_VERSION}; re-export the model with this convforge"
            )
        npz_path = json_path.parent / doc.get("params_file", npz_path.name)
        if not npz_path.is_file():
            raise QGraphFormatError(f"{npz_path}: parameter file missing (it must sit beside {json_path.name})")
        blob = npz_path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != doc.get("params_sha256"):
            raise QGraphFormatError(
                f"{npz_path}: checksum does not match {json_path.name}; the parameter file is "
                "corrupt or belongs to another export"
            )
        try:
            with np.load(io.BytesIO(blob)) as npz:
                arrays = {k: npz[k] for k in npz.files}
            # No coercion: validate() checks the types as written (a "8" is not an 8).
            tensors = {
                name: TensorType(
                    shape=tuple(t["shape"]) if isinstance(t["shape"], list) else t["shape"],
                    bits=t["bits"],
                    signed=t["signed"],
                    scale=t["scale"],
                )
                for name, t in doc["tensors"].items()
            }
            layers = []
            for entry in doc["layers"]:
                params = {}
                for key, shape in entry.get("params", {}).items():
                    arr = arrays[f"{entry['name']}/{key}"]
                    if list(arr.shape) != list(shape):
                        raise QGraphFormatError(
                            f"{npz_path}: {entry['name']}/{key} has shape {list(arr.shape)}, "
                            f"the graph says {shape}"
                        )
                    params[key] = arr
                layers.append(
                    Layer(
                        name=entry["name"],
                        op=entry["op"],
                        inputs=list(entry["inputs"]),
                        outputs=list(entry["outputs"]),
                        attrs=dict(entry.get("attrs") or {}),
                        params=params,
                    )
                )
            graph = cls(
                input=doc["input"],
                tensors=tensors,
                layers=layers,
                outputs=dict(doc["outputs"]),
                meta=dict(doc.get("meta", {})),
            )
        except QGraphFormatError as exc:
            if str(json_path.parent) in str(exc):
                raise
            raise QGraphFormatError(f"{json_path}: {exc}") from exc
        except KeyError as exc:
            raise QGraphFormatError(f"{json_path}: required field {exc} is missing; re-export the model") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise QGraphFormatError(f"{json_path}: malformed QGraph ({exc}); re-export the model") from exc
        graph.validate(str(json_path))
        return graph

    def summary(self) -> str:
        """A one-line-per-layer table: name, op, output shape, type, scale."""
        rows = [f"{'layer':<28} {'op':<18} {'output (C,H,W)':<18} {'type':<6} scale"]
        for layer in self.layers:
            for t in layer.outputs:
                tt = self.tensors[t]
                kind = ("i" if tt.signed else "u") + str(tt.bits)
                rows.append(f"{layer.name:<28} {layer.op:<18} {str(tt.shape):<18} {kind:<6} {tt.scale:.4g}")
        return "\n".join(rows)


def _paths(path: str | Path) -> tuple[Path, Path]:
    """``foo``, ``foo.json`` or ``foo.npz`` -> (``foo.json``, ``foo.npz``)."""
    p = Path(path)
    if p.suffix in (".json", ".npz"):
        p = p.with_suffix("")
    return p.parent / (p.name + ".json"), p.parent / (p.name + ".npz")

