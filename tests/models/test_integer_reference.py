"""The integer reference against straightforward loop implementations of INTEGER_SPEC.

The loops below are written from the spec's formulas, one output integer at a time, in
plain Python ints: they share nothing with the vectorised kernels except the spec.
"""

import math

import numpy as np
import pytest
import torch

from convforge.errors import ExportError, QGraphFormatError, ShapeError
from convforge.models.quant import executor as ex
from convforge.models.quant.intops import derive_requant, requant, rshift_round
from convforge.models.quant.qgraph import Layer, QGraph, TensorType

# -- loop references (spec §1, §3, §4) ---------------------------------------------------


def loop_rshift_round(v: int, s: int) -> int:
    return v if s == 0 else math.floor((v + 2 ** (s - 1)) / 2**s)


def loop_requant(acc: int, bias: int, m: int, s: int, lo: int, hi: int) -> int:
    return min(max(loop_rshift_round((acc + bias) * m, s), lo), hi)


def px(x, c, y, xx):
    _, _, h, w = x.shape
    return int(x[0, c, y, xx]) if 0 <= y < h and 0 <= xx < w else 0


def loop_conv(x, w, s, p, d, g):
    _, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho = (h + 2 * p - d * (kh - 1) - 1) // s + 1
    wo = (wd + 2 * p - d * (kw - 1) - 1) // s + 1
    out = np.zeros((1, o, ho, wo), dtype=np.int64)
    og = o // g
    for oc in range(o):
        grp = oc // og
        for oy in range(ho):
            for ox in range(wo):
                acc = 0
                for ci in range(cg):
                    for i in range(kh):
                        for j in range(kw):
                            acc += int(w[oc, ci, i, j]) * px(x, grp * cg + ci, oy * s - p + i * d, ox * s - p + j * d)
                out[0, oc, oy, ox] = acc
    return out


def loop_square(x, dmap, w, s):
    _, c, h, wd = x.shape
    ho, wo = (h - 1) // s + 1, (wd - 1) // s + 1
    out = np.zeros((1, c, ho, wo), dtype=np.int64)
    for ch in range(c):
        for oy in range(ho):
            for ox in range(wo):
                D = int(dmap[0, 0, oy, ox])
                out[0, ch, oy, ox] = sum(
                    int(w[ch, 0, i, j]) * px(x, ch, oy * s + (i - 1) * D, ox * s + (j - 1) * D)
                    for i in range(3)
                    for j in range(3)
                )
    return out


def loop_bilinear(x, off, w, s, p, d, g, F):
    _, c, h, wd = x.shape
    o, cg, _, _ = w.shape
    ho = (h + 2 * p - 2 * d - 1) // s + 1
    wo = (wd + 2 * p - 2 * d - 1) // s + 1
    one = 2**F
    out = np.zeros((1, o, ho, wo), dtype=np.int64)
    og = o // g
    for oc in range(o):
        grp = oc // og
        for oy in range(ho):
            for ox in range(wo):
                acc = 0
                for ci in range(cg):
                    ch = grp * cg + ci
                    for i in range(3):
                        for j in range(3):
                            k = i * 3 + j
                            py = (oy * s - p + i * d) * one + int(off[0, 2 * k, oy, ox])
                            pxx = (ox * s - p + j * d) * one + int(off[0, 2 * k + 1, oy, ox])
                            y0, x0 = math.floor(py / one), math.floor(pxx / one)
                            fy, fx = py - y0 * one, pxx - x0 * one
                            v = (
                                (one - fy) * (one - fx) * px(x, ch, y0, x0)
                                + (one - fy) * fx * px(x, ch, y0, x0 + 1)
                                + fy * (one - fx) * px(x, ch, y0 + 1, x0)
                                + fy * fx * px(x, ch, y0 + 1, x0 + 1)
                            )
                            acc += int(w[oc, ci, i, j]) * v
                out[0, oc, oy, ox] = acc
    return out


def loop_maxpool(x, k, s, p):
    _, c, h, wd = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
    out = np.zeros((1, c, ho, wo), dtype=np.int64)
    for ch in range(c):
        for oy in range(ho):
            for ox in range(wo):
                taps = [
                    int(x[0, ch, y, xx])
                    for y in range(oy * s - p, oy * s - p + k)
                    for xx in range(ox * s - p, ox * s - p + k)
                    if 0 <= y < h and 0 <= xx < wd
                ]
                out[0, ch, oy, ox] = max(taps)
    return out


