"""The CoDeNet family (Huang, Wang, Dong et al., FPGA'21): ShuffleNetV2 + square deformable
decoder + CenterNet heads, built only from :mod:`convforge.models.nets.blocks`.

Structure (module paths are the QGraph's layer names)::

    backbone.stem.conv            3x3 conv 3->24, stride 4 (configs a/c/d) or stride 2 ...
    backbone.stem.pool            ... + 3x3/s2 max pool (configs b/e)
    backbone.stage{2,3,4}.{i}     ShuffleNetV2 units (1 stride-2 + 3/7/3 stride-1)
    backbone.conv5                1x1 to 1024 (2x: 2153), BN, ReLU
    decoder.{0,1,2}               dilation (1x1 -> 1 ch) -> square deformable dw 3x3
                                  -> 1x1 to 256/128/64, BN, ReLU -> nearest 2x upsample
    heads.{hm,wh,reg}             1x1 -> BN -> ReLU -> dw3x3 -> BN -> ReLU -> 1x1 (+bias)

The input is RAW pixels 0..255 (float ``(N, 3, H, W)``); ImageNet mean/std normalisation
is folded into ``backbone.stem.conv``. Outputs ``{"hm", "wh", "reg"}`` at stride 4:
``hm`` are heatmap logits (sigmoid on the host), ``wh`` box sizes and ``reg`` centre
offsets, in output-stride pixels. The construction follows the authors' code
(github.com/Zhen-Dong/CoDeNet, ``shufflenetv2_dcn.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from convforge.errors import ConfigError, ShapeError
from convforge.models.nets.blocks import (
    ChannelShuffle,
    ChannelSplit,
    Concat,
    ConvBNAct,
    MaxPool,
    SquareDeformDW,
    Upsample2x,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Output stride of every CoDeNet (input pixels per heatmap cell).
OUTPUT_STRIDE = 4
#: Heatmap bias at initialisation (CenterNet: sigmoid(-2.19) = 0.1).
HM_BIAS_INIT = -2.19


@dataclass(frozen=True)
class CoDeNetConfig:
    """One CoDeNet variant. Channel counts per stage must be even (ShuffleNetV2 halves them).

    Attributes:
        name: config name (``"a"`` ... ``"e"``, ``"tiny"`` or user-defined).
        input_size: ``(H, W)`` the variant is trained and deployed at, in pixels.
        stem: ``"stride4"`` (one 3x3 stride-4 conv) or ``"maxpool"`` (3x3 stride-2 conv +
            3x3/s2 max pool).
        stem_channels: output channels of the stem.
        stage_channels: output channels of ShuffleNetV2 stages 2, 3, 4.
        stage_repeats: stride-1 units after each stage's stride-2 unit.
        final_channels: channels of the 1x1 ``conv5`` after stage 4.
        decoder_channels: output channels of the three decoder blocks.
        head_conv: hidden width of every CenterNet head.
        d_max: largest dilation of the square deformable convolutions, in pixels.
        mean, std: input normalisation over ``[0, 1]`` pixels, folded into the stem.
    """

    name: str = "custom"
    input_size: tuple[int, int] = (512, 512)
    stem: str = "stride4"
    stem_channels: int = 24
    stage_channels: tuple[int, int, int] = (116, 232, 464)
    stage_repeats: tuple[int, int, int] = (3, 7, 3)
    final_channels: int = 1024
    decoder_channels: tuple[int, int, int] = (256, 128, 64)
    head_conv: int = 64
    d_max: int = 8
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.stem not in ("stride4", "maxpool"):
            raise ConfigError(f"CoDeNetConfig {self.name!r}: stem must be 'stride4' or 'maxpool', got {self.stem!r}")
        if any(c < 2 or c % 2 for c in self.stage_channels):
            raise ConfigError(
                f"CoDeNetConfig {self.name!r}: stage_channels {self.stage_channels} must be even "
                "(ShuffleNetV2 units split channels in halves)"
            )
        if len(self.stage_channels) != 3 or len(self.stage_repeats) != 3 or len(self.decoder_channels) != 3:
            raise ConfigError(f"CoDeNetConfig {self.name!r}: need 3 stages and 3 decoder blocks")
        if min(self.input_size) < 32 or any(s % 32 for s in self.input_size):
            raise ConfigError(
                f"CoDeNetConfig {self.name!r}: input_size {self.input_size} must be multiples of 32 "
                "(the backbone downsamples by 32)"
            )
        if not 0 <= self.d_max <= 255:
            raise ConfigError(f"CoDeNetConfig {self.name!r}: d_max {self.d_max} outside [0, 255]")

    def scaled(self, width: float, name: str | None = None) -> CoDeNetConfig:
        """This config with every width multiplied by ``width`` (stage widths rounded to even)."""

        def even(c: float) -> int:
            return max(2, 2 * round(c / 2))

        def one(c: float) -> int:
            return max(1, round(c))

        return dataclasses.replace(
            self,
            name=name or f"{self.name}@{width:g}",
            stem_channels=one(self.stem_channels * width),
            stage_channels=tuple(even(c * width) for c in self.stage_channels),
            final_channels=one(self.final_channels * width),
            decoder_channels=tuple(one(c * width) for c in self.decoder_channels),
            head_conv=one(self.head_conv * width),
        )


_1X = dict(stage_channels=(116, 232, 464), final_channels=1024)
# 2x: the authors' widths (shufflenetv2_w2 stages, conv5 2153 channels).
_2X = dict(stage_channels=(244, 488, 976), final_channels=2153)

#: The published variants (Table 3 of the paper) and a narrow test/training network.
CONFIGS: dict[str, CoDeNetConfig] = {
    "a": CoDeNetConfig(name="a", input_size=(256, 256), stem="stride4", **_1X),
    "b": CoDeNetConfig(name="b", input_size=(256, 256), stem="maxpool", **_1X),
    "c": CoDeNetConfig(name="c", input_size=(512, 512), stem="stride4", **_1X),
    "d": CoDeNetConfig(name="d", input_size=(512, 512), stem="stride4", **_2X),
    "e": CoDeNetConfig(name="e", input_size=(512, 512), stem="maxpool", **_2X),
    "tiny": CoDeNetConfig(
        name="tiny",
        input_size=(128, 128),
        stem="stride4",
        stem_channels=8,
        stage_channels=(24, 48, 96),
        stage_repeats=(1, 1, 1),
        final_channels=96,
        decoder_channels=(32, 32, 32),
        head_conv=32,
    ),
}


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit.

    Stride 1 (``in_ch == out_ch``): ``split`` the input in halves, run ``branch2``
    (1x1+BN+ReLU, dw3x3+BN, 1x1+BN+ReLU) on the second, ``concat`` and ``shuffle``.
    Stride 2: ``branch1`` (dw3x3/s2+BN, 1x1+BN+ReLU) and ``branch2`` (1x1, dw3x3/s2, 1x1)
    both read the whole input; ``concat`` and ``shuffle``. Output ``out_ch`` channels.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        half = out_ch // 2
        self.stride = stride
        if stride == 1:
            if in_ch != out_ch:
                raise ConfigError(f"ShuffleUnit: a stride-1 unit needs in_ch == out_ch, got {in_ch} -> {out_ch}")
            self.split = ChannelSplit((half, half))
            b2_in = half
        else:
            self.branch1 = nn.Sequential()
            self.branch1.add_module("dw", ConvBNAct(in_ch, in_ch, 3, stride, groups=in_ch, act="none"))
            self.branch1.add_module("conv", ConvBNAct(in_ch, half, 1))
            b2_in = in_ch
        self.branch2 = nn.Sequential()
        self.branch2.add_module("conv1", ConvBNAct(b2_in, half, 1))
        self.branch2.add_module("dw", ConvBNAct(half, half, 3, stride, groups=half, act="none"))
        self.branch2.add_module("conv2", ConvBNAct(half, half, 1))
        self.concat = Concat()
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = self.split(x)
            y = self.concat(x1, self.branch2(x2))
        else:
            y = self.concat(self.branch1(x), self.branch2(x))
        return self.shuffle(y)


class ShuffleNetV2(nn.Module):
    """CoDeNet's backbone: stem, stages 2-4, ``conv5``. Output stride 32."""

    def __init__(self, cfg: CoDeNetConfig) -> None:
        super().__init__()
        self.stem = nn.Sequential()
        norm = (cfg.mean, cfg.std)
        if cfg.stem == "stride4":
            self.stem.add_module("conv", ConvBNAct(3, cfg.stem_channels, 3, 4, 1, input_norm=norm))
        else:
            self.stem.add_module("conv", ConvBNAct(3, cfg.stem_channels, 3, 2, 1, input_norm=norm))
            self.stem.add_module("pool", MaxPool(3, 2, 1))
        in_ch = cfg.stem_channels
        for index, (out_ch, repeats) in enumerate(zip(cfg.stage_channels, cfg.stage_repeats, strict=True)):
            units = [ShuffleUnit(in_ch, out_ch, 2)] + [ShuffleUnit(out_ch, out_ch, 1) for _ in range(repeats)]
            self.add_module(f"stage{index + 2}", nn.Sequential(*units))
            in_ch = out_ch
        self.conv5 = ConvBNAct(in_ch, cfg.final_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv5(self.stage4(self.stage3(self.stage2(self.stem(x)))))


class DecoderBlock(nn.Module):
    """``dilation`` (1x1 -> 1 channel, bias, rounded to ``[0, d_max]``) -> ``dw`` (square
    deformable depthwise 3x3 at those dilations) -> ``conv`` (1x1, BN, ReLU) -> ``up`` (2x)."""

    def __init__(self, in_ch: int, out_ch: int, d_max: int) -> None:
        super().__init__()
        self.dilation = ConvBNAct(in_ch, 1, 1, bn=False, bias=True, act="dilation", d_max=d_max)
        # The authors' init: zero weights, bias 1 -> every pixel starts at dilation 1 (plain dw 3x3).
        nn.init.zeros_(self.dilation.conv.weight)
        nn.init.constant_(self.dilation.conv.bias, 1.0)
        self.dw = SquareDeformDW(in_ch, 1, d_max)
        self.conv = ConvBNAct(in_ch, out_ch, 1)
        nn.init.kaiming_normal_(self.conv.conv.weight, nonlinearity="relu")
        self.up = Upsample2x()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.conv(self.dw(x, self.dilation(x))))


