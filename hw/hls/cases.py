"""Random QGraphs that exercise one HLS layer kind each (INTEGER_SPEC §7 coverage).

Each graph reads a uint8 image, makes the layer's inputs with 1x1 "producer"
convolutions whose requantisation is steep enough to saturate (so activations span the
full uint8 / int8 range, dilation maps hit 0 and D_max, offsets hit +-R*2**F and take
fractional values), then applies the layer under test. The integer reference
(:func:`convforge.models.quant.executor.run_qgraph`) is the oracle for every tensor.

Used by the tests (bit-exactness) and the benchmark (C-simulation time per layer kind).
"""

from __future__ import annotations

import numpy as np

from convforge.models.quant.qgraph import Layer, QGraph, TensorType

#: The layer kinds :func:`layer_case` builds (QGraph ops; conv split by shape).
KINDS = (
    "conv3x3", "depthwise3x3", "pointwise", "square_deform_dw", "bilinear_deform", "add",
    "concat", "split", "shuffle", "upsample2x", "maxpool", "maxpool_k2",
)


class _G:
    def __init__(self, rng: np.random.Generator, h: int, w: int, c_in: int = 3):
        self.rng = rng
        self.tensors = {"image": TensorType((c_in, h, w), 8, False, 1.0)}
        self.layers: list[Layer] = []

    def t(self, name: str, shape, signed: bool) -> str:
        self.tensors[name] = TensorType(tuple(int(s) for s in shape), 8, signed, 1.0)
        return name

    def conv(self, name, src, dst_shape, signed, k=1, s=1, p=0, g=1, w_bits=4, lo=None, hi=None, dst=None,
             steep=True):
        rng = self.rng
        c = self.tensors[src].shape[0]
        o = dst_shape[0]
        q = (1 << (w_bits - 1)) - 1
        weight = rng.integers(-q, q + 1, size=(o, c // g, k, k))
        weight.reshape(-1)[:2] = [-q, q]
        acc_scale = max(1, int(np.abs(weight).reshape(o, -1).sum(axis=1).max()) * 255)
        out_lo, out_hi = (-128, 127) if signed else (0, 255)
        lo = out_lo if lo is None else lo
        hi = out_hi if hi is None else hi
        params = self.requant_params(o, acc_scale, hi - lo + 1, 3.0 if steep else 1.0)
        dst = dst or name
        self.t(dst, dst_shape, signed)
        self.layers.append(Layer(name, "conv", [src], [dst], {
            "kernel": [k, k], "stride": [s, s], "padding": [p, p], "dilation": [1, 1], "groups": g,
            "w_bits": w_bits, "lo": int(lo), "hi": int(hi)}, {"weight": weight, **params}))
        return dst

    def requant_params(self, o: int, acc_scale: int, span: int, steepness: float = 3.0) -> dict:
        """Random bias/M/S with real multiplier ~ steepness * span / acc_scale (S jittered by +-1):
        with steepness 3 about a third of the outputs saturate at each end of the range."""
        rng = self.rng
        r = steepness * span / max(acc_scale, 1)
        S = np.clip(np.full(o, 14 - int(np.floor(np.log2(r))), dtype=np.int64) + rng.integers(-1, 2, size=o), 0, 62)
        return {"bias": rng.integers(-acc_scale // 4, acc_scale // 4 + 1, size=o),
                "M": rng.integers(1 << 14, 1 << 15, size=o), "S": S}

    def graph(self, outputs: dict[str, str], name: str) -> QGraph:
        g = QGraph(input="image", tensors=self.tensors, layers=self.layers, outputs=outputs, meta={"name": name})
        g.validate()
        return g


def _add_kind(g: _G, kind: str, x: str, stride: int, signed: bool, p: str) -> dict[str, str]:
    """Append one ``kind`` layer (and its producers) reading ``x``; return its heads."""
    rng = g.rng
    c, h, w = g.tensors[x].shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = f"{p}test"
    if kind == "conv3x3":
        g.conv(out, x, (7, ho, wo), True, k=3, s=stride, p=1)
    elif kind == "depthwise3x3":
        g.conv(out, x, (c, ho, wo), False, k=3, s=stride, p=1, g=c)
    elif kind == "pointwise":
        g.conv(out, x, (6, h, w), True, w_bits=8)
    elif kind == "square_deform_dw":
        d_max = 8
        dmap = g.conv(f"{p}dilation", "image", (1, ho, wo), False, s=stride, lo=0, hi=d_max)
        weight = rng.integers(-7, 8, size=(c, 1, 3, 3))
        acc = int(np.abs(weight).reshape(c, -1).sum(axis=1).max()) * 128
        g.t(out, (c, ho, wo), True)
        g.layers.append(Layer(out, "square_deform_dw", [x, dmap], [out],
                              {"stride": stride, "d_max": d_max, "w_bits": 4, "lo": -128, "hi": 127},
                              {"weight": weight, **g.requant_params(c, acc, 256)}))
    elif kind == "bilinear_deform":
        F, R = 4, 7
        groups = 1 if c % 2 else 2
        offs = g.conv(f"{p}offsets", "image", (18, ho, wo), True, s=stride, lo=-R * 16, hi=R * 16, steep=False)
        o = 6
        weight = rng.integers(-7, 8, size=(o, c // groups, 3, 3))
        acc = int(np.abs(weight).reshape(o, -1).sum(axis=1).max()) * 128 * 256
        g.t(out, (o, ho, wo), False)
        g.layers.append(Layer(out, "bilinear_deform", [x, offs], [out],
                              {"stride": stride, "padding": 1, "dilation": 1, "groups": groups, "F": F, "R": R,
                               "w_bits": 4, "lo": 0, "hi": 255},
                              {"weight": weight, **g.requant_params(o, acc, 256)}))
    elif kind == "add":
        y = g.conv(f"{p}pre2", "image", (c, h, w), signed)
        g.t(out, (c, h, w), True)
        g.layers.append(Layer(out, "add", [x, y], [out], {"lo": -128, "hi": 127},
                              {"Ma": np.array([int(rng.integers(1 << 14, 1 << 15))]),
                               "Mb": np.array([int(rng.integers(1 << 14, 1 << 15))]),
                               "S": np.array([15])}))
    elif kind == "concat":
        y = g.conv(f"{p}pre2", "image", (3, h, w), signed)
        z = g.conv(f"{p}pre3", "image", (2, h, w), signed)
        g.t(out, (c + 5, h, w), signed)
        g.layers.append(Layer(out, "concat", [x, y, z], [out]))
    elif kind == "split":
        g.t(f"{out}.0", (2, h, w), signed)
        g.t(f"{out}.1", (c - 2, h, w), signed)
        g.layers.append(Layer(out, "split", [x], [f"{out}.0", f"{out}.1"], {"sizes": [2, c - 2]}))
        return {f"{p}a": f"{out}.0", f"{p}b": f"{out}.1"}
    elif kind == "shuffle":
        y = g.conv(f"{p}pre_even", "image", (2 * c, h, w), signed)
        g.t(out, (2 * c, h, w), signed)
        g.layers.append(Layer(out, "shuffle", [y], [out], {"groups": 2}))
    elif kind == "upsample2x":
        g.t(out, (c, 2 * h, 2 * w), signed)
        g.layers.append(Layer(out, "upsample2x", [x], [out]))
    else:  # maxpool: 3x3/s/p1 (own layer) or 2x2/s2 (hls4ml's Pooling2D)
        k, s, pad = (3, stride, 1) if kind == "maxpool" else (2, 2, 0)
        g.t(out, (c, (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1), signed)
        g.layers.append(Layer(out, "maxpool", [x], [out], {"kernel": k, "stride": s, "padding": pad}))
    return {f"{p}out": out}


def layer_case(kind: str | list[str], seed: int = 0, stride: int = 1, h: int = 11, w: int = 9, c: int = 5,
               signed: bool = True) -> QGraph:
    """A random QGraph ending in one layer of ``kind`` (one of :data:`KINDS`), or in one
    layer of each kind of a list (sharing one input tensor, one head each).

    ``h``, ``w``: image size (odd by default); ``c``: channels of the tested layers' input;
    ``signed``: int8 (True) or uint8 activations into the tested layers; ``stride``: of
    the layers that have one.
    """
    kinds = [kind] if isinstance(kind, str) else list(kind)
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown layer kind {k!r}; known: {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    g = _G(rng, h, w)
    x = g.conv("pre", "image", (c, h, w), signed)
    heads: dict[str, str] = {}
    for k in kinds:
        heads.update(_add_kind(g, k, x, stride, signed, "" if len(kinds) == 1 else f"{k}."))
    return g.graph(heads, f"case-{'+'.join(kinds)}-s{stride}")


def random_images(graph: QGraph, n: int, seed: int = 0) -> np.ndarray:
    """``n`` uint8 ``(H, W, C)`` frames covering 0 and 255."""
    c, h, w = graph.tensors[graph.input].shape
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
    imgs.reshape(n, -1)[:, 0] = 0
    imgs.reshape(n, -1)[:, 1] = 255
    return imgs