def rand_act(rng, shape, signed):
    lo, hi = (-128, 127) if signed else (0, 255)
    x = rng.integers(lo, hi + 1, size=shape)
    # cover the extremes explicitly
    flat = x.reshape(-1)
    flat[:2] = [lo, hi]
    return torch.as_tensor(x, dtype=torch.int64)


# -- primitives ---------------------------------------------------------------------------


def test_rshift_round_is_round_half_up_arithmetic():
    for v in range(-70, 71):
        for s in range(0, 7):
            assert rshift_round(v, s) == loop_rshift_round(v, s)
    t = torch.arange(-300, 300, dtype=torch.int64)
    shifts = torch.tensor([0, 1, 3, 8], dtype=torch.int64).repeat(150)
    expected = [loop_rshift_round(int(v), int(s)) for v, s in zip(t, shifts, strict=True)]
    assert torch.equal(rshift_round(t, shifts), torch.tensor(expected))
    arr = np.arange(-300, 300, dtype=np.int64)
    assert np.array_equal(rshift_round(arr, shifts.numpy()), np.array(expected))
    # large shifts and values stay exact in int64
    assert rshift_round(-(2**61), 62) == 0 and rshift_round(2**61, 62) == 1
    assert rshift_round(-(2**61) - 1, 62) == -1


def test_requant_vectorised_matches_loop():
    rng = np.random.default_rng(1)
    acc = rng.integers(-(2**31), 2**31, size=(2, 5, 3, 3))
    bias = rng.integers(-(2**20), 2**20, size=5)
    M = rng.integers(2**14, 2**15, size=5)
    S = np.array([0, 1, 20, 40, 62])
    got = requant(torch.as_tensor(acc), bias, M, S, -128, 127)
    got_np = requant(acc, bias, M, S, 0, 255)
    for n, c, y, x in np.ndindex(acc.shape):
        a = int(acc[n, c, y, x])
        assert got[n, c, y, x] == loop_requant(a, int(bias[c]), int(M[c]), int(S[c]), -128, 127)
        assert got_np[n, c, y, x] == loop_requant(a, int(bias[c]), int(M[c]), int(S[c]), 0, 255)


@pytest.mark.parametrize("r", [1.0, 0.5, 2.0, 0.1234, 3.3e-5, 1e-10, 1234.5, 2**-40, 0.999999999])
def test_derive_requant_normalised_and_accurate(r):
    q = derive_requant(r)
    assert 2**14 <= q.M < 2**15 and 0 <= q.S <= 62
    assert q.S == 14 - math.floor(math.log2(r)) or q.M == 2**14
    assert abs(q.M / 2**q.S - r) <= 2 ** -(q.S + 1) * 1.0000001


def test_derive_requant_edges():
    assert (derive_requant(0.0).M, derive_requant(0.0).S) == (0, 0)
    # r just below 2**-k whose mantissa rounds up to 2**15 -> renormalised to M = 2**14, S - 1
    r = (2**15 - 0.25) / 2**20
    q = derive_requant(r)
    assert (q.M, q.S) == (2**14, 19)
    # exact powers of two
    assert (derive_requant(1.0).M, derive_requant(1.0).S) == (2**14, 14)
    assert (derive_requant(2.0**-48).M, derive_requant(2.0**-48).S) == (2**14, 62)
    with pytest.raises(ExportError, match="layer 'stem'.*outside"):
        derive_requant(2.0**-49, layer="stem")  # S = 63
    with pytest.raises(ExportError, match="outside"):
        derive_requant(2.0**15, layer="x")  # S = -1
    with pytest.raises(ExportError, match="finite"):
        derive_requant(float("nan"), layer="x")


