"""Small QGraphs built directly (no torch) for compiler and emulator tests.

:class:`GraphBuilder` appends layers with random integer parameters that obey the QGraph
contract (INTEGER_SPEC §2/§3): weights inside ``w_bits``, ``2**14 <= M < 2**15``, shifts
chosen so outputs spread over the whole 8-bit range (and saturate sometimes).
"""

from __future__ import annotations

import math

import numpy as np

from convforge.models.quant.qgraph import Layer, QGraph, TensorType


class GraphBuilder:
    def __init__(self, seed: int, hw: tuple[int, int] = (16, 16)) -> None:
        self.rng = np.random.default_rng(seed)
        self.tensors = {"input": TensorType((3, *hw), 8, False, 1.0)}
        self.layers: list[Layer] = []
        self.n = 0

    def _name(self, op: str) -> str:
        self.n += 1
        return f"l{self.n}_{op}"

    def _out(self, name: str, shape, signed: bool) -> str:
        self.tensors[name] = TensorType(tuple(int(s) for s in shape), 8, signed, 0.05)
        return name

    def _requant(self, co: int, taps: int, w_bits: int, in_signed: bool, frac2: int = 0):
        q = (1 << (w_bits - 1)) - 1
        typical = math.sqrt(taps) * (q / 2 + 0.5) * (70 if in_signed else 120) * (1 << frac2)
        M = self.rng.integers(1 << 14, 1 << 15, co)
        S = np.clip(np.round(np.log2(typical * M / 90.0)).astype(np.int64) + self.rng.integers(-1, 2, co), 0, 62)
        bias = self.rng.integers(-int(typical), int(typical) + 1, co)
        return bias, M, S

    def _range(self, relu: str) -> tuple[int, int, bool]:
        if relu == "relu":
            return 0, 255, False
        if relu == "relu6":
            return 0, int(self.rng.integers(60, 200)), False
        return -128, 127, True

    def conv(self, x: str, co: int, k: int = 1, stride: int = 1, pad: int | None = None, dilation: int = 1,
             groups: int = 1, w_bits: int = 4, relu: str = "relu", lo_hi: tuple[int, int] | None = None) -> str:
        ci, h, w = self.tensors[x].shape
        pad = (k // 2) * dilation if pad is None else pad
        ho = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
        wo = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
        q = (1 << (w_bits - 1)) - 1
        weight = self.rng.integers(-q, q + 1, (co, ci // groups, k, k))
        bias, M, S = self._requant(co, ci // groups * k * k, w_bits, self.tensors[x].signed)
        lo, hi, signed = self._range(relu)
        if lo_hi is not None:
            lo, hi = lo_hi
            signed = lo < 0
        name = self._name("conv")
        out = self._out(name, (co, ho, wo), signed)
        self.layers.append(Layer(name, "conv", [x], [out], {
            "kernel": [k, k], "stride": [stride, stride], "padding": [pad, pad], "dilation": [dilation, dilation],
            "groups": groups, "w_bits": w_bits, "lo": lo, "hi": hi},
            {"weight": weight, "bias": bias, "M": M, "S": S}))
        return out

    def dw(self, x: str, stride: int = 1, dilation: int = 1, relu: str = "none") -> str:
        c = self.tensors[x].shape[0]
        return self.conv(x, c, 3, stride, dilation, dilation, groups=c, relu=relu)

    def square(self, x: str, stride: int = 1, d_max: int = 8, relu: str = "none") -> str:
        c, h, w = self.tensors[x].shape
        ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        src = self.conv(x, 1, 1, stride, 0, relu="relu", lo_hi=(0, d_max)) if True else None
        # make the map hit 0 and D_max: a big bias spread
        layer = self.layers[-1]
        layer.params["bias"] = np.array([int(self.rng.integers(-2000, 2000))])
        weight = self.rng.integers(-7, 8, (c, 1, 3, 3))
        bias, M, S = self._requant(c, 9, 4, self.tensors[x].signed)
        lo, hi, signed = self._range(relu)
        name = self._name("square")
        out = self._out(name, (c, ho, wo), signed)
        self.layers.append(Layer(name, "square_deform_dw", [x, src], [out],
                                 {"stride": stride, "d_max": d_max, "w_bits": 4, "lo": lo, "hi": hi},
                                 {"weight": weight, "bias": bias, "M": M, "S": S}))
        return out

    def bilinear(self, x: str, stride: int = 1, F: int = 4, R: int = 7, relu: str = "none") -> str:
        c, h, w = self.tensors[x].shape
        ho, wo = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
        lim = R << F
        off = self.conv(x, 18, 1, stride, 0, lo_hi=(-lim, lim))
        weight = self.rng.integers(-7, 8, (c, 1, 3, 3))
        bias, M, S = self._requant(c, 9, 4, self.tensors[x].signed, frac2=2 * F)
        lo, hi, signed = self._range(relu)
        name = self._name("bilinear")
        out = self._out(name, (c, ho, wo), signed)
        self.layers.append(Layer(name, "bilinear_deform", [x, off], [out],
                                 {"stride": stride, "padding": 1, "dilation": 1, "groups": c, "F": F, "R": R,
                                  "w_bits": 4, "lo": lo, "hi": hi},
                                 {"weight": weight, "bias": bias, "M": M, "S": S}))
        return out

    def add(self, a: str, b: str, relu: str = "relu6") -> str:
        lo, hi, signed = self._range(relu)
        name = self._name("add")
        out = self._out(name, self.tensors[a].shape, signed)
        self.layers.append(Layer(name, "add", [a, b], [out], {"lo": lo, "hi": hi},
                                 {"Ma": np.array([self.rng.integers(1 << 14, 1 << 15)]),
                                  "Mb": np.array([self.rng.integers(1 << 14, 1 << 15)]),
                                  "S": np.array([int(self.rng.integers(14, 17))])}))
        return out

    def _move(self, op: str, inputs: list[str], shapes: list, attrs: dict, signed: bool) -> list[str]:
        name = self._name(op)
        outs = [self._out(f"{name}.{i}" if len(shapes) > 1 else name, s, signed) for i, s in enumerate(shapes)]
        self.layers.append(Layer(name, op, inputs, outs, attrs))
        return outs

    def concat(self, *xs: str) -> str:
        c = sum(self.tensors[x].shape[0] for x in xs)
        _, h, w = self.tensors[xs[0]].shape
        return self._move("concat", list(xs), [(c, h, w)], {}, self.tensors[xs[0]].signed)[0]

    def split(self, x: str, sizes: list[int]) -> list[str]:
        _, h, w = self.tensors[x].shape
        return self._move("split", [x], [(s, h, w) for s in sizes], {"sizes": sizes}, self.tensors[x].signed)

    def shuffle(self, x: str, groups: int = 2) -> str:
        return self._move("shuffle", [x], [self.tensors[x].shape], {"groups": groups}, self.tensors[x].signed)[0]

    def upsample(self, x: str) -> str:
        c, h, w = self.tensors[x].shape
        return self._move("upsample2x", [x], [(c, 2 * h, 2 * w)], {}, self.tensors[x].signed)[0]

    def maxpool(self, x: str, k: int = 3, s: int = 2, p: int = 1) -> str:
        c, h, w = self.tensors[x].shape
        shape = (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        return self._move("maxpool", [x], [shape], {"kernel": k, "stride": s, "padding": p},
                          self.tensors[x].signed)[0]

    def graph(self, outputs: dict[str, str]) -> QGraph:
        g = QGraph("input", self.tensors, self.layers, outputs, {"model": "test"})
        g.validate()
        return g


def every_op_graph(seed: int = 0, hw: tuple[int, int] = (16, 16), ch: int = 19) -> QGraph:
    """A graph with every QGraph op and opcode: stem (3x3 s2, 8-bit), ShuffleNet unit with
    split/concat/shuffle, depthwise s1/s2/dilated, square and bilinear deformable, max pool,
    residual add with ReLU6, upsample feeding a conv and a concat, 8-bit 1x1 head."""
    b = GraphBuilder(seed, hw)
    x = b.conv("input", ch, 3, 2, w_bits=8)                     # stem, KxK on the PE array
    s0, s1 = b.split(x, [ch // 2, ch - ch // 2])
    y = b.conv(b.dw(b.conv(s1, 12), 1), ch - ch // 2)
    u = b.shuffle(b.concat(s0, y), groups=1)
    u = b.shuffle(b.concat(b.conv(u, 10), b.conv(u, 10)), groups=2)
    p = b.maxpool(u)
    d2 = b.dw(p, stride=2, dilation=1)
    dl = b.dw(p, stride=1, dilation=2, relu="relu")
    sq = b.square(dl, stride=1)
    bl = b.bilinear(sq, stride=2)
    r = b.add(b.conv(dl, 20, relu="none"), b.conv(sq, 20, relu="none"), relu="relu6")
    up = b.upsample(b.concat(bl, d2))
    head = b.conv(up, 5, 1, w_bits=8, relu="none")
    cat = b.concat(up, b.upsample(b.conv(bl, 3, relu="none")))
    return b.graph({"head": head, "res": r, "cat": cat})
