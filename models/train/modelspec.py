"""What a checkpoint needs to rebuild its network: a CoDeNet config, classes, bit widths.

Besides the published variants of :data:`convforge.models.nets.CONFIGS`, training
offers :data:`TRAIN_CONFIGS`: narrow CoDeNets sized for training on a CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from convforge.errors import ConfigError
from convforge.models.nets import CONFIGS, CoDeNetConfig, build_codenet

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


def resolve_config(name: str, width: float | None = None, input_size: int | None = None) -> CoDeNetConfig:
    """A config by name (training configs first, then the published ones), optionally
    scaled by ``width`` and set to a square ``input_size`` in pixels."""
    if name in TRAIN_CONFIGS:
        cfg = TRAIN_CONFIGS[name]
    elif name in CONFIGS:
        cfg = CONFIGS[name]
    else:
        known = ", ".join([*TRAIN_CONFIGS, *CONFIGS])
        raise ConfigError(f"unknown model config {name!r}; choose one of {known}")
    if width is not None:
        cfg = cfg.scaled(float(width))
    if input_size is not None:
        cfg = dataclasses.replace(cfg, input_size=(int(input_size), int(input_size)))
    return cfg


@dataclass
class ModelSpec:
    """A rebuildable description of a (possibly quantised) CoDeNet.

    Attributes:
        config: the :class:`CoDeNetConfig`.
        num_classes: heatmap channels.
        class_names: one name per class.
        quant: ``{"w_bits", "a_bits", "first_w_bits"}`` for the QAT network, None for float.
    """

    config: CoDeNetConfig
    num_classes: int
    class_names: list[str] | None = None
    quant: dict[str, int] | None = None

    def build(self, quantized: bool = False) -> nn.Module:
        """The float network, or with ``quantized`` the QAT network (``prepare_qat`` with
        :attr:`quant`, default W4A8 with an 8-bit first layer)."""
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
        fields = {f.name for f in dataclasses.fields(CoDeNetConfig)}
        raw = dict(doc["config"])
        unknown = set(raw) - fields
        if unknown:
            raise ConfigError(f"unknown CoDeNetConfig fields {sorted(unknown)}")
        cfg = CoDeNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        names = doc.get("class_names")
        quant = doc.get("quant")
        return cls(cfg, int(doc["num_classes"]), list(names) if names else None, dict(quant) if quant else None)


def default_quant(w_bits: int = 4, a_bits: int = 8, first_w_bits: int = 8) -> dict[str, int]:
    """The bit widths of a W4A8 CoDeNet (first layer 8-bit weights)."""
    return {"w_bits": int(w_bits), "a_bits": int(a_bits), "first_w_bits": int(first_w_bits)}