class Head(nn.Sequential):
    """CenterNet head: ``conv1`` 1x1+BN+ReLU, ``dw`` 3x3+BN+ReLU, ``out`` 1x1 with bias (logits)."""

    def __init__(self, in_ch: int, hidden: int, out_ch: int, bias_init: float | None = None) -> None:
        super().__init__()
        self.add_module("conv1", ConvBNAct(in_ch, hidden, 1))
        self.add_module("dw", ConvBNAct(hidden, hidden, 3, groups=hidden))
        self.add_module("out", ConvBNAct(hidden, out_ch, 1, bn=False, bias=True, act="none"))
        if bias_init is not None:
            nn.init.constant_(self.out.conv.bias, bias_init)
        else:
            nn.init.kaiming_normal_(self.out.conv.weight, nonlinearity="relu")
            nn.init.zeros_(self.out.conv.bias)


def check_classes(model: str, num_classes: int, class_names: list[str] | None) -> tuple[int, list[str] | None]:
    """A detector's ``(num_classes, class_names)``, checked: at least one class and, when
    names are given, one per class. Raises ConfigError naming ``model``."""
    if num_classes < 1:
        raise ConfigError(f"{model}: num_classes must be >= 1, got {num_classes}")
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"{model}: {len(class_names)} class names for {num_classes} classes")
    return num_classes, (list(class_names) if class_names is not None else None)


