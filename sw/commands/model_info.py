"""``convforge model-info``: parameters and MACs of a CoDeNet variant, of MobileNetV2 (the
ImageNet classifier) or of a MobileNetV2 detector."""

from __future__ import annotations

import argparse
import json

from convforge.errors import ConfigError
from convforge.sw.argtypes import image_size, positive_float, positive_int

NAME = "model-info"
HELP = "parameters and multiply-accumulates of a CoDeNet config, MobileNetV2 or a MobileNetV2 detector"
DESCRIPTION = (
    "Build a network and count its parameters and MACs (analytically, per layer). "
    "'macs' follows the CoDeNet paper's convention (BN scale counted), 'conv_macs' is the BN-folded "
    "network the accelerator runs (for MobileNetV2 it is the paper's figure: 300 M at width 1.0, 224x224). "
    "--model codenet --config all prints every CoDeNet config; --model mobilenetv2 is the ImageNet "
    "classifier at --width (1.0, 0.75, 0.5, 0.35); --model mobilenetv2-det the detector --config "
    "(mbv2-trees, mbv2-s32; mbv2-trees-s8 and mbv2-trees-noskip: without the stride-4 / without both skips)."
)
MODELS = ("codenet", "mobilenetv2", "mobilenetv2-det")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="codenet", choices=MODELS,
                   help="model family: codenet, mobilenetv2 (ImageNet classifier), mobilenetv2-det (detector)")
    p.add_argument("--config", default=None,
                   help="codenet: a, b, c, d, e, tiny or 'all' (default a); mobilenetv2-det: mbv2-trees, "
                        "mbv2-s32, or the skip ablations mbv2-trees-s8 / mbv2-trees-noskip")
    p.add_argument("--width", type=positive_float, default=1.0,
                   help="MobileNetV2 width multiplier (1.0, 0.75, 0.5, 0.35)")
    p.add_argument("--classes", type=positive_int, default=None,
                   help="object classes (heatmap channels; default 20) or, for mobilenetv2, ImageNet classes (1000)")
    p.add_argument("--input", type=image_size, nargs="+", metavar="SIZE",
                   help="input size: one side (square) or H W; default: the config's (224 for mobilenetv2)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _input_hw(values: list[int] | None) -> tuple[int, int] | None:
    if not values:
        return None
    if len(values) > 2 or min(values) < 1:
        raise ConfigError(f"--input takes one side or H W in pixels, got {values}")
    return (values[0], values[-1])


def model_info(config: str, classes: int, input_hw: tuple[int, int] | None = None) -> dict:
    """A CoDeNet config's ``{"model", "config", "classes", "params", "macs", "conv_macs", "input",
    "output_stride"}``."""
    from convforge.models.nets import CONFIGS, build_codenet, count_params_macs

    if config not in CONFIGS:
        raise ConfigError(f"unknown CoDeNet config {config!r}; choose one of {', '.join(CONFIGS)} or 'all'")
    model = build_codenet(config, num_classes=classes)
    hw = tuple(input_hw) if input_hw else CONFIGS[config].input_size
    counts = count_params_macs(model, hw)
    return {
        "model": "codenet",
        "config": config,
        "classes": classes,
        "params": counts["params"],
        "macs": counts["macs"],
        "conv_macs": counts["conv_macs"],
        "input": counts["input"],
        "output_stride": model.output_stride,
    }


def mobilenetv2_info(width: float, classes: int = 1000, input_hw: tuple[int, int] | None = None) -> dict:
    """The MobileNetV2 ImageNet classifier at ``width``: ``{"model", "width", "classes", "params",
    "macs", "conv_macs", "input"}`` (``conv_macs`` includes the final linear layer)."""
    from convforge.models.nets import MobileNetV2, count_params_macs

    model = MobileNetV2(width, classes)
    counts = count_params_macs(model, input_hw or (224, 224))
    return {"model": "mobilenetv2", "width": width, "classes": classes, **counts}


def mobilenetv2_det_info(config: str, classes: int, input_hw: tuple[int, int] | None = None) -> dict:
    """A MobileNetV2 detector config's counts, as :func:`model_info`."""
    from convforge.models.nets import MBV2_CONFIGS, build_mobilenetv2_det, count_params_macs

    if config not in MBV2_CONFIGS:
        raise ConfigError(f"unknown MobileNetV2 detector config {config!r}; choose one of {', '.join(MBV2_CONFIGS)}")
    model = build_mobilenetv2_det(config, num_classes=classes)
    counts = count_params_macs(model, input_hw or MBV2_CONFIGS[config].input_size)
    return {"model": "mobilenetv2-det", "config": config, "classes": classes, **counts,
            "output_stride": model.output_stride}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from convforge.models.nets import CONFIGS

    hw = _input_hw(args.input)
    if args.model == "mobilenetv2":
        if args.config is not None:
            raise ConfigError("--config does not apply to --model mobilenetv2 (the classifier); use --width")
        row = mobilenetv2_info(args.width, args.classes or 1000, hw)
        if args.json:
            print(json.dumps(row, indent=1))
        else:
            print(f"MobileNetV2 {args.width:g} at {row['input'][0]}x{row['input'][1]}: {row['params']:,} parameters, "
                  f"{row['conv_macs'] / 1e6:.1f} M MACs ({row['macs'] / 1e6:.1f} M with the BN scale counted)")
        return 0
    if args.model == "mobilenetv2-det":
        row = mobilenetv2_det_info(args.config or "mbv2-trees", args.classes or 1, hw)
        if args.json:
            print(json.dumps(row, indent=1))
        else:
            print(f"{row['config']} at {row['input'][0]}x{row['input'][1]}: {row['params']:,} parameters, "
                  f"{row['macs'] / 1e9:.3f} GMAC ({row['conv_macs'] / 1e9:.3f} BN folded), "
                  f"{row['classes']} classes, output stride {row['output_stride']}")
        return 0
    config = args.config or "a"
    classes = args.classes or 20
    names = list(CONFIGS) if config == "all" else [config]
    rows = [model_info(name, classes, hw) for name in names]
    if args.json:
        print(json.dumps(rows if config == "all" else rows[0], indent=1))
        return 0
    print(f"{'config':<8} {'input':<10} {'params (M)':>11} {'GMAC':>8} {'GMAC (BN folded)':>17}")
    for r in rows:
        size = f"{r['input'][0]}x{r['input'][1]}"
        print(
            f"{r['config']:<8} {size:<10} {r['params'] / 1e6:>11.3f} {r['macs'] / 1e9:>8.3f} "
            f"{r['conv_macs'] / 1e9:>17.3f}"
        )
    print(f"({classes} classes, output stride {rows[0]['output_stride']})")
    return 0
