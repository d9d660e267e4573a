"""W4A8 QAT of CoDeNet-tiny and its QGraph export, checked against the integer executor."""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import pytest
import torch

from convforge.errors import ConfigError, ConvforgeError, ExportError, QGraphFormatError
from convforge.models.nets import ConvBNAct, build_codenet, trace
from convforge.models.quant import calibrate, export_qgraph, freeze_observers, prepare_qat, qat_activations
from convforge.models.quant.compare import heatmap_peaks
from convforge.models.quant.executor import run_qgraph
from convforge.models.quant.export import accumulator_bound
from convforge.models.quant.layers import QConvBNAct, QSquareDeformDW
from convforge.models.quant.qgraph import QGraph, TensorType

HW = (64, 64)


def _random_images(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *HW), generator=gen).float()


def _qat_tiny(seed: int = 0) -> torch.nn.Module:
    """CoDeNet-tiny with realistic BN statistics and dilation maps spanning [0, D_max], W4A8, calibrated."""
    torch.manual_seed(seed)
    model = build_codenet("tiny", num_classes=3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the warm-up batches
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    for block in model.decoder:
        torch.nn.init.normal_(block.dilation.conv.weight, std=2.0 / block.dilation.in_ch**0.5)
        torch.nn.init.constant_(block.dilation.conv.bias, 3.0)
    model.train()
    with torch.no_grad():
        for i in range(3):
            model(_random_images(4, 100 + i))
    prepare_qat(model)
    calibrate(model, [_random_images(2, 200 + i) for i in range(3)])
    return model.eval()


@pytest.fixture(scope="module")
def qat_model():
    return _qat_tiny()


@pytest.fixture(scope="module")
def round_trip(qat_model, tmp_path_factory):
    graph = export_qgraph(qat_model, HW)
    path = tmp_path_factory.mktemp("qgraph") / "tiny"
    graph.save(path)
    loaded = QGraph.load(path)
    images = _random_images(2, 7)
    ints = run_qgraph(loaded, images.to(torch.uint8), keep_all=True)
    acts = qat_activations(qat_model, images)
    return loaded, ints, acts, path


def test_round_trip_every_layer_within_one_lsb(round_trip):
    graph, ints, acts, _ = round_trip
    assert set(graph.tensors) <= set(acts)
    for name, ttype in graph.tensors.items():
        q = ints[name].to(torch.float64)
        fake = acts[name].to(torch.float64) / ttype.scale
        within = ((fake - q).abs() <= 1.0 + 1e-6).to(torch.float64).mean().item()
        assert within >= 0.99, f"{name}: only {within:.4f} of the elements within 1 LSB"


def test_round_trip_is_bit_exact(round_trip):
    """The QAT eval path computes the integer contract itself, so it is exact, not just close."""
    graph, ints, acts, _ = round_trip
    for name, ttype in graph.tensors.items():
        fake = torch.round(acts[name].to(torch.float64) / ttype.scale).to(torch.int64)
        assert torch.equal(fake, ints[name]), name


def test_round_trip_heatmap_peaks_equal(round_trip):
    graph, ints, acts, _ = round_trip
    assert torch.equal(heatmap_peaks(ints["hm"]), heatmap_peaks(acts[graph.outputs["hm"]]))
    assert graph.tensors[graph.outputs["hm"]].signed  # int8 logits


def test_round_trip_exercises_every_dilation(round_trip):
    graph, ints, _, _ = round_trip
    values = torch.cat([ints[f"decoder.{i}.dilation"].flatten() for i in range(3)])
    d_max = graph.meta["d_max"]
    assert int(values.min()) >= 0 and int(values.max()) <= d_max
    assert len(torch.unique(values)) >= 3  # not a plain dw 3x3 in disguise


def test_export_names_types_and_meta(round_trip):
    graph, _, _, path = round_trip
    names = [layer.name for layer in graph.layers]
    assert names[0] == "backbone.stem.conv"
    assert "backbone.stage2.0.branch2.conv1" in names
    stem = graph.layer("backbone.stem.conv")
    assert stem.inputs == ["input"] and stem.attrs["stride"] == [4, 4] and stem.attrs["w_bits"] == 8
    assert graph.tensors["input"] == TensorType((3, *HW), 8, False, 1.0)
    dw = graph.layer("decoder.0.dw")
    assert dw.op == "square_deform_dw" and dw.inputs == ["backbone.conv5", "decoder.0.dilation"]
    dil = graph.layer("decoder.0.dilation")
    assert (dil.attrs["lo"], dil.attrs["hi"]) == (0, 8) and graph.tensors["decoder.0.dilation"].scale == 1.0
    assert graph.layer("backbone.stage2.1.split").outputs == ["backbone.stage2.1.split.0", "backbone.stage2.1.split.1"]
    for layer in graph.layers:
        if layer.op == "conv":
            w = layer.params["weight"]
            q = (1 << (layer.attrs["w_bits"] - 1)) - 1
            assert np.abs(w).max() <= q, layer.name
            assert np.all((layer.params["M"] == 0) | ((layer.params["M"] >= 1 << 14) & (layer.params["M"] < 1 << 15)))
        if layer.op == "concat":  # concat inputs share one scale
            assert len({graph.tensors[t].scale for t in layer.inputs}) == 1, layer.name
    assert graph.layer("heads.hm.out").attrs["w_bits"] == 8
    assert graph.layer("backbone.stage3.0.branch2.conv1").attrs["w_bits"] == 4
    meta = graph.meta
    assert meta["config"] == "tiny" and meta["num_classes"] == 3 and meta["input_size"] == list(HW)
    assert meta["output_stride"] == 4 and meta["heads"] == ["hm", "wh", "reg"]
    assert meta["w_bits"] == 4 and meta["a_bits"] == 8 and len(meta["mean"]) == 3
    assert graph.outputs == {"hm": "heads.hm.out", "wh": "heads.wh.out", "reg": "heads.reg.out"}
    assert json.loads(path.with_suffix(".json").read_text())["format"] == "convforge.qgraph"


def test_prepare_qat_ties_stage_scales_and_fixes_dilation_scale(qat_model):
    stage = qat_model.backbone.stage2
    shared = stage[0].branch1.conv.act_obs
    assert stage[0].branch2.conv2.act_obs is shared
    assert stage[1].branch2.conv2.act_obs is shared
    assert qat_model.backbone.stage3[0].branch1.conv.act_obs is not shared
    dil = qat_model.decoder[1].dilation
    assert isinstance(dil, QConvBNAct) and dil.act_obs.scale() == 1.0 and dil.act_obs.bounds() == (0, 8)
    assert isinstance(qat_model.decoder[1].dw, QSquareDeformDW)
    assert qat_model.backbone.stem.conv.in_obs is qat_model.qat_input


def test_weights_quantise_per_channel_to_the_narrow_range(qat_model):
    p = qat_model.backbone.stage2[0].branch2.conv1.integer_params()
    w = p.weight.flatten(1)
    assert int(w.abs().max()) == 7 and int(w.min()) >= -7
    assert torch.all(w.abs().max(dim=1).values == 7)  # each channel's largest weight maps to qmax
    assert p.w_scale.shape == (w.shape[0],)


def test_training_path_matches_integer_path_layer_by_layer(qat_model):
    """Fed the same inputs, every block's float32 training path (exact real multipliers,
    straight-through rounding) lands within 1 LSB of its integer eval path."""
    images = _random_images(2, 11)
    with torch.no_grad():
        graph = trace(qat_model, images, keep_values=True)
        freeze_observers(qat_model)
        try:
            for node in graph.nodes:
                if not isinstance(node.module, QConvBNAct | QSquareDeformDW):
                    continue
                args = [graph.values[t] for t in node.inputs]
                node.module.train()
                fake = node.module(*args)
                node.module.eval()
                step = node.module.act_obs.scale()
                diff = ((fake - graph.values[node.outputs[0]]).abs() / step).round()
                assert int(diff.max()) <= 1, node.name
                assert (diff == 0).float().mean() > 0.99, node.name
        finally:
            freeze_observers(qat_model, False)
            qat_model.eval()


def test_training_path_gradients_reach_weights_bn_and_dilation(qat_model):
    model = copy.deepcopy(qat_model).train()
    out = model(_random_images(2, 11))
    sum((v**2).mean() for v in out.values()).backward()
    conv = model.backbone.stage2[0].branch2.conv1
    assert conv.conv.weight.grad is not None and conv.conv.weight.grad.abs().sum() > 0
    assert conv.bn.weight.grad is not None and conv.bn.bias.grad.abs().sum() > 0
    assert model.heads.hm.out.conv.bias.grad.abs().sum() > 0
    # decoder.2 runs on 8x8 maps, so its square taps stay inside the image and its dilation learns
    assert model.decoder[2].dilation.conv.weight.grad.abs().sum() > 0
    assert model.decoder[2].dw.weight.grad.abs().sum() > 0


def test_observers_follow_training_and_freeze(qat_model):
    model = copy.deepcopy(qat_model).train()
    obs = model.backbone.conv5.act_obs
    before = float(obs.max_val)
    with torch.no_grad():
        model(_random_images(1, 1) * 0.5)  # darker images: smaller activations move the EMA
    moved = float(obs.max_val)
    assert moved != before
    freeze_observers(model)
    with torch.no_grad():
        model(_random_images(1, 2))
    assert float(obs.max_val) == moved


def test_qat_state_dict_round_trips(qat_model):
    clone = prepare_qat(build_codenet("tiny", num_classes=3))
    clone.load_state_dict(qat_model.state_dict())
    clone.eval()
    images = _random_images(1, 5)
    with torch.no_grad():
        a, b = qat_model(images), clone(images)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_uncalibrated_model_refuses_to_evaluate():
    model = prepare_qat(build_codenet("tiny", num_classes=2)).eval()
    with pytest.raises(ConvforgeError, match="calibrate"):
        model(_random_images(1, 0))


def test_prepare_qat_twice_is_an_error(qat_model):
    with pytest.raises(ConfigError, match="already quantised"):
        prepare_qat(qat_model)


def test_corrupt_file_and_wrong_version_are_format_errors(round_trip, tmp_path):
    graph, _, _, _ = round_trip
    json_path, npz_path = graph.save(tmp_path / "g")
    blob = bytearray(npz_path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    npz_path.write_bytes(bytes(blob))
    with pytest.raises(QGraphFormatError, match="checksum"):
        QGraph.load(json_path)
    graph.save(tmp_path / "g")
    doc = json.loads(json_path.read_text())
    doc["version"] = 99
    json_path.write_text(json.dumps(doc))
    with pytest.raises(QGraphFormatError, match="version 99"):
        QGraph.load(json_path)


def test_shift_out_of_range_names_the_layer(qat_model):
    model = copy.deepcopy(qat_model)
    model.heads.wh.out.act_obs.max_val.fill_(1e30)  # output scale so large that r underflows S <= 62
    with pytest.raises(ExportError, match=r"heads\.wh\.out.*outside \[0, 62\]"):
        export_qgraph(model, HW)


def test_accumulator_bound_names_layer_bound_and_width(qat_model):
    with pytest.raises(ExportError, match=r"'backbone\.stem\.conv'.*\d+.*16-bit"):
        export_qgraph(qat_model, HW, acc_bits=16)
    p = qat_model.backbone.stem.conv.integer_params()
    bound = accumulator_bound(p.weight, p.bias, TensorType((3, *HW), 8, False, 1.0))
    by_hand = max(int(p.weight[o].abs().sum()) * 255 + abs(int(p.bias[o])) for o in range(p.weight.shape[0]))
    assert bound == by_hand


def test_export_refuses_float_and_unquantised_blocks(qat_model):
    with pytest.raises(ExportError, match="not quantised"):
        export_qgraph(build_codenet("tiny", num_classes=2), HW)
    model = copy.deepcopy(qat_model)
    model.heads.reg.set_submodule("dw", ConvBNAct(32, 32, 3, groups=32))
    with pytest.raises(ExportError, match=r"'heads\.reg\.dw' \(ConvBNAct\) is not quantised"):
        export_qgraph(model, HW)


def test_export_command_writes_a_loadable_qgraph(tmp_path, capsys):
    from convforge.sw.commands import export as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    out = tmp_path / "tiny"
    args = parser.parse_args(["--config", "tiny", "--classes", "4", "--input", "64", "64", "--out", str(out)])
    assert command.run(args) == 0
    text = capsys.readouterr().out
    assert "backbone.stem.conv" in text and "wrote" in text
    graph = QGraph.load(out)
    assert graph.tensors["heads.hm.out"].shape == (4, 16, 16)
    assert run_qgraph(graph, torch.zeros(1, 3, 64, 64, dtype=torch.uint8))["hm"].shape == (1, 4, 16, 16)
