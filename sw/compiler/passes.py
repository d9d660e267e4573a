"""The compiler's passes: QGraph + EngineConfig -> Program.

Each pass is a small function over a :class:`Compilation` that records what it did in
``report`` (printed by ``convforge compile --report``):

``legalise``  refuse what the engine cannot run (names the layer, the limit and the
              EngineConfig field to change); INTEGER_SPEC §6 bound against ``acc_bits``.
``lower``     choose the unit and opcode of every computing layer (the stem and other
              k x k dense convolutions run on the PE array as im2col: ``k*k*C`` input
              channels, tap order ``(i, j, c)``; 8-bit-weight 1x1 layers on the PE array at
              their own ``w_bits``), and turn concat / split / channel shuffle / 2x upsample
              into addressing: producers write into channel slices (with a channel stride
              for shuffle) of a shared buffer, consumers read views, upsample is a read flag.
              Where a movement cannot be folded (a tensor two consumers want in two places,
              the graph input or a view placed into a concat) an explicit ``COPY`` is emitted.
``fuse``      find 1x1 -> 3x3 depthwise -> 1x1 chains and choose, per chain, the band of
              output rows whose two intermediates (the 1x1's rows incl. the 3x3's halo and
              the 3x3's rows) fit the on-chip scratchpad (``fuse_buffer_bytes``); ``tile``
              then emits the chain band by band with the intermediates ``onchip``.
``tile``      split PE-array passes by output channels to fit ``weight_depth`` and choose the
              band of output rows that fits ``act_buffer_bytes``.
``allocate``  the memory plan: one region per materialised buffer, lifetimes in
              descriptor indices, first-fit offsets reusing dead regions.
``emit``      pack descriptors, weight tiles and requant words into the memory image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from convforge.errors import CompileError, QGraphFormatError
from convforge.hw.config import EngineConfig
from convforge.hw.layouts import (
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
from convforge.models.quant.qgraph import Layer, QGraph
from convforge.sw.runtime.cycles import DEFAULT_DDR_GBPS, descriptor_figures, frame_figures
from convforge.sw.runtime.program import Piece, Program, TensorPlace

#: Activation regions start on this byte alignment.
REGION_ALIGN = 64
COMPUTE_OPS = ("conv", "square_deform_dw", "bilinear_deform", "add", "maxpool")
#: ``compile(fuse=...)`` / ``convforge compile --fuse``: which fusable chains are fused.
FUSE_MODES = ("auto", "always", "never")


# -- intermediate representation ------------------------------------------------------------
@dataclass
class Region:
    """A materialised NHWC buffer: ``height x width`` pixels of ``channels`` bytes.

    ``pixel_stride`` pads a pixel to whole AXI beats of ``align`` bytes, or, for pixels
    narrower than a beat, to the next power of two (so no pixel straddles a beat and a row
    is one contiguous burst: the 3-channel image takes 4 bytes per pixel, not 16)."""

    name: str
    channels: int
    height: int
    width: int
    align: int
    offset: int = -1
    first: int = 1 << 30
    last: int = -1
    #: ``"ddr"`` (the Program's buffer) or ``"scratch"`` (the on-chip fusion scratchpad).
    space: str = "ddr"

    @property
    def pixel_stride(self) -> int:
        if self.channels >= self.align:
            return -(-self.channels // self.align) * self.align
        return 1 << max(self.channels - 1, 0).bit_length()

    @property
    def row_stride(self) -> int:
        return self.width * self.pixel_stride

    @property
    def size(self) -> int:
        return self.height * self.row_stride


@dataclass(frozen=True)
class View:
    """Channel ``c`` of a view is byte ``channel_offset + c * channel_stride`` of a region's pixel."""

    region: str
    channel_offset: int
    channel_stride: int = 1
    upsample: bool = False

    def slice(self, first: int) -> View:
        return replace(self, channel_offset=self.channel_offset + first * self.channel_stride)


@dataclass(frozen=True)
class VPiece:
    start: int
    count: int
    view: View


@dataclass
class Operand:
    """``height`` rows of a view starting at row ``row`` of its region."""

    view: View
    height: int
    width: int
    channels: int
    signed: bool
    row: int = 0


@dataclass
class Step:
    """One descriptor before packing."""

    layer: str
    opcode: Opcode
    src: Operand
    dst: Operand
    src2: Operand | None = None
    fields: dict[str, int] = field(default_factory=dict)
    out_range: tuple[int, int] = (0, 0)
    weights: np.ndarray | None = None      # PE: (co, ci_eff); DW: (C, 9)
    bias: np.ndarray | None = None
    m: np.ndarray | None = None
    s: np.ndarray | None = None
    acc_bound: int = 0
    tile_rows: int = 0
    band_top: int = 0
    fused: bool = False
    note: str = ""


@dataclass
class Chain:
    """A fused 1x1 -> 3x3 depthwise -> 1x1 chain (layers ``a``, ``b``, ``d``).

    ``band`` output rows of ``b`` (= of ``d``) per band; ``halo`` rows of ``b``'s input
    above and below a band (dilation, or D_max for square-deformable); ``scratch`` the
    scratchpad bytes a band needs; ``plain`` the unfused steps (for the DDR figures);
    ``ddr`` the DDR regions the intermediates would have taken."""

    a: str
    b: str
    d: str
    band: int
    halo: int
    stride: int
    scratch: int
    mids: tuple[str, str]
    plain: list[Step] = field(default_factory=list)
    ddr: dict[str, Region] = field(default_factory=dict)
    first_step: int = 0
    last_step: int = 0


@dataclass
class Compilation:
    """State the passes share."""

    graph: QGraph
    config: EngineConfig
    ddr_gbps: float = DEFAULT_DDR_GBPS
    reuse_buffers: bool = True
    #: fuse chains into on-chip row bands (needs ``config.fuse_buffer_bytes > 0``): one of
    #: :data:`FUSE_MODES` -- "auto" where the cycle model predicts fewer cycles, "always"
    #: wherever the bands fit, "never"
    fuse: str = "auto"
    #: first layer of a fused chain -> the chain
    chains: dict[str, Chain] = field(default_factory=dict)
    report: dict[str, list[str]] = field(default_factory=dict)
    bounds: dict[str, tuple[int, int]] = field(default_factory=dict)   # layer -> (|acc+bias|, |acc|)
    opcodes: dict[str, Opcode] = field(default_factory=dict)
    regions: dict[str, Region] = field(default_factory=dict)
    place: dict[str, list[VPiece]] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    ready: dict[str, int] = field(default_factory=dict)                # tensor -> last step index
    copies: int = 0
    #: layer -> copies emitted before it: (source tensor, destination pieces); a source
    #: named ``@t`` materialises tensor ``t`` into a fresh region.
    pending: dict[str, list[tuple[str, list[VPiece]]]] = field(default_factory=dict)

    def log(self, pass_name: str, line: str) -> None:
        self.report.setdefault(pass_name, []).append(line)


