"""`convforge demo` on the shipped model: the checks it reports are real checks."""

import json

import numpy as np
import pytest
import torch

from convforge.models.quant.executor import run_qgraph
from convforge.models.quant.qgraph import QGraph
from convforge.models.train.zoo import CODENET_NAME, MBV2_NAME, default_qgraph, get_model
from convforge.sw.cli import main


def test_demo_reports_reexport_and_integer_agreement(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--no-rtl", "--no-estimate", "--views", "1", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert summary["reexport_identical"] is True
    ir = summary["integer_reference"]
    outputs = sum(len(layer.outputs) for layer in QGraph.load(default_qgraph()).layers)
    assert ir["views"] == 1 and ir["layers_compared"] == outputs > 50 and ir["min_layer_within_1lsb"] == 1.0
    assert 0.0 <= summary["detections"]["ap50_int"] <= 1.0
    # the views also ran through the PYNQ driver on SimDevice emu, bit-exact with the integer reference
    assert summary["backend"] == "emu" and summary["bit_exact"] is True and summary["driver"]["views_bit_exact"] == 1
    assert summary["ap50"] == summary["detections"]["ap50_int"] and summary["fps"] > 0
    assert summary["resources"] == {"skipped_step": "--no-estimate"}
    assert (tmp_path / "detections_0.png").stat().st_size > 0
    assert QGraph.load(tmp_path / "model.json").meta == QGraph.load(default_qgraph()).meta


@pytest.mark.simulator("verilator")
@pytest.mark.parametrize("name", [CODENET_NAME, MBV2_NAME])
def test_network_square_deform_layer_runs_bit_exact_on_the_rtl(name):
    """decoder.0 of each shipped network through the Verilator model of the depthwise unit, built
    for the layer's weight width (4-bit in the CoDeNet reference, 8-bit in the MobileNetV2 detector)."""
    import dataclasses

    from convforge.hw.rtl.depthwise_model import layer_from_qgraph
    from convforge.sim.regress import TEST_CONFIG
    from convforge.sim.tb_depthwise import run_layer

    graph = QGraph.load(get_model(name).qgraph)
    image = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 3, 416, 416), dtype=np.uint8))
    values = run_qgraph(graph, image, keep_all=True)
    layer = graph.layer("decoder.0.dw")
    dw = layer_from_qgraph(layer, graph.tensors[layer.inputs[0]].signed)
    x, dmap = values[layer.inputs[0]][0].numpy(), values[layer.inputs[1]][0, 0].numpy()
    cfg = dataclasses.replace(TEST_CONFIG, w_bits=max(TEST_CONFIG.w_bits, int(layer.attrs["w_bits"])))
    got, want, cycles = run_layer(cfg, dw, x, dmap)
    assert got is not None and np.array_equal(got, values[layer.outputs[0]][0].numpy())
    assert np.array_equal(want, got) and cycles > 0


def test_demo_rtl_step_uses_the_board_engine_and_names_every_layer_it_cannot_run(monkeypatch):
    """No silent fallback (issue 13, kind 8): the board's own line width (256 on the
    Ultra96-V2), and a depthwise layer the engine cannot take is listed with its reason."""
    import dataclasses

    from convforge.hw import boards
    from convforge.hw.rtl.depthwise_model import golden_depthwise
    from convforge.sim import tb_depthwise
    from convforge.sw.commands import demo

    graph = QGraph.load(default_qgraph())
    image = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (1, 3, 416, 416), dtype=np.uint8))
    values = run_qgraph(graph, image, keep_all=True)
    seen = []

    def fake_run_layer(cfg, layer, x, dmap=None, offsets=None, **kw):  # no simulator needed: RTL tested elsewhere
        seen.append(cfg.line_width)
        want = golden_depthwise(cfg, layer, x, dmap, offsets)
        return want, want, 1

    monkeypatch.setattr(tb_depthwise, "run_layer", fake_run_layer)
    report = demo._rtl_depthwise(graph, values, "ultra96v2", lambda *a: None)
    assert set(seen) == {256} and report["engine"]["line_width"] == 256
    assert report["complete"] and report["skipped"] == {} and report["all_bit_exact"]
    assert len(report["layers"]) == report["depthwise_layers"] >= 13

    narrow = dataclasses.replace(boards.get_board("ultra96v2"), engine=dataclasses.replace(
        boards.get_board("ultra96v2").engine, line_width=64))
    monkeypatch.setattr(boards, "get_board", lambda name: narrow)
    lines = []
    report = demo._rtl_depthwise(graph, values, "ultra96v2", lines.append)
    assert not report["complete"] and report["skipped"]
    for name, why in report["skipped"].items():
        assert "line_width=64" in why
        assert any(line.strip().startswith(f"SKIPPED {name}:") for line in lines)
    assert len(report["layers"]) + len(report["skipped"]) == report["depthwise_layers"]
