"""What a checkpoint needs to rebuild its network: a model config, classes, bit widths.

Two families: CoDeNet (:class:`~convforge.models.nets.CoDeNetConfig`; the published
variants of :data:`convforge.models.nets.CONFIGS` and the CPU-sized :data:`TRAIN_CONFIGS`)
and the MobileNetV2 detector (:class:`~convforge.models.nets.mobilenetv2.MobileNetV2DetConfig`,
:data:`~convforge.models.nets.mobilenetv2.MBV2_CONFIGS`). A serialised config carries
``"family": "mobilenetv2"``; one without a family is a CoDeNet (older checkpoints).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from convforge.errors import ConfigError
from convforge.models.nets import CONFIGS, CoDeNetConfig, build_codenet
from convforge.models.nets.mobilenetv2 import MBV2_CONFIGS, MobileNetV2DetConfig, build_mobilenetv2_det

#: A detector config of either family.
ModelConfig = CoDeNetConfig | MobileNetV2DetConfig

#: Training-oriented configs. ``trees``: config ``a`` (ShuffleNetV2, stride-4 stem,
#: 3/7/3 units) at a quarter of its width, with the decoder tail and the heads kept at
#: 32 channels (a quarter would leave 16, too thin for the size regression). About
#: 0.12 M parameters and 25 MMAC at 256x256: a few minutes per epoch on 2 CPU cores.
TRAIN_CONFIGS: dict[str, CoDeNetConfig] = {
    "trees": dataclasses.replace(
        CONFIGS["a"].scaled(0.25, name="trees"),
        decoder_channels=(64, 32, 32),
        head_conv=32,
    ),
}


def config_names() -> list[str]:
    """Every config name :func:`resolve_config` accepts."""
    return [*TRAIN_CONFIGS, *CONFIGS, *MBV2_CONFIGS]


def resolve_config(name: str, width: float | None = None, input_size: int | None = None) -> ModelConfig:
    """A config by name (CoDeNet training configs, the published CoDeNets, the MobileNetV2
    detectors), optionally scaled by ``width`` and set to a square ``input_size`` in pixels."""
    if name in TRAIN_CONFIGS:
        cfg = TRAIN_CONFIGS[name]
    elif name in CONFIGS:
        cfg = CONFIGS[name]
    elif name in MBV2_CONFIGS:
        cfg = MBV2_CONFIGS[name]
    else:
        raise ConfigError(f"unknown model config {name!r}; choose one of {', '.join(config_names())}")
    if width is not None:
        cfg = cfg.scaled(float(width))
    if input_size is not None:
        cfg = dataclasses.replace(cfg, input_size=(int(input_size), int(input_size)))
    return cfg


@dataclass
class ModelSpec:
    """A rebuildable description of a (possibly quantised) detector.

    Attributes:
        config: a :class:`CoDeNetConfig` or :class:`MobileNetV2DetConfig`.
        num_classes: heatmap channels.
        class_names: one name per class.
        quant: ``{"w_bits", "a_bits", "first_w_bits"[, "dw_w_bits"]}`` for the QAT network,
            None for float.
    """

    config: ModelConfig
    num_classes: int
    class_names: list[str] | None = None
    quant: dict[str, int] | None = None

    def build(self, quantized: bool = False) -> nn.Module:
        """The float network, or with ``quantized`` the QAT network (``prepare_qat`` with
        :attr:`quant`, default W4A8 with an 8-bit first layer)."""
        if isinstance(self.config, MobileNetV2DetConfig):
            model = build_mobilenetv2_det(self.config, self.num_classes, self.class_names)
        else:
            model = build_codenet(self.config, self.num_classes, self.class_names)
        if quantized:
            from convforge.models.quant.qat import prepare_qat

            model = prepare_qat(model, **(self.quant or default_quant()))
        return model

    def to_dict(self) -> dict[str, Any]:
        """A JSON/``weights_only``-safe dictionary (lists, ints, floats, strings)."""
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self.config).items()}
        return {
            "config": cfg,
            "num_classes": int(self.num_classes),
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "quant": dict(self.quant) if self.quant is not None else None,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; ConfigError on unknown or invalid fields."""
        raw = dict(doc["config"])
        family = raw.get("family", "codenet")
        classes = {"codenet": CoDeNetConfig, "mobilenetv2": MobileNetV2DetConfig}
        if family not in classes:
            raise ConfigError(f"unknown model family {family!r}; known: {', '.join(classes)}")
        if family == "codenet":
            raw.pop("family", None)
        config_cls = classes[family]
        fields = {f.name for f in dataclasses.fields(config_cls)}
        unknown = set(raw) - fields
        if unknown:
            raise ConfigError(f"unknown {config_cls.__name__} fields {sorted(unknown)}")
        cfg = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        names = doc.get("class_names")
        quant = doc.get("quant")
        return cls(cfg, int(doc["num_classes"]), list(names) if names else None, dict(quant) if quant else None)


def default_quant(
    w_bits: int = 4, a_bits: int = 8, first_w_bits: int = 8, dw_w_bits: int | None = None
) -> dict[str, int]:
    """The bit widths of a W4A8 network (first layer 8-bit weights); ``dw_w_bits`` (depthwise
    layers, default ``w_bits``) is recorded only when it differs from ``w_bits``."""
    quant = {"w_bits": int(w_bits), "a_bits": int(a_bits), "first_w_bits": int(first_w_bits)}
    if dw_w_bits is not None and int(dw_w_bits) != int(w_bits):
        quant["dw_w_bits"] = int(dw_w_bits)
    return quant
