"""Emulator == integer reference on every tensor: the CoDeNet reference model (zoo.CODENET_NAME) on held-out tree views,
CoDeNet a-e at their published sizes (slow), and hypothesis-generated random graphs."""

import numpy as np
import pytest
from checks import assert_bit_exact
from graphs import GraphBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convforge.hw.boards import get_board
from convforge.hw.config import EngineConfig
from convforge.sw.compiler import compile


@pytest.fixture(scope="module")
def shipped():
    from convforge.models.quant.qgraph import QGraph
    from convforge.models.train.zoo import CODENET_NAME, get_model

    graph = QGraph.load(get_model(CODENET_NAME).qgraph)
    return graph, compile(graph, get_board("ultra96v2").engine)


def _tree_views(size: int):
    from convforge.models.data import get_dataset

    return get_dataset("trees:test", input_size=size)


def test_shipped_model_is_bit_exact_on_a_held_out_tree_view(shipped):
    graph, prog = shipped
    views = _tree_views(graph.tensors[graph.input].shape[1])
    fused = 2 * prog.cycles["fused_chains"]
    assert fused > 0 and assert_bit_exact(graph, prog, views[0].image) + fused == len(graph.tensors) == 136


@pytest.mark.slow
def test_shipped_model_is_bit_exact_on_every_held_out_tree_view(shipped):
    graph, prog = shipped
    views = _tree_views(graph.tensors[graph.input].shape[1])
    for i in range(len(views)):
        assert_bit_exact(graph, prog, views[i].image)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["a", "b", "c", "d", "e"])
def test_codenet_configs_are_bit_exact_at_their_published_sizes(config):
    from convforge.models.quant.export import calibrated_codenet

    _, graph = calibrated_codenet(config)
    prog = compile(graph, get_board("ultra96v2").engine)
    _, h, w = graph.tensors[graph.input].shape
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert assert_bit_exact(graph, prog, image) + 2 * prog.cycles["fused_chains"] == len(graph.tensors)


# -- random graphs --------------------------------------------------------------------------
BLOCKS = ("pw", "dw", "dw2", "dilated", "square", "square2", "bilinear", "bilinear2", "pool", "shuffle_unit",
          "residual_relu6", "upsample", "kxk", "concat_reuse")


def _random_graph(seed: int, blocks: list[str], hw: tuple[int, int], ch: int):
    b = GraphBuilder(seed, hw)
    rng = b.rng
    x = b.conv("input", ch, 3, 1, w_bits=8)
    outputs = {}
    for i, block in enumerate(blocks):
        c = b.tensors[x].shape[0]
        relu = ("relu", "none", "relu6")[int(rng.integers(0, 3))]
        if block == "pw":
            x = b.conv(x, int(rng.integers(1, 40)), relu=relu, w_bits=int(rng.choice([4, 8])))
        elif block in ("dw", "dw2"):
            x = b.dw(x, stride=1 if block == "dw" else 2, relu=relu)
        elif block == "dilated":
            x = b.dw(x, dilation=int(rng.integers(2, 5)), relu=relu)
        elif block in ("square", "square2"):
            x = b.square(x, stride=1 if block == "square" else 2, d_max=int(rng.integers(1, 9)), relu=relu)
        elif block in ("bilinear", "bilinear2"):
            x = b.bilinear(x, stride=1 if block == "bilinear" else 2, relu=relu)
        elif block == "pool":
            k = int(rng.integers(2, 5))
            s, pad = int(rng.integers(1, 3)), int(rng.integers(0, k // 2 + 1))
            # a window larger than the (padded) map leaves no output pixel: not a valid layer
            if min(b.tensors[x].shape[1:]) + 2 * pad >= k:
                x = b.maxpool(x, k, s, pad)
        elif block == "shuffle_unit" and c >= 2:
            half = c // 2
            s0, s1 = b.split(x, [half, c - half])
            sig = b.tensors[s0].signed
            y = b.conv(b.dw(b.conv(s1, 8)), half, relu="none" if sig else "relu")
            x = b.shuffle(b.concat(s0, y), groups=2)
        elif block == "residual_relu6":
            y = b.conv(b.dw(b.conv(x, 2 * c, relu="relu6")), c, relu="none")
            x = b.add(x, y, relu="relu6")
        elif block == "upsample":
            x = b.conv(b.upsample(x), int(rng.integers(1, 20)), relu=relu)
        elif block == "kxk":
            x = b.conv(x, int(rng.integers(1, 20)), 3, int(rng.integers(1, 3)), relu=relu)
        elif block == "concat_reuse":
            sig = b.tensors[x].signed
            y = b.conv(x, int(rng.integers(1, 9)), relu="none" if sig else "relu")
            x = b.concat(y, x, y) if b.tensors[y].signed == sig else x
        outputs[f"o{i}"] = x
    return b.graph(outputs or {"x": x})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=5),
       hw=st.sampled_from([(8, 8), (12, 10), (9, 14)]), ch=st.integers(1, 37),
       lanes=st.sampled_from([(8, 4, 4), (16, 16, 16), (4, 8, 3)]))
def test_random_graphs_are_bit_exact_on_every_tensor(seed, blocks, hw, ch, lanes):
    graph = _random_graph(seed, blocks, hw, ch)
    cfg = EngineConfig(pe_ci=lanes[0], pe_co=lanes[1], dw_lanes=lanes[2], weight_depth=128)
    image = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    image[0, 0], image[-1, -1] = 0, 255
    assert_bit_exact(graph, compile(graph, cfg), image)
