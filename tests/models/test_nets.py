"""CoDeNet family: shapes, published figures, input-normalisation folding, tracing, CLI."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convforge.errors import ConfigError, ExportError
from convforge.models.nets import (
    CONFIGS,
    Concat,
    ConvBNAct,
    SquareDeformDW,
    build_codenet,
    count_params_macs,
    trace,
)
from convforge.models.nets.codenet import HM_BIAS_INIT


@pytest.mark.parametrize("config", list(CONFIGS))
def test_forward_shapes_every_config(config):
    torch.manual_seed(0)
    model = build_codenet(config, num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 96) * 255)
    assert set(out) == {"hm", "wh", "reg"}
    assert out["hm"].shape == (1, 5, 16, 24)
    assert out["wh"].shape == (1, 2, 16, 24)
    assert out["reg"].shape == (1, 2, 16, 24)
    assert torch.isfinite(out["hm"]).all()


# Published figures (CoDeNet, FPGA'21, Table 3 / the authors' README): params, GMAC.
PUBLISHED = {
    "a": (1.59e6, 0.29e9),
    "b": (1.59e6, 0.29e9),
    "c": (1.59e6, 1.14e9),
    "d": (6.08e6, 3.54e9),
    "e": (6.08e6, 3.58e9),
}


@pytest.mark.parametrize("config", list(PUBLISHED))
def test_counter_matches_published_figures_within_3_percent(config):
    params, macs = PUBLISHED[config]
    counts = count_params_macs(build_codenet(config, num_classes=20), CONFIGS[config].input_size)
    assert abs(counts["params"] / params - 1) < 0.03, counts
    assert abs(counts["macs"] / macs - 1) < 0.03, counts
    assert counts["conv_macs"] < counts["macs"]


def test_counter_counts_each_layer_kind_by_formula():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = ConvBNAct(3, 8, 3, 2)  # 8*8*8 outputs x 3*9
            self.d = ConvBNAct(8, 1, 1, bn=False, bias=True, act="dilation")  # 64 outputs x 8
            self.dw = SquareDeformDW(8)  # 8*8*8 outputs x 9
            self.b = ConvBNAct(8, 8, 3, groups=8)  # 512 outputs x 9

        def forward(self, x):
            y = self.a(x)
            return self.b(self.dw(y, self.d(y)))

    counts = count_params_macs(Net(), (16, 16))
    conv = 512 * 27 + 64 * 8 + 512 * 9 + 512 * 9
    assert counts["conv_macs"] == conv
    assert counts["macs"] == conv + 512 + 512  # two BatchNorms
    # the reduced-resolution pass scales exactly
    assert count_params_macs(Net(), (64, 128))["conv_macs"] == conv * 32


def test_counter_reduced_pass_equals_full_resolution_pass():
    model = build_codenet("tiny")
    full = count_params_macs(model, (96, 160))  # not reducible: runs at full size
    reduced = count_params_macs(model, (192, 320))  # reduced to 96x160 then scaled
    assert reduced["macs"] == 4 * full["macs"]


def test_input_normalisation_folding_is_exact_on_interior_pixels():
    torch.manual_seed(1)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    layer = ConvBNAct(3, 6, 3, 2, bn=False, bias=True, act="none", input_norm=(mean, std)).double()
    nn.init.normal_(layer.conv.bias)
    raw = torch.randint(0, 256, (2, 3, 17, 17)).double()
    # the layer's own (float32-rounded) mean/std, so the comparison is float64-exact
    normalised = (raw / 255 - layer.in_mean.view(1, 3, 1, 1)) / layer.in_std.view(1, 3, 1, 1)
    expected = F.conv2d(normalised, layer.conv.weight, layer.conv.bias, stride=2, padding=1)
    got = layer(raw)
    # interior outputs (no tap in the padding) agree to float64 rounding
    torch.testing.assert_close(got[:, :, 1:-1, 1:-1], expected[:, :, 1:-1, 1:-1], rtol=1e-12, atol=1e-10)
    # on the border the folded layer pads with raw pixel 0 (what the integer graph does), not with the mean
    assert not torch.allclose(got[:, :, 0, 0], expected[:, :, 0, 0])


def test_stem_reads_raw_pixels():
    model = build_codenet("tiny")
    assert model.backbone.stem.conv.folds_input_norm
    assert model.backbone.stem.conv.conv.stride == (4, 4)
    assert build_codenet("b").backbone.stem.conv.conv.stride == (2, 2)


def test_hm_bias_initialised_for_focal_loss():
    model = build_codenet("tiny", num_classes=3)
    assert torch.all(model.heads["hm"].out.conv.bias == HM_BIAS_INIT)


def test_gradients_reach_every_parameter():
    torch.manual_seed(2)
    model = build_codenet("tiny", num_classes=3).train()
    out = model(torch.rand(2, 3, 64, 64) * 255)
    loss = sum((v**2).mean() for v in out.values())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # the dilation branch learns through the square deformable sampling
    assert model.decoder[0].dilation.conv.weight.grad.abs().sum() > 0


def test_trace_names_blocks_by_module_path():
    model = build_codenet("tiny", num_classes=3).eval()
    with torch.no_grad():
        graph = trace(model, torch.zeros(1, 3, 64, 64))
    names = [n.name for n in graph.nodes]
    assert names[0] == "backbone.stem.conv"
    assert "backbone.stage2.0.branch2.conv1" in names
    assert graph.outputs == {"hm": "heads.hm.out", "wh": "heads.wh.out", "reg": "heads.reg.out"}
    split = next(n for n in graph.nodes if n.name == "backbone.stage2.1.split")
    assert split.outputs == ["backbone.stage2.1.split.0", "backbone.stage2.1.split.1"]
    dw = next(n for n in graph.nodes if n.name == "decoder.0.dw")
    assert dw.inputs == ["backbone.conv5", "decoder.0.dilation"]
    assert graph.shapes["heads.hm.out"] == (3, 16, 16)


def test_trace_rejects_torch_functions_between_blocks():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = ConvBNAct(3, 4)
            self.b = ConvBNAct(8, 4)

        def forward(self, x):
            y = self.a(x)
            return self.b(torch.cat([y, y], 1))

    with pytest.raises(ExportError, match="'b'"):
        trace(Bad(), torch.zeros(1, 3, 8, 8))


def test_trace_rejects_bare_modules():
    model = nn.Sequential(ConvBNAct(3, 4), nn.ReLU())
    with pytest.raises(ExportError, match=r"'1' \(ReLU\)"):
        trace(model, torch.zeros(1, 3, 8, 8))


def test_trace_rejects_a_block_called_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.cat = Concat()

        def forward(self, x):
            return self.cat(self.cat(x, x), x)

    with pytest.raises(ExportError, match="twice"):
        trace(Twice(), torch.zeros(1, 3, 8, 8))


def test_build_rejects_bad_configs():
    with pytest.raises(ConfigError, match="unknown CoDeNet config"):
        build_codenet("z")
    with pytest.raises(ConfigError, match="even"):
        build_codenet("tiny", stage_channels=(24, 47, 96))
    with pytest.raises(ConfigError, match="unknown CoDeNetConfig fields"):
        build_codenet("tiny", colour="red")


def test_width_override_scales_channels():
    model = build_codenet("a", width=0.5)
    assert model.config.stage_channels == (58, 116, 232)
    assert model.config.final_channels == 512


def test_model_info_command_json_and_table(capsys):
    from convforge.sw.commands import model_info as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args(["--model", "codenet", "--config", "c", "--classes", "20", "--json"])) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "codenet" and info["config"] == "c" and info["input"] == [512, 512]
    assert abs(info["macs"] / 1.14e9 - 1) < 0.03
    assert command.run(parser.parse_args(["--config", "all"])) == 0
    table = capsys.readouterr().out
    assert "tiny" in table and "6.082" in table
