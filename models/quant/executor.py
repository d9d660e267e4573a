"""The integer reference executor: runs a QGraph exactly as INTEGER_SPEC says.

This is the oracle every other implementation (emulator, RTL, HLS, board) is compared
against. Tensors are int64 torch tensors ``(N, C, H, W)``; nothing here ever wraps.

Speed note: convolutions and max pools are evaluated with float64 kernels on integer
values. That is exact, not approximate: every product and partial sum is an integer of
magnitude below ``2**53`` (checked per layer from the bound of §6), and float64 represents
all such integers exactly whatever the summation order. Everything else (deformable
sampling, requantisation) is done in int64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from convforge.errors import ShapeError
from convforge.models.quant.intops import check_int64_bound, requant, rshift_round, sat
from convforge.models.quant.qgraph import Layer, QGraph

_FLOAT_EXACT = 1 << 53


def as_pair(v) -> tuple[int, int]:
    """An int or an ``(h, w)`` pair as a tuple of two Python ints."""
    if isinstance(v, int | np.integer):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def _exact_float_check(x: torch.Tensor, w: torch.Tensor, taps_per_output: int, what: str) -> None:
    bound = int(x.abs().max()) * int(w.abs().max()) * taps_per_output if x.numel() and w.numel() else 0
    if bound >= _FLOAT_EXACT:
        raise ShapeError(
            f"{what}: worst-case accumulator {bound} exceeds 2**53; the integer reference "
            "cannot evaluate it exactly (activations/weights far outside the spec's 8-bit range?)"
        )


def _max_abs(t: torch.Tensor) -> int:
    return max(abs(int(t.max())), abs(int(t.min()))) if t.numel() else 0


# -- layer kernels (each returns the int64 accumulator, before requantisation) ---------


def conv2d_int(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """Zero-padded grouped convolution of int64 ``x`` (N,C,H,W) by int64 ``weight``
    (O, C/g, kh, kw); returns the int64 accumulator (N, O, Ho, Wo) (spec §4)."""
    _exact_float_check(x, weight, weight.shape[1] * weight.shape[2] * weight.shape[3], "conv2d_int")
    acc = F.conv2d(
        x.to(torch.float64),
        weight.to(torch.float64),
        stride=as_pair(stride),
        padding=as_pair(padding),
        dilation=as_pair(dilation),
        groups=groups,
    )
    return acc.round().to(torch.int64)


def _gather_taps(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Read ``x[n, c, ys[n, oy, ox], xs[n, oy, ox]]`` with 0 outside the image.

    ``x`` is (N, C, H, W); ``ys``/``xs`` are int64 (N, Ho, Wo). Returns (N, C, Ho, Wo).
    """
    n, c, h, w = x.shape
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    flat = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).reshape(n, 1, -1).expand(n, c, -1)
    vals = torch.gather(x.reshape(n, c, h * w), 2, flat).reshape(n, c, *ys.shape[1:])
    # Select, never multiply by a 0/1 mask: a tap outside reads 0 without touching the
    # clamped pixel (the same rule as the float references, where 0 * inf would be NaN).
    return torch.where(inside.unsqueeze(1), vals, torch.zeros((), dtype=vals.dtype))