# -- helpers -------------------------------------------------------------------------------
def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int | np.integer):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def _fail(layer: Layer, what: str, fix: str) -> CompileError:
    return CompileError(f"layer {layer.name!r} ({layer.op}): {what}; {fix}")


def _xmax(signed: bool) -> int:
    return 128 if signed else 255


def accumulator_bound(layer: Layer, in_signed: bool) -> tuple[int, int]:
    """Worst-case ``(|acc + bias|, |acc|)`` over output channels (INTEGER_SPEC §6), NumPy.

    ``acc`` is the sum over taps of ``|w| * max|x|`` (bilinear samples carry ``2F``
    fractional bits, so ``max|V| = max|x| * 2**(2F)``).
    """
    w = np.abs(np.asarray(layer.params["weight"], dtype=np.int64))
    per_out = w.reshape(w.shape[0], -1).sum(axis=1) * _xmax(in_signed)
    if layer.op == "bilinear_deform":
        per_out = per_out << (2 * int(layer.attrs["F"]))
    bias = np.abs(np.asarray(layer.params["bias"], dtype=np.int64))
    return int((per_out + bias).max(initial=0)), int(per_out.max(initial=0))


# -- pass 1: legalise ------------------------------------------------------------------------
def legalise(c: Compilation) -> None:
    """Validate the QGraph and refuse every layer the engine cannot run, by name."""
    g, cfg = c.graph, c.config
    try:
        g.validate()
    except QGraphFormatError as exc:
        raise CompileError(f"the QGraph is not valid: {exc}") from exc
    limit = (1 << (cfg.acc_bits - 1)) - 1
    for layer in g.layers:
        shapes = [g.tensors[t].shape for t in layer.inputs]
        out = g.tensors[layer.outputs[0]].shape
        if layer.op in ("conv", "square_deform_dw", "bilinear_deform"):
            a = layer.attrs
            w_bits = int(a["w_bits"])
            if w_bits > max(cfg.w_bits, cfg.first_w_bits):
                raise _fail(layer, f"{w_bits}-bit weights, the PE array takes at most "
                                   f"{max(cfg.w_bits, cfg.first_w_bits)}", "raise EngineConfig.first_w_bits")
            in_signed = g.tensors[layer.inputs[0]].signed
            bound, gemm = accumulator_bound(layer, in_signed)
            if bound > limit:
                raise _fail(layer, f"worst-case |acc + bias| = {bound} does not fit the {cfg.acc_bits}-bit "
                                   "accumulator (INTEGER_SPEC §6)", "raise EngineConfig.acc_bits or retrain "
                                   "with smaller weights")
            c.bounds[layer.name] = (bound, gemm)
        if layer.op == "conv":
            _legal_conv(c, layer, shapes[0], out)
        elif layer.op in ("square_deform_dw", "bilinear_deform"):
            _legal_deform(c, layer, shapes[0], out)
        elif layer.op == "maxpool":
            k, s, p = (int(layer.attrs[n]) for n in ("kernel", "stride", "padding"))
            if k > cfg.pool_k_max or s > cfg.pool_s_max:
                raise _fail(layer, f"kernel {k} / stride {s} beyond the max-pool unit's "
                                   f"{cfg.pool_k_max} / {cfg.pool_s_max}",
                            "raise EngineConfig.pool_k_max / pool_s_max")
            if p >= k:
                raise _fail(layer, f"padding {p} >= kernel {k}", "use padding < kernel")
            if shapes[0][2] > cfg.line_width:
                raise _fail(layer, f"rows of {shapes[0][2]} pixels exceed the {cfg.line_width}-pixel "
                                   "block buffer rows", "raise EngineConfig.line_width")
        elif layer.op == "add":
            if shapes[0] != shapes[1]:
                raise _fail(layer, f"operand shapes {shapes[0]} and {shapes[1]} differ", "re-export the graph")
        if layer.op in ("concat", "split", "shuffle", "upsample2x"):
            kinds = {g.tensors[t].signed for t in (*layer.inputs, *layer.outputs)}
            if len(kinds) > 1:
                raise _fail(layer, "mixes int8 and uint8 tensors; data movement cannot convert types",
                            "export every tensor of the movement with one signedness")
        if layer.op == "upsample2x" and g.tensors[layer.inputs[0]].shape[1] * 2 != out[1]:
            raise _fail(layer, "output is not twice the input", "re-export the graph")
    c.log("legalise", f"{len(g.layers)} layers accepted; largest |acc + bias| "
                      f"{max((b for b, _ in c.bounds.values()), default=0)} < 2**{cfg.acc_bits - 1}")


def _legal_conv(c: Compilation, layer: Layer, xs: tuple[int, int, int], out: tuple[int, int, int]) -> None:
    cfg, a = c.config, layer.attrs
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (_pair(a[n]) for n in ("kernel", "stride", "padding", "dilation"))
    if kh != kw or sh != sw or ph != pw or dh != dw:
        raise _fail(layer, f"non-square kernel/stride/padding/dilation {a['kernel']}/{a['stride']}/"
                           f"{a['padding']}/{a['dilation']}", "the descriptor carries one value for both axes")
    groups = int(a["groups"])
    if groups == 1:
        if kh * kh * xs[0] > cfg.max_channels:
            # output channels are tiled, but every input channel of a pixel must sit in the pixel buffer
            raise _fail(layer, f"{kh * kh * xs[0]} input channels (k*k*C) per pixel exceed the PE array's "
                               f"{cfg.max_channels}", "raise EngineConfig.max_channels")
        if math.ceil(kh * kh * xs[0] / cfg.pe_ci) > cfg.weight_depth:
            raise _fail(layer, f"one output group needs {math.ceil(kh * kh * xs[0] / cfg.pe_ci)} weight tiles, "
                               f"the weight buffer holds {cfg.weight_depth}", "raise EngineConfig.weight_depth")
        if kh == 1 and ph == 0 and dh == 1:
            c.opcodes[layer.name] = Opcode.CONV_PW
        else:
            if kh > 15 or sh > 15 or ph > 15 or dh > 15:
                raise _fail(layer, "kernel/stride/padding/dilation above 15", "the descriptor fields are 4 bits")
            c.opcodes[layer.name] = Opcode.CONV_KXK
        return
    if groups == xs[0] == out[0]:
        if "regular" not in cfg.dw_modes:
            raise _fail(layer, "a depthwise layer, but the engine has no regular depthwise mode",
                        "add 'regular' to EngineConfig.dw_modes")
        if kh != 3:
            raise _fail(layer, f"depthwise kernel {kh}x{kw}; the depthwise unit is 3x3 only", "use 3x3 kernels")
        if sh not in (1, 2):
            raise _fail(layer, f"depthwise stride {sh}; the unit runs strides 1 and 2", "use stride 1 or 2")
        if not 1 <= dh <= cfg.d_max or ph != dh:
            raise _fail(layer, f"dilation {dh} with padding {ph}; the unit pads by the dilation, "
                               f"1..{cfg.d_max}", "use padding = dilation <= EngineConfig.d_max")
        _line(layer, xs, cfg)
        c.opcodes[layer.name] = Opcode.DW_REGULAR
        return
    raise _fail(layer, f"grouped convolution with {groups} groups of {xs[0]} channels; the engine runs "
                       "dense (groups=1) and depthwise (groups=C=O) convolutions only",
                "split it into dense convolutions and a concat")