def centernet_heads(in_ch: int, hidden: int, num_classes: int) -> nn.ModuleDict:
    """CenterNet's three heads on a stride-4 feature map of ``in_ch`` channels: ``hm``
    (``num_classes`` heatmap logits, bias -2.19 so the first sigmoid is ~0.1), ``wh`` (box
    size, 2) and ``reg`` (sub-pixel offset, 2); each a :class:`Head` with ``hidden`` channels."""
    return nn.ModuleDict(
        {
            "hm": Head(in_ch, hidden, num_classes, bias_init=HM_BIAS_INIT),
            "wh": Head(in_ch, hidden, 2),
            "reg": Head(in_ch, hidden, 2),
        }
    )


class CoDeNet(nn.Module):
    """A CoDeNet detector. ``forward(x)``: ``x`` float ``(N, 3, H, W)`` raw pixels 0..255,
    ``H, W`` multiples of 32. Returns ``{"hm": (N, K, H/4, W/4) logits, "wh": (N, 2, ...),
    "reg": (N, 2, ...)}``.

    Attributes:
        config: the :class:`CoDeNetConfig`.
        num_classes: ``K``.
        class_names: optional class names (exported into the QGraph meta).
    """

    HEADS = ("hm", "wh", "reg")

    def __init__(self, config: CoDeNetConfig, num_classes: int = 20, class_names: list[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.num_classes, self.class_names = check_classes("CoDeNet", num_classes, class_names)
        self.backbone = ShuffleNetV2(config)
        self.decoder = nn.Sequential()
        in_ch = config.final_channels
        for index, out_ch in enumerate(config.decoder_channels):
            self.decoder.add_module(str(index), DecoderBlock(in_ch, out_ch, config.d_max))
            in_ch = out_ch
        self.heads = centernet_heads(in_ch, config.head_conv, num_classes)

    @property
    def output_stride(self) -> int:
        return OUTPUT_STRIDE

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ShapeError(f"CoDeNet: input must be (N, 3, H, W) raw pixels, got shape {tuple(x.shape)}")
        if any(s < 32 or s % 32 for s in x.shape[2:]):
            raise ShapeError(
                f"CoDeNet: input must be (N, 3, H, W) with H and W multiples of 32 (the backbone "
                f"downsamples by 32), got {tuple(x.shape)}; resize or pad the image (e.g. to "
                f"{tuple(max(32, -(-s // 32) * 32) for s in x.shape[2:])})"
            )
        features = self.decoder(self.backbone(x))
        return {name: head(features) for name, head in self.heads.items()}


def build_codenet(
    config: str | CoDeNetConfig = "a",
    num_classes: int = 20,
    class_names: list[str] | None = None,
    **overrides,
) -> CoDeNet:
    """Build a float CoDeNet.

    Args:
        config: a name in :data:`CONFIGS` or a :class:`CoDeNetConfig`.
        num_classes: heatmap channels.
        class_names: optional names, one per class.
        **overrides: fields of :class:`CoDeNetConfig` to replace (e.g. ``input_size=(256, 256)``,
            ``head_conv=32``), plus ``width=<float>`` to scale every channel count.

    Raises:
        ConfigError: unknown config name or invalid fields.
    """
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ConfigError(f"unknown CoDeNet config {config!r}; choose one of {', '.join(CONFIGS)}")
        cfg = CONFIGS[config]
    else:
        cfg = config
    width = overrides.pop("width", None)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(CoDeNetConfig)}
    if unknown:
        raise ConfigError(f"unknown CoDeNetConfig fields {sorted(unknown)}")
    if overrides:
        cfg = dataclasses.replace(cfg, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    if width is not None:
        cfg = cfg.scaled(float(width))
    return CoDeNet(cfg, num_classes, class_names)