def square_deform_dw_int(
    x: torch.Tensor, dilation_map: torch.Tensor, weight: torch.Tensor, stride: int = 1
) -> torch.Tensor:
    """Square deformable depthwise 3x3 (spec §4): per-pixel integer dilation.

    ``x`` int64 (N,C,H,W), ``dilation_map`` int64 (N,1,Ho,Wo) with Ho = (H-1)//stride+1,
    ``weight`` int64 (C,1,3,3). Returns the accumulator (N,C,Ho,Wo).
    """
    n, c, h, w = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    if tuple(dilation_map.shape) != (n, 1, ho, wo):
        raise ShapeError(
            f"square_deform_dw_int: dilation map has shape {tuple(dilation_map.shape)}, "
            f"expected {(n, 1, ho, wo)} for input {tuple(x.shape)} at stride {stride}"
        )
    if tuple(weight.shape) != (c, 1, 3, 3):
        raise ShapeError(f"square_deform_dw_int: weight shape {tuple(weight.shape)}, expected {(c, 1, 3, 3)}")
    d = dilation_map[:, 0].to(torch.int64)
    check_int64_bound(_max_abs(x) * _max_abs(weight) * 9, "square_deform_dw_int", "worst-case |acc|")
    oy = torch.arange(ho, dtype=torch.int64).view(1, ho, 1) * stride
    ox = torch.arange(wo, dtype=torch.int64).view(1, 1, wo) * stride
    acc = torch.zeros(n, c, ho, wo, dtype=torch.int64)
    for i in range(3):
        for j in range(3):
            taps = _gather_taps(x, oy + (i - 1) * d, ox + (j - 1) * d)
            acc += weight[:, 0, i, j].view(1, c, 1, 1) * taps
    return acc