# -- kernels ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_conv2d_int_matches_loop(seed):
    rng = np.random.default_rng(seed)
    g = [1, 2, 3][seed % 3]
    c, o = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
    k = [1, 3, 3, 5, 1, 3][seed]
    s, d = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    p = int(rng.integers(0, k))
    h, w = int(rng.integers(k * d, 9)), int(rng.integers(k * d, 10))
    x = rand_act(rng, (1, c, h, w), signed=bool(seed % 2))
    wt = torch.as_tensor(rng.integers(-7, 8, size=(o, c // g, k, k)))
    assert np.array_equal(ex.conv2d_int(x, wt, s, p, d, g).numpy(), loop_conv(x, wt, s, p, d, g))


@pytest.mark.parametrize("seed", range(5))
def test_square_deform_matches_loop_including_zero_and_dmax(seed):
    rng = np.random.default_rng(100 + seed)
    c, h, w, s = int(rng.integers(1, 5)), int(rng.integers(3, 12)), int(rng.integers(3, 12)), [1, 2][seed % 2]
    x = rand_act(rng, (1, c, h, w), signed=bool(seed % 2))
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    dmap = torch.as_tensor(rng.integers(0, 9, size=(1, 1, ho, wo)))
    dmap.view(-1)[0], dmap.view(-1)[-1] = 0, 8
    wt = torch.as_tensor(rng.integers(-7, 8, size=(c, 1, 3, 3)))
    assert np.array_equal(ex.square_deform_dw_int(x, dmap, wt, s).numpy(), loop_square(x, dmap, wt, s))


def test_square_deform_dilation_one_is_depthwise_conv_and_zero_samples_centre():
    rng = np.random.default_rng(7)
    x = rand_act(rng, (1, 3, 6, 7), signed=False)
    wt = torch.as_tensor(rng.integers(-7, 8, size=(3, 1, 3, 3)))
    ones = torch.ones(1, 1, 6, 7, dtype=torch.int64)
    assert torch.equal(ex.square_deform_dw_int(x, ones, wt), ex.conv2d_int(x, wt, 1, 1, 1, 3))
    zeros = torch.zeros_like(ones)
    assert torch.equal(ex.square_deform_dw_int(x, zeros, wt), x * wt.sum(dim=(1, 2, 3)).view(1, 3, 1, 1))


@pytest.mark.parametrize("seed", range(5))
def test_bilinear_deform_matches_loop_at_range_edges(seed):
    rng = np.random.default_rng(200 + seed)
    F_, R = 4, 7
    g = [1, 2, 1, 3, 1][seed]
    c, o = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
    s, p, d = [1, 2][seed % 2], 1, 1
    h, w = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    x = rand_act(rng, (1, c, h, w), signed=bool(seed % 2))
    ho, wo = (h + 2 * p - 2 * d - 1) // s + 1, (w + 2 * p - 2 * d - 1) // s + 1
    lim = R << F_
    off = rng.integers(-lim, lim + 1, size=(1, 18, ho, wo))
    off.reshape(-1)[:4] = [lim, -lim, 1, -1]  # extremes and one fractional LSB
    off = torch.as_tensor(off)
    wt = torch.as_tensor(rng.integers(-7, 8, size=(o, c // g, 3, 3)))
    got = ex.bilinear_deform_int(x, off, wt, s, p, d, g, F_)
    assert np.array_equal(got.numpy(), loop_bilinear(x, off, wt, s, p, d, g, F_))


def test_bilinear_deform_zero_offsets_is_conv_scaled_by_2_pow_2F():
    rng = np.random.default_rng(9)
    x = rand_act(rng, (1, 4, 5, 6), signed=False)
    wt = torch.as_tensor(rng.integers(-7, 8, size=(2, 4, 3, 3)))
    off = torch.zeros(1, 18, 5, 6, dtype=torch.int64)
    assert torch.equal(ex.bilinear_deform_int(x, off, wt, frac_bits=4), ex.conv2d_int(x, wt, 1, 1) * 256)


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 2, 0)])
def test_maxpool_ignores_padded_taps(k, s, p):
    rng = np.random.default_rng(k * 10 + s + p)
    x = rand_act(rng, (1, 2, 7, 6), signed=True)  # all-negative windows must not see a padded 0
    x[0, 0] = -100
    assert np.array_equal(ex.maxpool_int(x, k, s, p).numpy(), loop_maxpool(x, k, s, p))


def test_add_matches_loop():
    rng = np.random.default_rng(3)
    a, b = rand_act(rng, (1, 3, 4, 4), True), rand_act(rng, (1, 3, 4, 4), False)
    got = ex.add_int(a, b, 20000, 17000, 16, -128, 127)
    for idx in np.ndindex(tuple(a.shape)):
        v = loop_rshift_round(int(a[idx]) * 20000 + int(b[idx]) * 17000, 16)
        assert got[idx] == min(max(v, -128), 127)


def test_channel_shuffle_and_upsample():
    x = torch.arange(6).view(1, 6, 1, 1)
    assert ex.channel_shuffle(x, 2).view(-1).tolist() == [0, 3, 1, 4, 2, 5]
    y = torch.arange(4).view(1, 1, 2, 2)
    assert ex.upsample2x(y)[0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


# -- a whole graph ------------------------------------------------------------------------


def small_graph(h=8, w=10, seed=0) -> QGraph:
    """input -> conv(3x3,s2) -> split -> [dilation conv -> square dw] + passthrough -> concat
    -> shuffle -> maxpool -> upsample -> add -> offset conv -> bilinear -> heads."""
    rng = np.random.default_rng(seed)

    def conv(name, src, dst, cin, cout, k=1, s=1, p=0, g=1, wb=4, lo=0, hi=255):
        q = 2 ** (wb - 1) - 1
        return Layer(name, "conv", [src], [dst],
                     {"kernel": [k, k], "stride": [s, s], "padding": [p, p], "dilation": [1, 1],
                      "groups": g, "w_bits": wb, "lo": lo, "hi": hi},
                     {"weight": rng.integers(-q, q + 1, size=(cout, cin // g, k, k)),
                      "bias": rng.integers(-2000, 2000, size=cout),
                      "M": rng.integers(2**14, 2**15, size=cout),
                      "S": rng.integers(18, 24, size=cout)})

    h2, w2 = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    T = TensorType
    tensors = {
        "image": T((3, h, w)), "stem": T((8, h2, w2)), "a": T((4, h2, w2)), "b": T((4, h2, w2)),
        "dmap": T((1, h2, w2)), "sq": T((4, h2, w2)), "cat": T((8, h2, w2)),
        "shuf": T((8, h2, w2)), "pool": T((8, (h2 - 1) // 2 + 1, (w2 - 1) // 2 + 1)),
        "up": T((8, 2 * ((h2 - 1) // 2 + 1), 2 * ((w2 - 1) // 2 + 1))),
        "offs": T((18, h2, w2), signed=True), "bil": T((8, h2, w2)), "sum": T((8, h2, w2), signed=True),
        "hm": T((2, h2, w2), signed=True),
    }
    layers = [
        conv("stem", "image", "stem", 3, 8, k=3, s=2, p=1, wb=8),
        Layer("split", "split", ["stem"], ["a", "b"], {"sizes": [4, 4]}),
        conv("dil", "b", "dmap", 4, 1, lo=0, hi=8),
        Layer("sq", "square_deform_dw", ["b", "dmap"], ["sq"],
              {"stride": 1, "d_max": 8, "w_bits": 4, "lo": 0, "hi": 255},  # concat with "a": one type
              {"weight": rng.integers(-7, 8, size=(4, 1, 3, 3)), "bias": rng.integers(-99, 99, size=4),
               "M": rng.integers(2**14, 2**15, size=4), "S": np.full(4, 16)}),
        Layer("cat", "concat", ["a", "sq"], ["cat"]),
        Layer("shuf", "shuffle", ["cat"], ["shuf"], {"groups": 2}),
        conv("offs", "shuf", "offs", 8, 18, k=3, p=1, lo=-112, hi=112),
        Layer("bil", "bilinear_deform", ["shuf", "offs"], ["bil"],
              {"stride": 1, "padding": 1, "dilation": 1, "groups": 2, "F": 4, "R": 7, "w_bits": 4,
               "lo": 0, "hi": 255},
              {"weight": rng.integers(-7, 8, size=(8, 4, 3, 3)), "bias": rng.integers(-99, 99, size=8),
               "M": rng.integers(2**14, 2**15, size=8), "S": np.full(8, 28)}),
        Layer("pool", "maxpool", ["shuf"], ["pool"], {"kernel": 3, "stride": 2, "padding": 1}),
        Layer("up", "upsample2x", ["pool"], ["up"]),
        Layer("sum", "add", ["bil", "shuf"], ["sum"], {"lo": -128, "hi": 127},
              {"Ma": np.array([21000]), "Mb": np.array([30000]), "S": np.array([16])}),
        conv("hm", "sum", "hm", 8, 2, lo=-128, hi=127, wb=8),
    ]
    return QGraph(input="image", tensors=tensors, layers=layers, outputs={"hm": "hm", "up": "up"},
                  meta={"name": "small"})


def test_graph_run_matches_layer_by_layer_loops():
    g = small_graph()
    g.validate()
    img = torch.randint(0, 256, (1, 3, 8, 10), dtype=torch.uint8)
    v = ex.run_qgraph(g, img, keep_all=True)

    def rq(layer, acc):
        p, a = layer.params, layer.attrs
        out = np.zeros_like(acc)
        for idx in np.ndindex(acc.shape):
            c = idx[1]
            out[idx] = loop_requant(int(acc[idx]), int(p["bias"][c]), int(p["M"][c]), int(p["S"][c]),
                                    a["lo"], a["hi"])
        return out

    L = {layer.name: layer for layer in g.layers}
    stem = rq(L["stem"], loop_conv(img.long(), L["stem"].params["weight"], 2, 1, 1, 1))
    assert np.array_equal(v["stem"].numpy(), stem)
    dmap = rq(L["dil"], loop_conv(v["b"], L["dil"].params["weight"], 1, 0, 1, 1))
    assert np.array_equal(v["dmap"].numpy(), dmap) and dmap.max() <= 8
    assert np.array_equal(v["sq"].numpy(), rq(L["sq"], loop_square(v["b"], v["dmap"], L["sq"].params["weight"], 1)))
    off = v["offs"]
    bil = rq(L["bil"], loop_bilinear(v["shuf"], off, L["bil"].params["weight"], 1, 1, 1, 2, 4))
    assert np.array_equal(v["bil"].numpy(), bil)
    assert np.array_equal(v["pool"].numpy(), loop_maxpool(v["shuf"], 3, 2, 1))
    heads = ex.run_qgraph(g, img)
    assert set(heads) == {"hm", "up"} and torch.equal(heads["hm"], v["hm"])


def test_graph_accepts_numpy_hwc_images_and_rejects_bad_input():
    g = small_graph()
    img = np.random.default_rng(0).integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
    a = ex.run_qgraph(g, img)["hm"]
    b = ex.run_qgraph(g, torch.from_numpy(img).permute(2, 0, 1).contiguous())["hm"]
    assert torch.equal(a, b)
    with pytest.raises(ShapeError, match=r"expects \(N, 3, 8, 10\)"):
        ex.run_qgraph(g, torch.zeros(1, 3, 9, 10, dtype=torch.uint8))
    with pytest.raises(ShapeError, match="uint8"):
        ex.run_qgraph(g, torch.zeros(1, 3, 8, 10))


def test_qgraph_save_load_round_trip_and_corruption(tmp_path):
    g = small_graph()
    json_path, npz_path = g.save(tmp_path / "small.qgraph")
    g2 = QGraph.load(tmp_path / "small.qgraph")
    img = torch.randint(0, 256, (2, 3, 8, 10), dtype=torch.uint8)
    r1, r2 = ex.run_qgraph(g, img), ex.run_qgraph(g2, img)
    assert all(torch.equal(r1[k], r2[k]) for k in r1)
    assert g2.meta == {"name": "small"} and g2.tensors == g.tensors

    text = json_path.read_text()
    json_path.write_text(text.replace('"version": 1', '"version": 99'))
    with pytest.raises(QGraphFormatError, match="version 99"):
        QGraph.load(json_path)
    json_path.write_text(text)
    blob = bytearray(npz_path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    npz_path.write_bytes(bytes(blob))
    with pytest.raises(QGraphFormatError, match="checksum"):
        QGraph.load(json_path)
    json_path.write_text("{not json")
    with pytest.raises(QGraphFormatError, match="not valid JSON"):
        QGraph.load(json_path)
    with pytest.raises(QGraphFormatError, match="no such"):
        QGraph.load(tmp_path / "missing")


def test_qgraph_validate_rejects_bad_order():
    g = small_graph()
    g.layers = list(reversed(g.layers))
    with pytest.raises(QGraphFormatError, match="topological"):
        g.validate()
