"""``convforge model-info``: parameters and MACs of a CoDeNet variant."""

from __future__ import annotations

import argparse
import json

from convforge.errors import ConfigError
from convforge.sw.argtypes import image_size, positive_int

NAME = "model-info"
HELP = "parameters and multiply-accumulates of a CoDeNet config"
DESCRIPTION = (
    "Build a CoDeNet variant and count its parameters and MACs (analytically, per layer). "
    "'macs' follows the paper's convention (BN scale counted), 'conv_macs' is the BN-folded "
    "network the accelerator runs. --config all prints every config."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="codenet", choices=["codenet"], help="model family")
    p.add_argument("--config", default="a", help="config name (a, b, c, d, e, tiny) or 'all'")
    p.add_argument("--classes", type=positive_int, default=20, help="number of object classes (heatmap channels)")
    p.add_argument("--input", type=image_size, nargs=2, metavar=("H", "W"), help="input size (default: the config's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def model_info(config: str, classes: int, input_hw: tuple[int, int] | None = None) -> dict:
    """``{"model", "config", "classes", "params", "macs", "conv_macs", "input", "output_stride"}``."""
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


def run(args: argparse.Namespace) -> int:
    from convforge.models.nets import CONFIGS

    names = list(CONFIGS) if args.config == "all" else [args.config]
    rows = [model_info(name, args.classes, args.input) for name in names]
    if args.json:
        print(json.dumps(rows if args.config == "all" else rows[0], indent=1))
        return 0
    print(f"{'config':<8} {'input':<10} {'params (M)':>11} {'GMAC':>8} {'GMAC (BN folded)':>17}")
    for r in rows:
        size = f"{r['input'][0]}x{r['input'][1]}"
        print(
            f"{r['config']:<8} {size:<10} {r['params'] / 1e6:>11.3f} {r['macs'] / 1e9:>8.3f} "
            f"{r['conv_macs'] / 1e9:>17.3f}"
        )
    print(f"({args.classes} classes, output stride {rows[0]['output_stride']})")
    return 0