def _line(layer: Layer, xs: tuple[int, int, int], cfg: EngineConfig) -> None:
    if xs[2] > cfg.line_width:
        raise _fail(layer, f"rows of {xs[2]} pixels exceed the {cfg.line_width}-pixel line buffer",
                    "raise EngineConfig.line_width or use a smaller input")


def _legal_deform(c: Compilation, layer: Layer, xs: tuple[int, int, int], out: tuple[int, int, int]) -> None:
    cfg, a = c.config, layer.attrs
    stride = _pair(a["stride"])[0]
    if stride not in (1, 2):
        raise _fail(layer, f"stride {stride}; the depthwise unit runs strides 1 and 2", "use stride 1 or 2")
    _line(layer, xs, cfg)
    if layer.op == "square_deform_dw":
        if "square" not in cfg.dw_modes:
            raise _fail(layer, "square deformable layer, but the engine has no square mode",
                        "add 'square' to EngineConfig.dw_modes")
        if int(a["d_max"]) > cfg.d_max:
            raise _fail(layer, f"D_max {a['d_max']} exceeds the engine's {cfg.d_max}", "raise EngineConfig.d_max")
        c.opcodes[layer.name] = Opcode.DW_SQUARE
        return
    if "bilinear" not in cfg.dw_modes:
        raise _fail(layer, "bilinear deformable layer, but the engine has no bilinear mode",
                    "add 'bilinear' to EngineConfig.dw_modes")
    if not int(a["groups"]) == xs[0] == out[0]:
        raise _fail(layer, f"bilinear deformable with {a['groups']} groups; the depthwise unit runs it "
                           "depthwise only (groups = C = O)", "use a depthwise deformable layer")
    if _pair(a["padding"])[0] != 1 or _pair(a["dilation"])[0] != 1:
        raise _fail(layer, "bilinear deformable with padding/dilation other than 1", "use padding 1, dilation 1")
    if int(a["F"]) != cfg.frac_bits or int(a["R"]) > cfg.offset_range:
        raise _fail(layer, f"offsets with F={a['F']}, R={a['R']}; the engine has F={cfg.frac_bits}, "
                           f"R={cfg.offset_range}", "set EngineConfig.frac_bits / offset_range to match")
    c.opcodes[layer.name] = Opcode.DW_BILINEAR


# -- pass 2: lower (unit choice + addressing) ---------------------------------------------------
def _shape(c: Compilation, t: str) -> tuple[int, int, int]:
    return c.graph.tensors[t].shape


