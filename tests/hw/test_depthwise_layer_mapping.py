"""QGraph layers lifted onto the depthwise unit compute what the integer reference does."""

import numpy as np
import pytest
import torch

from convforge.errors import ShapeError
from convforge.hw.config import EngineConfig
from convforge.hw.rtl.depthwise_model import golden_depthwise, layer_from_qgraph
from convforge.models.quant.executor import run_qgraph
from convforge.models.quant.qgraph import QGraph
from convforge.models.train.zoo import CODENET_NAME, MBV2_NAME, get_model


@pytest.mark.parametrize("name", [CODENET_NAME, MBV2_NAME])
def test_every_depthwise_layer_of_every_shipped_network_maps_exactly(name):
    graph = QGraph.load(get_model(name).qgraph)
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 3, 416, 416), dtype=np.uint8))
    values = run_qgraph(graph, image, keep_all=True)
    modes = {}
    for layer in graph.layers:
        try:
            dw = layer_from_qgraph(layer, graph.tensors[layer.inputs[0]].signed)
        except ShapeError:
            assert not (layer.op == "conv" and layer.attrs["groups"] > 1 and layer.attrs["kernel"] == [3, 3])
            continue
        modes[dw.mode] = modes.get(dw.mode, 0) + 1
        x = values[layer.inputs[0]][0].numpy()
        dmap = values[layer.inputs[1]][0, 0].numpy() if dw.mode == "square" else None
        cfg = EngineConfig(dw_lanes=16, line_width=-(-x.shape[2] // 32) * 32)
        want = golden_depthwise(cfg, dw, x, dmap, None)
        assert np.array_equal(want, values[layer.outputs[0]][0].numpy()), layer.name
    assert modes.get("square") == 3 and modes.get("regular", 0) >= 10


def test_pointwise_layer_is_refused_with_its_name():
    graph = QGraph.load(get_model(CODENET_NAME).qgraph)
    pointwise = next(layer for layer in graph.layers if layer.op == "conv" and layer.attrs["kernel"] == [1, 1])
    with pytest.raises(ShapeError, match=pointwise.name):
        layer_from_qgraph(pointwise, False)
