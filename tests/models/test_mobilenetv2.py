"""MobileNetV2: the published network, torchvision's ImageNet weights, the detector, and its
W4A8 QAT/export with ReLU6 and residual adds (bit-exact round trip)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from convforge.errors import CheckpointError, ConfigError, ExportError
from convforge.models.nets import MobileNetV2, build_mobilenetv2_det, count_params_macs, trace
from convforge.models.nets.mobilenetv2 import (
    MobileNetV2DetConfig,
    block_specs,
    load_imagenet_backbone,
    load_imagenet_classifier,
    load_torchvision_state,
    make_divisible,
    read_imagenet_state,
    torchvision_key_map,
)
from convforge.models.quant import calibrate, export_qgraph, prepare_qat, qat_activations
from convforge.models.quant.executor import run_qgraph
from convforge.models.quant.layers import QAdd, derive_add_requant
from convforge.models.quant.qgraph import QGraph
from convforge.models.train.modelspec import ModelSpec, resolve_config


@pytest.fixture(scope="module")
def imagenet_state():
    state, _ = read_imagenet_state()
    return state


def test_published_parameter_and_mac_counts():
    counts = count_params_macs(MobileNetV2(1.0), (224, 224))
    assert counts["params"] == 3_504_872  # torchvision's count (paper: 3.4 M)
    assert abs(counts["conv_macs"] / 300e6 - 1) < 0.03  # paper Table 4: 300 M


def test_width_multipliers_round_channels_like_torchvision():
    assert [make_divisible(c * 0.35) for c in (32, 16, 24, 96, 320)] == [16, 8, 8, 32, 112]
    assert block_specs(0.5)[-1] == (80, 160, 1, 6)
    small = count_params_macs(MobileNetV2(0.35), (224, 224))
    assert small["params"] < count_params_macs(MobileNetV2(0.75), (224, 224))["params"] < 3_504_872
    with pytest.raises(ConfigError, match="width"):
        MobileNetV2(0.0)


def test_every_imagenet_tensor_lands_unchanged(imagenet_state):
    model = load_imagenet_classifier(MobileNetV2(1.0))
    own = model.state_dict()
    mapping = torchvision_key_map(model.features, "features.")
    mapping.update({"classifier.1.weight": "classifier.weight", "classifier.1.bias": "classifier.bias"})
    assert set(mapping) == set(imagenet_state)  # every torchvision tensor is used
    assert len(set(mapping.values())) == len(mapping) == len(own)  # one-to-one onto the model
    for tv_key, key in mapping.items():
        assert own[key].dtype == imagenet_state[tv_key].dtype, tv_key
        assert torch.equal(own[key], imagenet_state[tv_key]), tv_key


def test_missing_and_unexpected_keys_are_named(imagenet_state):
    model = MobileNetV2(1.0)
    state = dict(imagenet_state)
    del state["features.5.conv.1.0.weight"]
    state["features.5.conv.9.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_torchvision_state(model, model.features, state, "features.", classifier="classifier", source="w.pth")
    msg = str(err.value)
    assert "w.pth" in msg and "missing keys ['features.5.conv.1.0.weight']" in msg
    assert "unexpected keys ['features.5.conv.9.weight']" in msg


def test_other_width_is_a_shape_error_naming_the_tensor(imagenet_state):
    model = MobileNetV2(0.5)
    with pytest.raises(CheckpointError, match=r"features\.0\.0\.weight has shape .*width"):
        load_torchvision_state(model, model.features, imagenet_state, "features.", classifier="classifier")


def test_detector_backbone_takes_the_imagenet_weights(imagenet_state):
    det = build_mobilenetv2_det("mbv2-trees", num_classes=1)
    skipped = load_imagenet_backbone(det)
    own = det.state_dict()
    mapping = torchvision_key_map(det.backbone, "backbone.")
    for tv_key, key in mapping.items():
        assert torch.equal(own[key], imagenet_state[tv_key]), tv_key
    # a stride-16 backbone (blocks 0-12, 96 channels) leaves out blocks 13-16, the final 1x1 and the classifier
    assert {k.split(".")[1] for k in skipped if k.startswith("features.")} == {"14", "15", "16", "17", "18"}
    assert "classifier.1.weight" in skipped
    # the stem reads raw pixels with ImageNet normalisation folded in: equal to torchvision's conv on
    # normalised pixels away from the top/left border (where the raw zero padding differs by design)
    x = torch.rand(1, 3, 64, 64) * 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref = torch.nn.functional.conv2d((x / 255 - mean) / std, imagenet_state["features.0.0.weight"], None, 2, 1)
    w, b = det.backbone.stem.conv_weight_bias()
    ours = torch.nn.functional.conv2d(x, w, b, 2, 1)
    assert torch.allclose(ours[..., 1:, 1:], ref[..., 1:, 1:], rtol=1e-4, atol=1e-3)


def test_detector_outputs_and_config_checks():
    det = build_mobilenetv2_det("mbv2-trees", num_classes=2)
    out = det(torch.zeros(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"hm": (1, 2, 16, 24), "wh": (1, 2, 16, 24),
                                                           "reg": (1, 2, 16, 24)}  # fmt: skip
    s32 = build_mobilenetv2_det("mbv2-s32", num_classes=1)
    assert s32(torch.zeros(1, 3, 64, 64))["hm"].shape == (1, 1, 16, 16)
    assert len(s32.backbone.blocks) == 17 and len(det.backbone.blocks) == 13
    noskip = build_mobilenetv2_det("mbv2-trees-noskip", num_classes=1)
    assert len(noskip.skips) == 0 and len(det.skips) == 2
    assert list(build_mobilenetv2_det("mbv2-trees-s8", num_classes=1).skips) == ["s8"]
    assert noskip(torch.zeros(1, 3, 64, 64))["hm"].shape == (1, 1, 16, 16)
    with pytest.raises(ConfigError, match="skip strides"):
        MobileNetV2DetConfig(skips=(16,))
    with pytest.raises(ConfigError, match="at least 2 decoder blocks"):
        MobileNetV2DetConfig(decoder_channels=(32,))
    with pytest.raises(ConfigError, match="unknown MobileNetV2 detector config"):
        build_mobilenetv2_det("mbv2-nope")


def test_model_spec_round_trips_the_family():
    spec = ModelSpec(resolve_config("mbv2-trees", input_size=128), 1, ["tree"], {"w_bits": 4, "a_bits": 8,
                     "first_w_bits": 8, "dw_w_bits": 8})  # fmt: skip
    doc = spec.to_dict()
    assert doc["config"]["family"] == "mobilenetv2"
    again = ModelSpec.from_dict(json.loads(json.dumps(doc)))
    assert again.config == spec.config and again.quant == spec.quant
    model = again.build(quantized=True)
    widths = {m.qname: m.w_bits for m in model.modules() if hasattr(m, "w_bits") and hasattr(m, "qname")}
    assert widths["backbone.blocks.3.dw"] == 8 and widths["backbone.blocks.3.expand"] == 4
    assert widths["decoder.0.dw"] == 8 and widths["backbone.stem"] == 8


# -- QAT and export ---------------------------------------------------------------------------

HW = (32, 32)


def _images(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *HW), generator=gen).float()


@pytest.fixture(scope="module")
def qat_det():
    """A narrow MobileNetV2 detector (width 0.35) with realistic BN statistics, W4A8, calibrated."""
    torch.manual_seed(0)
    model = build_mobilenetv2_det(MobileNetV2DetConfig(width=0.35, decoder_channels=(16, 16, 16), head_conv=16), 2)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    for block in model.decoder:
        torch.nn.init.normal_(block.dilation.conv.weight, std=2.0 / block.dilation.in_ch**0.5)
        torch.nn.init.constant_(block.dilation.conv.bias, 3.0)
    model.train()
    with torch.no_grad():
        for i in range(3):
            model(_images(4, 100 + i))
    prepare_qat(model)
    calibrate(model, [_images(2, 200 + i) for i in range(3)])
    return model.eval()


@pytest.fixture(scope="module")
def round_trip(qat_det, tmp_path_factory):
    path = tmp_path_factory.mktemp("qgraph") / "mbv2"
    export_qgraph(qat_det, HW).save(path)
    graph = QGraph.load(path)
    images = _images(1, 7)
    return graph, run_qgraph(graph, images.to(torch.uint8), keep_all=True), qat_activations(qat_det, images)


def test_round_trip_is_bit_exact_on_every_layer(round_trip):
    graph, ints, acts = round_trip
    assert set(graph.tensors) <= set(acts)
    for name, ttype in graph.tensors.items():
        fake = torch.round(acts[name].to(torch.float64) / ttype.scale).to(torch.int64)
        assert np.array_equal(fake.numpy(), ints[name].numpy()), name


def test_export_writes_relu6_linear_bottlenecks_and_adds(round_trip):
    graph, ints, _ = round_trip
    adds = [layer for layer in graph.layers if layer.op == "add"]
    residual = [a for a in adds if a.name.startswith("backbone.")]
    skips = [a for a in adds if a.name.startswith("skips.")]
    # width 0.35: blocks 2, 4, 5, 7, 8, 9, 11, 12 are stride 1 with in == out (block 1 is 8 -> 8 but stride 2)
    assert len(residual) == 8 and len(skips) == 2
    for a in residual:
        assert graph.tensors[a.outputs[0]].signed and (a.attrs["lo"], a.attrs["hi"]) == (-128, 127)
        assert all(graph.tensors[t].signed for t in a.inputs)  # linear bottlenecks: int8
        assert 1 << 14 <= max(int(a.params["Ma"][0]), int(a.params["Mb"][0])) < 1 << 15
    for a in skips:
        assert not graph.tensors[a.outputs[0]].signed and a.attrs["lo"] == 0  # add + ReLU
    relu6 = graph.layer("backbone.blocks.2.expand")
    scale = graph.tensors[relu6.outputs[0]].scale
    assert relu6.attrs["lo"] == 0 and relu6.attrs["hi"] == min(255, round(6 / scale))  # INTEGER_SPEC §3
    assert int(ints["backbone.blocks.2.expand"].max()) <= relu6.attrs["hi"]
    project = graph.layer("backbone.blocks.2.project")
    assert graph.tensors[project.outputs[0]].signed and (project.attrs["lo"], project.attrs["hi"]) == (-128, 127)
    assert int(ints["backbone.blocks.2.add"].min()) < 0  # the residual sum is signed and used


def test_add_training_path_within_one_lsb_of_integer_path(qat_det):
    images = _images(1, 11)
    with torch.no_grad():
        graph = trace(qat_det, images, keep_values=True)
        checked = 0
        for node in graph.nodes:
            if not isinstance(node.module, QAdd):
                continue
            node.module.train()
            node.module.act_obs.frozen = True
            try:
                fake = node.module(*[graph.values[t] for t in node.inputs])
            finally:
                node.module.act_obs.frozen = False
                node.module.eval()
            diff = ((fake - graph.values[node.outputs[0]]).abs() / node.module.act_obs.scale()).round()
            assert int(diff.max()) <= 1, node.name
            checked += 1
    assert checked == 10


def test_derive_add_requant_shares_one_shift():
    Ma, Mb, S = derive_add_requant(0.75, 0.3, "x")
    assert 1 << 14 <= Ma < 1 << 15 and Ma / 2**S == pytest.approx(0.75, rel=1e-4)
    assert Mb / 2**S == pytest.approx(0.3, rel=1e-3)
    assert derive_add_requant(0.3, 0.75) == (Mb, Ma, S)
    with pytest.raises(ExportError, match="'bad'"):
        derive_add_requant(float("nan"), 1.0, "bad")


def test_model_info_reports_the_published_mobilenetv2(capsys):
    from convforge.sw.commands import model_info as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--model", "mobilenetv2", "--width", "1.0", "--input", "224", "--json"])
    assert command.run(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 3_504_872 and info["input"] == [224, 224]
    assert abs(info["conv_macs"] / 300e6 - 1) < 0.03
    assert command.run(parser.parse_args(["--model", "mobilenetv2-det", "--input", "256"])) == 0
    assert "mbv2-trees at 256x256" in capsys.readouterr().out


def test_imagenet_init_is_refused_where_no_weights_exist(tmp_path):
    from convforge.models.train.trainer import TrainConfig, Trainer

    with pytest.raises(ConfigError, match="--init"):
        Trainer(TrainConfig(out=str(tmp_path), init="imagenet-ish"))
    trainer = Trainer(TrainConfig(out=str(tmp_path), model="tiny", init="imagenet", limit=1), log=lambda m: None)
    spec = ModelSpec(resolve_config("tiny"), 1, ["tree"])
    with pytest.raises(ConfigError, match="no ImageNet weights ship for the 'tiny' CoDeNet"):
        trainer._initialise(spec.build(), spec)
    mbv2 = ModelSpec(resolve_config("mbv2-trees", width=0.5), 1, ["tree"])
    with pytest.raises(ConfigError, match="width 1.0, not 0.5"):
        trainer._initialise(mbv2.build(), mbv2)


def test_zoo_names_the_default_and_keeps_the_codenet_reference():
    from convforge.models.train import zoo

    names = zoo.model_names()
    assert names[0] == zoo.DEFAULT_NAME and set(names) == {zoo.MBV2_NAME, zoo.CODENET_NAME}
    codenet = zoo.get_model(zoo.CODENET_NAME)
    assert codenet.checkpoint.name == "codenet_trees_w4a8.pt" and codenet.qgraph.name == "codenet_trees_w4a8.json"
    assert codenet.card.is_file()
    assert zoo.default_checkpoint() == zoo.default_model().checkpoint
    with pytest.raises(ConfigError, match="no shipped model named 'nope'; choose one of"):
        zoo.get_model("nope")


def test_shipped_mobilenetv2_model_files():
    from convforge.models.train.checkpoint import load_checkpoint
    from convforge.models.train.zoo import MBV2_NAME, get_model

    model = get_model(MBV2_NAME)
    assert model.checkpoint.stat().st_size <= 5_000_000  # issue 12: <= 5 MB
    doc = load_checkpoint(model.checkpoint)
    assert doc["model"]["config"]["family"] == "mobilenetv2" and doc["phase"] == "qat"
    assert "float_state_dict" in doc and "optimizer" not in doc and doc["qgraph"] == model.qgraph.name
    assert [r["phase"] for r in doc["history"]][0] == "float" and doc["history"][-1]["phase"] == "qat"
    graph = QGraph.load(model.qgraph)
    ops = [layer.op for layer in graph.layers]
    assert ops.count("add") == 10 and ops.count("square_deform_dw") == 3  # 8 residual + 2 skips
    assert graph.meta["model"] == "MobileNetV2" and graph.tensors[graph.input].shape == (3, 416, 416)
    assert {layer.attrs["w_bits"] for layer in graph.layers if layer.op == "conv"} <= {4, 8}
    assert model.card.read_text().startswith("# mbv2_trees_w4a8")