def _new_region(c: Compilation, t: str, channels: int | None = None) -> list[VPiece]:
    ch, h, w = _shape(c, t)
    name = f"r{len(c.regions)}:{t}"
    c.regions[name] = Region(name, ch if channels is None else channels, h, w, c.config.axi_data_bits // 8)
    return [VPiece(0, ch, View(name, 0))]


def _slice(pieces: list[VPiece], first: int, count: int) -> list[VPiece]:
    out = []
    for p in pieces:
        lo, hi = max(first, p.start), min(first + count, p.start + p.count)
        if lo < hi:
            out.append(VPiece(lo - first, hi - lo, p.view.slice(lo - p.start)))
    return out


def _locate(pieces: list[VPiece], ch: int) -> tuple[View, int]:
    for p in pieces:
        if p.start <= ch < p.start + p.count:
            return p.view, p.view.channel_offset + (ch - p.start) * p.view.channel_stride
    raise KeyError(ch)


def _permuted(pieces: list[VPiece], mapping: list[int]) -> list[VPiece]:
    """Pieces of a tensor whose channel ``i`` is channel ``mapping[i]`` of ``pieces``, merged
    into affine runs."""
    out: list[VPiece] = []
    run: list[Any] = []  # [start, count, view, first_offset, stride]
    for i, src in enumerate(mapping):
        view, off = _locate(pieces, src)
        if run and run[2].region == view.region and run[2].upsample == view.upsample:
            expect = run[3] + run[1] * run[4] if run[1] > 1 else None
            stride = off - run[3] if run[1] == 1 else run[4]
            if (run[1] == 1 and 0 < stride < 256) or (run[1] > 1 and off == expect):
                run[1] += 1
                run[4] = stride
                continue
        if run:
            out.append(VPiece(run[0], run[1], View(run[2].region, run[3], run[4], run[2].upsample)))
        run = [i, 1, view, off, 1]
    if run:
        out.append(VPiece(run[0], run[1], View(run[2].region, run[3], run[4], run[2].upsample)))
    return out


def lower(c: Compilation) -> None:
    """Choose opcodes (done by legalise) and place every tensor (views, regions, copies)."""
    g = c.graph
    writable = {t for layer in g.layers if layer.op in (*COMPUTE_OPS, "concat", "shuffle") for t in layer.outputs}
    pending = c.pending

    def request(t: str, pieces: list[VPiece], at: str) -> None:
        if t in c.place or t not in writable:
            pending.setdefault(at, []).append((t, pieces))
        else:
            c.place[t] = pieces

    # backward: consumers decide where concat and shuffle inputs are written
    for layer in reversed(g.layers):
        if layer.op in (*COMPUTE_OPS, "concat", "shuffle"):
            for t in layer.outputs:
                if t not in c.place:
                    c.place[t] = _new_region(c, t)
        if layer.op == "concat":
            out = c.place[layer.outputs[0]]
            first = 0
            for t in layer.inputs:
                n = _shape(c, t)[0]
                request(t, _slice(out, first, n), layer.name)
                first += n
        elif layer.op == "shuffle":
            groups = int(layer.attrs["groups"])
            ch = _shape(c, layer.inputs[0])[0]
            per = ch // groups
            # input channel gi*per + j is output channel j*groups + gi
            mapping = [(i % per) * groups + i // per for i in range(ch)]
            request(layer.inputs[0], _permuted(c.place[layer.outputs[0]], mapping), layer.name)
    # forward: views of split and upsample; the input; materialise what a unit cannot read
    if g.input not in c.place:
        c.place[g.input] = _new_region(c, g.input)
    for layer in g.layers:
        if layer.op == "split":
            first = 0
            for t, n in zip(layer.outputs, layer.attrs["sizes"], strict=True):
                c.place[t] = _slice(c.place[layer.inputs[0]], first, int(n))
                first += int(n)
        elif layer.op == "upsample2x":
            src = c.place[layer.inputs[0]]
            if len(src) != 1 or src[0].view.upsample:
                tmp = _new_region(c, layer.inputs[0])
                pending.setdefault(layer.name, []).append(("@" + layer.inputs[0], tmp))
                c.place["@" + layer.inputs[0]] = tmp
                src = tmp
            c.place[layer.outputs[0]] = [VPiece(0, src[0].count, replace(src[0].view, upsample=True))]
        elif layer.op in COMPUTE_OPS:
            for t in layer.inputs:
                if len(c.place[t]) != 1:
                    tmp = _new_region(c, t)
                    pending.setdefault(layer.name, []).append(("@" + t, tmp))
                    c.place["@" + t] = tmp
    n_views = sum(layer.op in ("concat", "split", "shuffle", "upsample2x") for layer in g.layers)
    n_copy = sum(len(v) for v in pending.values())
    units = {}
    for op in c.opcodes.values():
        units[op.name] = units.get(op.name, 0) + 1
    c.log("lower", "opcodes: " + ", ".join(f"{k} x{v}" for k, v in sorted(units.items())))
    c.log("lower", f"{n_views} concat/split/shuffle/upsample layers folded into addressing; "
                   f"{n_copy} explicit copies (movements addressing cannot fold)")


# -- emitting steps (used by tile) ---------------------------------------------------------------
def _operand(c: Compilation, t: str, piece: VPiece) -> Operand:
    ch, h, w = _shape(c, t.lstrip("@"))
    return Operand(piece.view, h, w, piece.count, c.graph.tensors[t.lstrip("@")].signed)


def _input_piece(c: Compilation, t: str) -> tuple[str, VPiece]:
    key = "@" + t if "@" + t in c.place else t
    return key, c.place[key][0]


def _copy_steps(c: Compilation, layer_name: str, src: str, dst: list[VPiece]) -> None:
    real = src.lstrip("@") if src.startswith("@") else src
    src_pieces = c.place[real]
    for d in dst:
        for s in _slice(src_pieces, d.start, d.count):
            ch, h, w = _shape(c, real)
            signed = c.graph.tensors[real].signed
            target = d.view.slice(s.start)
            c.steps.append(Step(layer_name, Opcode.COPY, Operand(s.view, h, w, s.count, signed),
                                Operand(target, h, w, s.count, signed),
                                fields={"kernel": 1, "stride": 1}, note=f"copy {real}"))
            c.copies += 1


def tile(c: Compilation) -> None:
    """Emit one step per (layer, output piece, output-channel tile); choose row bands."""
    g, cfg = c.graph, c.config
    pending = c.pending
    c.ready[g.input] = -1
    n_split = 0
    in_chain = {name for ch in c.chains.values() for name in (ch.b, ch.d)}
    for layer in g.layers:
        for src, dst in pending.get(layer.name, []):
            _copy_steps(c, layer.name, src, dst)
        if layer.name in c.chains:
            n_split += _chain_steps(c, c.chains[layer.name])
        elif layer.op in COMPUTE_OPS and layer.name not in in_chain:
            before = len(c.steps)
            n_split += _layer_all_steps(c, layer)
            if len(c.steps) - before > 1:
                c.log("tile", f"{layer.name}: {len(c.steps) - before} passes")
        done = len(c.steps) - 1
        for t in layer.outputs:
            deps = [c.ready.get(i, -1) for i in layer.inputs]
            c.ready[t] = max([done] + deps) if layer.op not in COMPUTE_OPS else done
    for step in c.steps:
        step.tile_rows = _band_rows(step, cfg)
    c.log("tile", f"{len(c.steps)} passes ({n_split} extra output-channel tiles for weight_depth="
                  f"{cfg.weight_depth} / max_channels={cfg.max_channels}); act_buffer_bytes="
                  f"{cfg.act_buffer_bytes} per half")


def _layer_all_steps(c: Compilation, layer: Layer) -> int:
    """Append every step of one computing layer; returns the extra output-channel tiles."""
    n_split = 0
    for piece in c.place[layer.outputs[0]]:
        # a pass carries at most max_channels channels (PE layers tile finer for weight_depth)
        for first in range(0, piece.count, c.config.max_channels):
            count = min(c.config.max_channels, piece.count - first)
            n_split += _layer_steps(c, layer, VPiece(piece.start + first, count, piece.view.slice(first)))
            n_split += first > 0
    return n_split


def _chain_steps(c: Compilation, ch: Chain) -> int:
    """Append a fused chain band by band (:func:`_banded`), or, with ``fuse="auto"`` when
    the cycle model predicts no gain for any band height tried, unfused (the chain is then
    dropped from ``c.chains``). Returns the extra output-channel tiles."""
    layers = {layer.name: layer for layer in c.graph.layers}
    start = len(c.steps)
    n_split = sum(_layer_all_steps(c, layers[name]) for name in (ch.a, ch.b, ch.d))
    ch.plain = c.steps[start:]
    del c.steps[start:]
    name = f"{ch.a} -> {ch.b} -> {ch.d}"
    mid_regions = [c.place[t][0].view.region for t in ch.mids]
    h_out = c.regions[mid_regions[1]].height
    fewest = -(-h_out // ch.band)
    # band heights tried: the largest that fits, and equal bands for 1-2 more bands
    heights = [ch.band] + ([] if c.fuse == "always" else
                           sorted({-(-h_out // k) for k in range(fewest, min(fewest + 3, h_out) + 1)} - {ch.band},
                                  reverse=True))
    options = [(_predicted(c, steps, regions), n, steps, regions)
               for n in heights for steps, regions in [_banded(c, ch, n)]]
    cycles, band, steps, regions = min(options, key=lambda o: (o[0], -o[1]))
    if c.fuse == "auto":
        plain = _predicted(c, ch.plain, c.regions)
        if cycles >= plain:
            c.log("tile", f"{name}: not fused (cycle model: {cycles} cycles in bands of {band} rows, "
                          f"{plain} unfused)")
            c.steps.extend(ch.plain)
            del c.chains[ch.a]
            return n_split
    ch.band = band
    ch.ddr = {name: c.regions.pop(name) for name in mid_regions}
    for t, region in zip(ch.mids, regions, strict=True):
        c.regions[region.name] = region
        c.place[t] = [replace(p, view=replace(p.view, region=region.name)) for p in c.place[t]]
    ch.first_step = len(c.steps)
    c.steps.extend(steps)
    ch.last_step = len(c.steps) - 1
    ch.scratch = sum(_region_bytes(r.height, r) for r in regions)
    c.log("tile", f"{name}: {len(steps)} fused passes ({len(steps) // len(ch.plain)} bands of {band} rows x "
                  f"{len(ch.plain)})")
    return n_split


def _banded(c: Compilation, ch: Chain, band: int) -> tuple[list[Step], tuple[Region, Region]]:
    """The chain's steps for bands of ``band`` output rows ``[y0, y1)`` of the 3x3: the first
    1x1 on input rows ``[r0, r1)`` (the band plus the halo, clipped to the image) DDR ->
    scratch, the 3x3 scratch -> scratch (``band_top = y0*s - r0``), the last 1x1 scratch
    -> DDR rows ``[y0, y1)``; and the two scratchpad regions."""
    ra, rb = (c.regions[c.place[t][0].view.region] for t in ch.mids)
    h_in, h_out = ra.height, rb.height
    rows_a = min(h_in, (band - 1) * ch.stride + 2 * ch.halo + 1)
    sa = Region(f"s:{ch.mids[0]}", ra.channels, rows_a, ra.width, ra.align, space="scratch")
    sb = Region(f"s:{ch.mids[1]}", rb.channels, band, rb.width, rb.align, space="scratch")

    def onchip(opd: Operand, region: Region, height: int) -> Operand:
        return replace(opd, view=replace(opd.view, region=region.name), height=height, row=0)

    steps = []
    for y0 in range(0, h_out, band):
        y1 = min(h_out, y0 + band)
        r0, r1 = max(0, y0 * ch.stride - ch.halo), min(h_in, (y1 - 1) * ch.stride + ch.halo + 1)
        note = f"fused band: rows {y0}..{y1 - 1} (input rows {r0}..{r1 - 1})"
        for st in ch.plain:
            if st.layer == ch.a:
                new = replace(st, src=replace(st.src, row=st.src.row + r0, height=r1 - r0),
                              dst=onchip(st.dst, sa, r1 - r0))
            elif st.layer == ch.b:
                src2 = None if st.src2 is None else replace(st.src2, row=st.src2.row + y0, height=y1 - y0)
                new = replace(st, src=onchip(st.src, sa, r1 - r0), dst=onchip(st.dst, sb, y1 - y0), src2=src2,
                              band_top=y0 * ch.stride - r0)
            else:
                new = replace(st, src=onchip(st.src, sb, y1 - y0), dst=replace(st.dst, row=st.dst.row + y0,
                                                                               height=y1 - y0))
            steps.append(replace(new, fused=True, note=note))
    return steps, (sa, sb)


def _predicted(c: Compilation, steps: list[Step], regions: dict[str, Region] | tuple[Region, ...]) -> int:
    """Cycle-model cycles of ``steps`` (their bands of the activation buffer included)."""
    if isinstance(regions, tuple):
        regions = {**c.regions, **{r.name: r for r in regions}}
    regions = _as_placed(regions)
    records = [_record(regions, replace(st, tile_rows=_band_rows(st, c.config)), 0, 0, 0, 0) for st in steps]
    return sum(descriptor_figures(r, c.config, c.ddr_gbps)["cycles"] for r in _fill_views(records))


def _as_placed(regions: dict[str, Region]) -> dict[str, Region]:
    """``regions`` with every region not yet placed (offset -1) at offset 0, for predictions:
    :func:`_first_fit` places every region on a :data:`REGION_ALIGN` boundary (a multiple of
    any AXI beat), so offset 0 gives each span the beat alignment it will have; -1 would
    misalign every span and overcharge it a beat bubble."""
    return {name: r if r.offset >= 0 else replace(r, offset=0) for name, r in regions.items()}


def _band_rows(step: Step, cfg: EngineConfig) -> int:
    """Output rows per band: the band's input rows and output rows each fit one half of the
    activation buffer (at least one row; a row is streamed pixel by pixel if it does not)."""
    ho = step.dst.height
    if ho == 0:
        return 0
    k, s = step.fields.get("kernel", 1) or 1, step.fields.get("stride", 1) or 1
    in_row, out_row = step.src.width * step.src.channels, step.dst.width * step.dst.channels
    rows = min(ho, cfg.act_buffer_bytes // max(out_row, 1))
    while rows > 1 and ((rows - 1) * s + k) * in_row > cfg.act_buffer_bytes:
        rows -= 1
    return max(rows, 1)


def _layer_steps(c: Compilation, layer: Layer, out_piece: VPiece) -> int:
    cfg = c.config
    op = c.opcodes.get(layer.name)
    a, p = layer.attrs, layer.params
    out_t = layer.outputs[0]
    co0, cn = out_piece.start, out_piece.count
    dst = _operand(c, out_t, out_piece)
    in_key, in_piece = _input_piece(c, layer.inputs[0])
    base = {"lo": int(a.get("lo", 0)), "hi": int(a.get("hi", 0))}
    extra = 0
    if layer.op == "conv" and op in (Opcode.CONV_PW, Opcode.CONV_KXK):
        k, s, pd, dl = (_pair(a[n])[0] for n in ("kernel", "stride", "padding", "dilation"))
        w = np.asarray(p["weight"], dtype=np.int64)
        wm = w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)   # (O, k*k*C), tap order (i, j, c)
        ci_eff = wm.shape[1]
        # legalise guarantees one output group fits: ceil(ci_eff / pe_ci) <= weight_depth
        co_tile = min(cfg.weight_depth // math.ceil(ci_eff / cfg.pe_ci) * cfg.pe_co, cfg.max_channels)
        first = True
        for t0 in range(co0, co0 + cn, co_tile):
            tn = min(co_tile, co0 + cn - t0)
            sub = VPiece(t0 - co0, tn, out_piece.view.slice(t0 - co0))
            c.steps.append(Step(layer.name, op, _operand(c, in_key, in_piece), _operand(c, out_t, sub),
                                fields={**base, "kernel": k, "stride": s, "pad": pd, "dilation": dl,
                                        "w_bits": int(a["w_bits"])},
                                out_range=(t0, t0 + tn), weights=wm[t0:t0 + tn], bias=p["bias"][t0:t0 + tn],
                                m=p["M"][t0:t0 + tn], s=p["S"][t0:t0 + tn], acc_bound=c.bounds[layer.name][0]))
            extra += 0 if first else 1
            first = False
        return extra
    src = _operand(c, in_key, VPiece(0, cn, in_piece.view.slice(co0)))
    fields = dict(base)
    src2 = None
    weights = bias = m = s = None
    if layer.op in ("conv", "square_deform_dw", "bilinear_deform"):
        weights = np.asarray(p["weight"], dtype=np.int64).reshape(-1, 9)[co0:co0 + cn]
        bias, m, s = p["bias"][co0:co0 + cn], p["M"][co0:co0 + cn], p["S"][co0:co0 + cn]
        fields.update(kernel=3, stride=_pair(a["stride"])[0], w_bits=int(a["w_bits"]))
        if layer.op == "conv":
            fields.update(pad=_pair(a["padding"])[0], dilation=_pair(a["dilation"])[0])
        elif layer.op == "square_deform_dw":
            fields.update(pad=0, dilation=1, d_max=int(a["d_max"]))
            k2, piece2 = _input_piece(c, layer.inputs[1])
            src2 = _operand(c, k2, piece2)
        else:
            fields.update(pad=_pair(a["padding"])[0], dilation=_pair(a["dilation"])[0],
                          frac_bits=int(a["F"]), offset_range=int(a["R"]))
            k2, piece2 = _input_piece(c, layer.inputs[1])
            src2 = _operand(c, k2, piece2)
    elif layer.op == "maxpool":
        fields.update(kernel=int(a["kernel"]), stride=int(a["stride"]), pad=int(a["padding"]), lo=0, hi=0)
        op = Opcode.MAXPOOL
    elif layer.op == "add":
        k2, piece2 = _input_piece(c, layer.inputs[1])
        src2 = _operand(c, k2, VPiece(0, cn, piece2.view.slice(co0)))
        fields.update(kernel=1, stride=1, add_ma=int(np.ravel(p["Ma"])[0]), add_mb=int(np.ravel(p["Mb"])[0]),
                      add_s=int(np.ravel(p["S"])[0]))
        op = Opcode.ADD
    c.steps.append(Step(layer.name, op, src, dst, src2, fields, (co0, co0 + cn), weights, bias, m, s,
                        c.bounds.get(layer.name, (0, 0))[0]))
    return 0


# -- pass: fuse ------------------------------------------------------------------------------------
def _region_bytes(rows: int, region: Region) -> int:
    return -(-rows * region.row_stride // REGION_ALIGN) * REGION_ALIGN


def _not_fusable(c: Compilation, a: Layer, b: Layer, d: Layer, consumers: dict[str, int]) -> str:
    """Why the chain cannot run fused ("" when it can)."""
    outputs = set(c.graph.outputs.values())
    for t in (a.outputs[0], b.outputs[0]):
        if consumers.get(t) != 1 or t in outputs:
            return f"{t} has other readers"
        if len(c.place[t]) != 1 or c.regions[c.place[t][0].view.region].channels != _shape(c, t)[0]:
            return f"{t} shares its buffer (concat/shuffle placement)"
    for layer in (a, d):
        if _pair(layer.attrs["stride"])[0] != 1:
            return f"{layer.name} has stride {_pair(layer.attrs['stride'])[0]}"
    if c.pending.get(b.name) or c.pending.get(d.name):
        return "a copy is needed inside the chain"
    for t in (a.inputs[0], *b.inputs[1:]):
        key, piece = _input_piece(c, t)
        if len(c.place[key]) != 1 or piece.view.upsample:
            return f"{t} is read through a 2x upsample or from several pieces"
    return ""


def fuse(c: Compilation) -> None:
    """Choose the 1x1 -> 3x3 depthwise -> 1x1 chains to fuse and their band heights.

    A chain fuses when its intermediates have one reader each, both 1x1 layers have
    stride 1, no copy sits inside it and its inputs are plain views. Per band of ``n``
    output rows of the 3x3 (stride ``s``, halo ``h`` = dilation, or the layer's D_max for
    square-deformable) the scratchpad holds ``min(H, (n-1)*s + 2h + 1)`` rows of the
    expanded tensor and ``n`` rows of the 3x3's output (each rounded up to 64 bytes); the
    band is the largest ``n`` for which both fit ``EngineConfig.fuse_buffer_bytes``. A chain
    whose single-row band does not fit is reported with the bytes it needs.
    """
    cfg = c.config
    consumers: dict[str, int] = {}
    for layer in c.graph.layers:
        for t in layer.inputs:
            consumers[t] = consumers.get(t, 0) + 1
    layers = c.graph.layers
    found = 0
    for a, b, d in zip(layers, layers[1:], layers[2:], strict=False):
        if not (c.opcodes.get(a.name) == Opcode.CONV_PW
                and c.opcodes.get(b.name) in (Opcode.DW_REGULAR, Opcode.DW_SQUARE)
                and c.opcodes.get(d.name) == Opcode.CONV_PW and b.inputs[0] == a.outputs[0]
                and d.inputs[0] == b.outputs[0]):
            continue
        found += 1
        name = f"{a.name} -> {b.name} -> {d.name}"
        if c.fuse == "never" or cfg.fuse_buffer_bytes == 0:
            continue
        why = _not_fusable(c, a, b, d, consumers)
        if why:
            c.log("fuse", f"{name}: not fused ({why})")
            continue
        square = c.opcodes[b.name] == Opcode.DW_SQUARE
        halo = int(b.attrs["d_max"]) if square else _pair(b.attrs["dilation"])[0]
        stride = _pair(b.attrs["stride"])[0]
        ra = c.regions[c.place[a.outputs[0]][0].view.region]
        rb = c.regions[c.place[b.outputs[0]][0].view.region]

        def need(n: int, ra: Region = ra, rb: Region = rb, halo: int = halo, stride: int = stride) -> int:
            return _region_bytes(min(ra.height, (n - 1) * stride + 2 * halo + 1), ra) + _region_bytes(n, rb)

        band = 0
        for n in range(rb.height, 0, -1):
            if need(n) <= cfg.fuse_buffer_bytes:
                band = n
                break
        if band == 0:
            c.log("fuse", f"{name}: not fused (one output row needs {need(1)} B of scratchpad, "
                          f"EngineConfig.fuse_buffer_bytes = {cfg.fuse_buffer_bytes})")
            continue
        c.chains[a.name] = Chain(a.name, b.name, d.name, band, halo, stride, need(band),
                                 (a.outputs[0], b.outputs[0]))
        c.log("fuse", f"{name}: fits in bands of up to {band} rows (halo {halo}, scratchpad {need(band)} B)")
    if c.fuse not in FUSE_MODES:
        raise CompileError(f"fuse={c.fuse!r}: choose one of {', '.join(FUSE_MODES)}")
    if c.fuse == "never":
        c.log("fuse", f"{found} 1x1 -> 3x3 -> 1x1 chains; fusion disabled (fuse='never' / --fuse never)")
    elif cfg.fuse_buffer_bytes == 0:
        c.log("fuse", f"{found} 1x1 -> 3x3 -> 1x1 chains; none fused: the engine has no scratchpad "
                      "(EngineConfig.fuse_buffer_bytes = 0)")
    else:
        c.log("fuse", f"{len(c.chains)} of {found} 1x1 -> 3x3 -> 1x1 chains fit the scratchpad "
                      f"({cfg.fuse_buffer_bytes} B) in row bands"
                      + ("; 'auto': tile fuses those the cycle model predicts faster" if c.fuse == "auto" else ""))


# -- pass: allocate ----------------------------------------------------------------------------------
def allocate(c: Compilation, image_bytes: int) -> int:
    """Lifetimes of the regions in descriptor indices, then first-fit offsets after the image.

    Returns the buffer size in bytes.
    """
    n = len(c.steps)
    def touch(view: View, index: int) -> None:
        r = c.regions[view.region]
        r.first, r.last = min(r.first, index), max(r.last, index)

    for i, step in enumerate(c.steps):
        for opd in (step.src, step.src2, step.dst):
            if opd is not None:
                touch(opd.view, i)
    for t, pieces in c.place.items():
        if t.startswith("@") or any(c.regions[p.view.region].space == "scratch" for p in pieces):
            continue
        ready = c.ready.get(t, -1)
        end = n if t in c.graph.outputs.values() or t == c.graph.input else ready
        for pc in pieces:
            touch(pc.view, max(ready, 0) if t != c.graph.input else -1)
            touch(pc.view, end)
    base = -(-image_bytes // REGION_ALIGN) * REGION_ALIGN
    ddr = [r for r in c.regions.values() if r.space == "ddr"]
    top = _first_fit(ddr, base, c.reuse_buffers)
    total = sum(r.size for r in ddr)
    c.log("allocate", f"{len(ddr)} regions, {total} bytes of activations packed into {top - base} bytes "
                      f"({'with' if c.reuse_buffers else 'without'} reuse)")
    scratch = [r for r in c.regions.values() if r.space == "scratch"]
    if scratch:
        # the scratchpad is always reused: each fused chain needs it only while it runs
        s_top = _first_fit(scratch, 0, True)
        if s_top > c.config.fuse_buffer_bytes:  # fuse sized every band to fit: a compiler bug
            raise CompileError(f"internal: fused bands need {s_top} B of scratchpad, "
                               f"fuse_buffer_bytes = {c.config.fuse_buffer_bytes}")
        c.log("allocate", f"{len(scratch)} scratchpad regions, at most {s_top} of "
                          f"{c.config.fuse_buffer_bytes} B live")
    return top


def _first_fit(regions: list[Region], base: int, reuse: bool) -> int:
    """First-fit offsets from ``base``, largest first; a region may reuse the bytes of one
    whose lifetime (descriptor indices) does not intersect its own when ``reuse``.
    Returns the end of the highest region."""
    placed: list[Region] = []
    top = base
    for r in sorted(regions, key=lambda r: (-r.size, r.name)):
        if r.last < 0 and r.first >= (1 << 30):
            r.first, r.last = 0, 0
        size = -(-r.size // REGION_ALIGN) * REGION_ALIGN
        busy = sorted((q.offset, q.offset + -(-q.size // REGION_ALIGN) * REGION_ALIGN) for q in placed
                      if not reuse or (q.first <= r.last and r.first <= q.last))
        offset = base
        for lo, hi in busy:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        r.offset = offset
        placed.append(r)
        top = max(top, offset + size)
    return top


# -- pass: emit -----------------------------------------------------------------------------------
def _view_fields(regions: dict[str, Region], opd: Operand | None) -> dict[str, int]:
    if opd is None:
        return {}
    r = regions[opd.view.region]
    return {"offset": r.offset + opd.row * r.row_stride, "channel_offset": opd.view.channel_offset,
            "channel_stride": opd.view.channel_stride, "pixel_stride": r.pixel_stride, "row_stride": r.row_stride,
            "upsample": int(opd.view.upsample), "signed": int(opd.signed), "onchip": int(r.space == "scratch")}


def _record(regions: dict[str, Region], step: Step, tag: int, w_off: int, w_bytes: int, r_off: int) -> dict[str, Any]:
    """One descriptor's fields (table offsets absolute, 0 when the step has none)."""
    f = step.fields
    return {
        "opcode": int(step.opcode), "config_tag": tag,
        "in_channels": step.src.channels, "out_channels": step.dst.channels,
        "in_height": step.src.height, "in_width": step.src.width,
        "out_height": step.dst.height, "out_width": step.dst.width,
        "kernel": f.get("kernel", 1), "stride": f.get("stride", 1), "pad": f.get("pad", 0),
        "dilation": f.get("dilation", 1), "w_bits": f.get("w_bits", 0),
        "lo": f.get("lo", 0), "hi": f.get("hi", 0), "d_max": f.get("d_max", 0),
        "frac_bits": f.get("frac_bits", 0), "offset_range": f.get("offset_range", 0),
        "add_ma": f.get("add_ma", 0), "add_mb": f.get("add_mb", 0), "add_s": f.get("add_s", 0),
        "acc_bound_bits": int(step.acc_bound).bit_length(), "tile_rows": step.tile_rows,
        "band_top": step.band_top,
        "weights_offset": w_off, "weights_bytes": w_bytes, "requant_offset": r_off,
        "src": _view_fields(regions, step.src), "src2": _view_fields(regions, step.src2),
        "dst": _view_fields(regions, step.dst),
    }


def _tables(c: Compilation) -> tuple[list[bytes], list[tuple[int, int, int]]]:
    """Packed weights/requant per step: blobs and (weights_off, weights_bytes, requant_off) relative."""
    cfg = c.config
    blobs: list[bytes] = []
    where: list[tuple[int, int, int]] = []
    pos = 0

    def add(blob: bytes) -> int:
        nonlocal pos
        start = pos
        blobs.append(blob)
        pos += len(blob)
        pad = -pos % TABLE_ALIGN
        if pad:
            blobs.append(bytes(pad))
            pos += pad
        return start

    rq_layout = requant_word_layout(cfg)
    dw_layout = dw_channel_word_layout(cfg)
    for step in c.steps:
        if step.opcode in (Opcode.CONV_PW, Opcode.CONV_KXK):
            wm = step.weights
            co, ci = wm.shape
            cig, cog = -(-ci // cfg.pe_ci), -(-co // cfg.pe_co)
            full = np.zeros((cog * cfg.pe_co, cig * cfg.pe_ci), dtype=np.int64)
            full[:co, :ci] = wm
            tiles = full.reshape(cog, cfg.pe_co, cig, cfg.pe_ci).transpose(0, 2, 1, 3).reshape(-1, cfg.pe_co, cfg.pe_ci)
            layout = weight_tile_layout(cfg, step.fields["w_bits"])
            raw = pack_array(layout, tiles)
            padded = np.zeros((raw.shape[0], weight_tile_bytes(cfg, step.fields["w_bits"])), dtype=np.uint8)
            padded[:, :raw.shape[1]] = raw
            w_off = add(padded.tobytes())
            rq = pack_array(rq_layout, {"bias": step.bias, "m": step.m, "s": step.s})
            r_off = add(rq.tobytes())
            where.append((w_off, padded.size, r_off))
        elif step.weights is not None:
            raw = pack_array(dw_layout, {"weights": step.weights, "bias": step.bias, "m": step.m, "s": step.s})
            w_off = add(raw.tobytes())
            where.append((w_off, raw.size, w_off))
        else:
            where.append((0, 0, 0))
    return blobs, where


def emit(c: Compilation) -> Program:
    """Pack the steps into a Program (memory image + header)."""
    cfg = c.config
    n_desc = len(c.steps) + 1
    table_base = -(-(n_desc * DESCRIPTOR_BYTES) // TABLE_ALIGN) * TABLE_ALIGN
    blobs, where = _tables(c)
    image_bytes = table_base + sum(len(b) for b in blobs)
    buffer_bytes = allocate(c, image_bytes)
    tag = config_tag(cfg)
    records = [_record(c.regions, step, tag, table_base + w_off if w_bytes else 0, w_bytes,
                       table_base + r_off if w_bytes else 0)
               for step, (w_off, w_bytes, r_off) in zip(c.steps, where, strict=True)]
    records.append({"opcode": int(Opcode.END), "config_tag": tag})
    layout = descriptor_layout(cfg)
    desc_bytes = pack_array(layout, _columns(records), count=len(records))
    image = np.zeros(image_bytes, dtype=np.uint8)
    image[: desc_bytes.size] = desc_bytes.reshape(-1)
    pos = table_base
    for b in blobs:
        image[pos:pos + len(b)] = np.frombuffer(b, dtype=np.uint8)
        pos += len(b)
    figures = [descriptor_figures(r, cfg, c.ddr_gbps) for r in _fill_views(records[:-1])]
    totals = frame_figures(figures, cfg)
    _report_chains(c, figures, tag)
    descriptors = []
    for i, (step, fig) in enumerate(zip(c.steps, figures, strict=True)):
        descriptors.append({"index": i, "layer": step.layer, "opcode": step.opcode.name, **fig,
                            "out_channels": list(step.out_range), "tile_rows": step.tile_rows, "note": step.note})
    descriptors.append({"index": len(c.steps), "layer": "", "opcode": "END", "unit": "controller", "cycles": 0,
                        "compute_cycles": 0, "dma_cycles": 0, "ddr_bytes": 0, "macs": 0})
    tensors = {}
    fused = {t: f"{ch.a} -> {ch.b} -> {ch.d}" for ch in c.chains.values() for t in ch.mids}
    for t, tt in c.graph.tensors.items():
        if t in fused:
            tensors[t] = TensorPlace(t, tuple(tt.shape), tt.signed, tt.scale, (), c.ready.get(t, -1), fused[t])
            continue
        pieces = tuple(Piece(p.start, p.count, c.regions[p.view.region].offset, p.view.channel_offset,
                             p.view.channel_stride, c.regions[p.view.region].pixel_stride,
                             c.regions[p.view.region].row_stride, p.view.upsample) for p in c.place[t])
        tensors[t] = TensorPlace(t, tuple(tt.shape), tt.signed, tt.scale, pieces, c.ready.get(t, -1))
    regions = [{"name": r.name, "space": r.space, "offset": r.offset, "bytes": r.size, "first": r.first,
                "last": r.last, "channels": r.channels, "height": r.height, "width": r.width}
               for r in sorted(c.regions.values(), key=lambda r: (r.space, r.offset))]
    c.log("emit", f"{n_desc} descriptors x {DESCRIPTOR_BYTES} B, {image_bytes - table_base} B of weights/tables, "
                  f"buffer {buffer_bytes} B; predicted {totals['cycles']} cycles/frame = {totals['fps']:.1f} FPS "
                  f"at {cfg.clock_mhz:g} MHz, MAC utilisation {totals['mac_utilisation']:.1%}")
    report = [f"[{name}] {line}" for name, lines in c.report.items() for line in lines]
    return Program(config=cfg, image=image, buffer_bytes=buffer_bytes, n_descriptors=n_desc,
                   descriptors=descriptors, regions=regions, tensors=tensors, input=c.graph.input,
                   outputs=dict(c.graph.outputs),
                   cycles={**totals, "copies": c.copies, "ddr_gbps": c.ddr_gbps, "fused_chains": len(c.chains)},
                   meta={**c.graph.meta, "reuse_buffers": c.reuse_buffers, "fuse": c.fuse}, report=report)


def _report_chains(c: Compilation, figures: list[dict[str, Any]], tag: int) -> None:
    """Per fused chain: bands, band height, DDR bytes and cycles unfused -> fused."""
    saved_total = 0
    for ch in c.chains.values():
        regions = _as_placed({**c.regions, **ch.ddr})      # the mids' DDR regions were never placed
        plain = [descriptor_figures(r, c.config, c.ddr_gbps)
                 for r in _fill_views([_record(regions, st, tag, 0, 0, 0) for st in ch.plain])]
        fused = figures[ch.first_step:ch.last_step + 1]
        before, after = sum(f["ddr_bytes"] for f in plain), sum(f["ddr_bytes"] for f in fused)
        saved_total += before - after
        bands = len(fused) // len(ch.plain)
        c.log("fuse", f"{ch.a} -> {ch.b} -> {ch.d}: fused, {bands} bands of {ch.band} rows (halo {ch.halo}, "
                      f"scratchpad {ch.scratch} B); DDR {before} -> {after} B ({before - after} saved), cycles "
                      f"{sum(f['cycles'] for f in plain)} -> {sum(f['cycles'] for f in fused)}")
    if c.chains:
        c.log("fuse", f"DDR bytes saved by fusion: {saved_total}")


_VIEW_KEYS = ("offset", "channel_offset", "channel_stride", "pixel_stride", "row_stride", "upsample", "signed",
              "onchip")


def _fill_views(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        r = dict(r)
        for v in ("src", "src2", "dst"):
            r[v] = {k: r.get(v, {}).get(k, 0) for k in _VIEW_KEYS}
        out.append(r)
    return out


def _columns(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows of descriptor dicts -> the column mapping :func:`pack_array` takes."""
    recs = _fill_views(records)
    keys = {key for r in recs for key in r}
    cols: dict[str, Any] = {}
    for key in sorted(keys):
        if key in ("src", "src2", "dst"):
            cols[key] = {k: np.array([r[key][k] for r in recs], dtype=np.int64) for k in _VIEW_KEYS}
        else:
            cols[key] = np.array([r.get(key, 0) for r in recs], dtype=np.int64)
    return cols