def bilinear_deform_int(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    stride=1,
    padding=1,
    dilation=1,
    groups: int = 1,
    frac_bits: int = 4,
) -> torch.Tensor:
    """Bilinear deformable 3x3 (DCNv1, one offset group) on integers (spec §4).

    ``offset`` int64 (N, 18, Ho, Wo): channel ``2*(i*3+j)`` is dy, ``+1`` dx, each with
    ``frac_bits`` fractional bits. The result carries ``2*frac_bits`` fractional bits
    (the export folds ``2**-2F`` into the requant multiplier).
    """
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    if (kh, kw) != (3, 3) or cg * groups != c:
        raise ShapeError(
            f"bilinear_deform_int: weight {tuple(weight.shape)} does not fit a 3x3 conv of "
            f"{c} channels in {groups} groups"
        )
    sy, sx = as_pair(stride)
    py_, px_ = as_pair(padding)
    dy_, dx_ = as_pair(dilation)
    ho = (h + 2 * py_ - dy_ * 2 - 1) // sy + 1
    wo = (w + 2 * px_ - dx_ * 2 - 1) // sx + 1
    if tuple(offset.shape) != (n, 18, ho, wo):
        raise ShapeError(
            f"bilinear_deform_int: offset shape {tuple(offset.shape)}, expected {(n, 18, ho, wo)}"
        )
    one = 1 << frac_bits
    bound = _max_abs(x) * _max_abs(weight) * 9 * c * one * one
    check_int64_bound(bound, "bilinear_deform_int", "worst-case |acc| (2F fractional bits)")
    base_y = (torch.arange(ho, dtype=torch.int64) * sy - py_).view(1, ho, 1)
    base_x = (torch.arange(wo, dtype=torch.int64) * sx - px_).view(1, 1, wo)
    samples = []  # per tap: V (N, C, Ho, Wo) with 2F fractional bits
    for i in range(3):
        for j in range(3):
            k = i * 3 + j
            py = (base_y + i * dy_) * one + offset[:, 2 * k].to(torch.int64)
            px = (base_x + j * dx_) * one + offset[:, 2 * k + 1].to(torch.int64)
            y0 = py >> frac_bits  # floor division for negatives too
            x0 = px >> frac_bits
            fy = (py - (y0 << frac_bits)).unsqueeze(1)
            fx = (px - (x0 << frac_bits)).unsqueeze(1)
            v = (
                (one - fy) * (one - fx) * _gather_taps(x, y0, x0)
                + (one - fy) * fx * _gather_taps(x, y0, x0 + 1)
                + fy * (one - fx) * _gather_taps(x, y0 + 1, x0)
                + fy * fx * _gather_taps(x, y0 + 1, x0 + 1)
            )
            samples.append(v)
    v = torch.stack(samples, dim=2)  # (N, C, 9, Ho, Wo)
    v = v.view(n, groups, cg * 9, ho * wo)
    wg = weight.view(groups, o // groups, cg * 9)
    # int64 batched matmul per group: (g, O/g, cg*9) @ (N, g, cg*9, HoWo)
    acc = torch.einsum("gok,ngkp->ngop", wg, v)
    return acc.reshape(n, o, ho, wo)


def maxpool_int(x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """Max over the taps inside the input; padded taps are ignored (spec §4)."""
    return F.max_pool2d(x.to(torch.float64), kernel, stride, padding).round().to(torch.int64)


def add_int(a: torch.Tensor, b: torch.Tensor, Ma: int, Mb: int, S: int, lo: int, hi: int) -> torch.Tensor:
    """Residual add ``sat(rshift_round(a*Ma + b*Mb, S), lo, hi)`` (spec §4).

    Raises:
        IntegerOverflowError: ``|a*Ma| + |b*Mb|`` would exceed int64 (INTEGER_SPEC §6).
    """
    check_int64_bound(_max_abs(a) * abs(int(Ma)) + _max_abs(b) * abs(int(Mb)), "add_int", "|a*Ma + b*Mb|")
    return sat(rshift_round(a * int(Ma) + b * int(Mb), int(S)), lo, hi)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: (g, C/g) -> (C/g, g) interleave."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsample."""
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


# -- the executor -----------------------------------------------------------------------


def _requant_layer(layer: Layer, acc: torch.Tensor) -> torch.Tensor:
    p, a = layer.params, layer.attrs
    return requant(acc, p["bias"], p["M"], p["S"], int(a["lo"]), int(a["hi"]))


def _t(arr) -> torch.Tensor:
    return torch.as_tensor(np.asarray(arr), dtype=torch.int64)


def _run_conv(layer: Layer, x: torch.Tensor) -> torch.Tensor:
    a = layer.attrs
    acc = conv2d_int(x, _t(layer.params["weight"]), a["stride"], a["padding"], a["dilation"], int(a["groups"]))
    return _requant_layer(layer, acc)


def _run_square(layer: Layer, x: torch.Tensor, dmap: torch.Tensor) -> torch.Tensor:
    d_max = int(layer.attrs["d_max"])
    if int(dmap.min()) < 0 or int(dmap.max()) > d_max:
        raise ShapeError(
            f"layer {layer.name!r}: dilation map values span [{int(dmap.min())}, {int(dmap.max())}], "
            f"outside [0, {d_max}]; the producing layer's (lo, hi) must be (0, D_max)"
        )
    acc = square_deform_dw_int(x, dmap, _t(layer.params["weight"]), int(layer.attrs["stride"]))
    return _requant_layer(layer, acc)


def _run_bilinear(layer: Layer, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    a = layer.attrs
    limit = int(a["R"]) << int(a["F"])
    if offset.numel() and int(offset.abs().max()) > limit:
        raise ShapeError(
            f"layer {layer.name!r}: offsets reach {int(offset.abs().max())} LSB, beyond "
            f"+-R*2**F = +-{limit}; the producing layer's (lo, hi) must clamp them"
        )
    acc = bilinear_deform_int(
        x, offset, _t(layer.params["weight"]), a["stride"], a["padding"], a["dilation"],
        int(a["groups"]), int(a["F"]),
    )
    return _requant_layer(layer, acc)


def _run_add(layer: Layer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p, a = layer.params, layer.attrs
    return add_int(x, y, int(np.ravel(p["Ma"])[0]), int(np.ravel(p["Mb"])[0]), int(np.ravel(p["S"])[0]),
                   int(a["lo"]), int(a["hi"]))


def _run_split(layer: Layer, x: torch.Tensor) -> list[torch.Tensor]:
    sizes = [int(s) for s in layer.attrs["sizes"]]
    if sum(sizes) != x.shape[1]:
        raise ShapeError(f"layer {layer.name!r}: split sizes {sizes} do not add up to {x.shape[1]} channels")
    return list(torch.split(x, sizes, dim=1))


_KERNELS: dict[str, Callable[..., torch.Tensor | list[torch.Tensor]]] = {
    "conv": _run_conv,
    "square_deform_dw": _run_square,
    "bilinear_deform": _run_bilinear,
    "add": _run_add,
    "concat": lambda layer, *xs: torch.cat(xs, dim=1),
    "split": _run_split,
    "shuffle": lambda layer, x: channel_shuffle(x, int(layer.attrs["groups"])),
    "upsample2x": lambda layer, x: upsample2x(x),
    "maxpool": lambda layer, x: maxpool_int(
        x, int(layer.attrs["kernel"]), int(layer.attrs["stride"]), int(layer.attrs["padding"])
    ),
}


def as_image_batch(images, shape: tuple[int, int, int]) -> torch.Tensor:
    """Accept uint8 images as (H,W,3) / (N,H,W,3) NumPy (file layout) or (N,3,H,W) torch;
    return int64 (N,3,H,W). Wrong dtype or size is a ShapeError naming the expected shape."""
    c, h, w = shape
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ShapeError(f"images must be uint8 (raw RGB), got {images.dtype}")
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != c:
            raise ShapeError(f"NumPy images must be (H, W, {c}) or (N, H, W, {c}), got {images.shape}")
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if not isinstance(images, torch.Tensor):
        raise ShapeError(f"images must be a NumPy array or torch tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ShapeError(f"images must be uint8 (raw RGB, the graph folds normalisation), got {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or tuple(images.shape[1:]) != (c, h, w):
        raise ShapeError(
            f"images have shape {tuple(images.shape)}, the QGraph expects (N, {c}, {h}, {w}); "
            f"resize or tile the input to {h}x{w}"
        )
    return images.to(torch.int64)


def run_qgraph(
    graph: QGraph,
    images,
    keep_all: bool = False,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Run ``graph`` on uint8 images and return its outputs as int64 tensors.

    Args:
        graph: the integer graph.
        images: uint8 ``(N,3,H,W)`` torch tensor or ``(H,W,3)``/``(N,H,W,3)`` NumPy array.
        keep_all: return every tensor of the graph by name (plus the head names) instead
            of only the heads.
        progress: show a tqdm bar over the layers.

    Returns:
        ``{head_name: tensor}`` for ``graph.outputs``; with ``keep_all`` also every
        intermediate ``{tensor_name: tensor}``.
    """
    values: dict[str, torch.Tensor] = {graph.input: as_image_batch(images, graph.tensors[graph.input].shape)}
    layers = graph.layers
    if progress:
        from tqdm import tqdm

        layers = tqdm(layers, desc="integer reference", unit="layer", leave=False)
    needed_later = _last_use(graph) if not keep_all else None
    with torch.no_grad():
        for index, layer in enumerate(layers):
            result = _KERNELS[layer.op](layer, *(values[t] for t in layer.inputs))
            outs = result if isinstance(result, list) else [result]
            for name, tensor in zip(layer.outputs, outs, strict=True):
                expected = graph.tensors[name].shape
                if tuple(tensor.shape[1:]) != tuple(expected):
                    raise ShapeError(
                        f"layer {layer.name!r} produced {tuple(tensor.shape[1:])} for tensor "
                        f"{name!r}, the graph declares {tuple(expected)}"
                    )
                values[name] = tensor
            if needed_later is not None:
                for t in layer.inputs:
                    if needed_later.get(t, -1) <= index and t not in graph.outputs.values():
                        values.pop(t, None)
    heads = {head: values[t] for head, t in graph.outputs.items()}
    if keep_all:
        return {**values, **heads}
    return heads


def _last_use(graph: QGraph) -> dict[str, int]:
    last: dict[str, int] = {}
    for index, layer in enumerate(graph.layers):
        for t in layer.inputs:
            last[t] = index
    return last
