"""``convforge export``: write a CoDeNet's QGraph (``.json`` + ``.npz``)."""

from __future__ import annotations

import argparse
import sys

import torch

from convforge.sw.argtypes import bounded_int, image_size, non_negative_int, positive_int

NAME = "export"
HELP = "export a quantised CoDeNet to a QGraph (integer graph)"
DESCRIPTION = (
    "Export a CoDeNet to a QGraph (PATH.json + PATH.npz) and print its layer table. With "
    "--checkpoint, the weights come from a `convforge train` checkpoint (a float checkpoint is "
    "quantised W4A8 and calibrated first); without one, an untrained network of --config is "
    "exported (for trying the toolflow). Calibration uses --calib-batches batches of random "
    "images unless the checkpoint is already QAT-calibrated."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", help="CoDeNet config (a, b, c, d, e, tiny) when no checkpoint")
    p.add_argument("--checkpoint", help="checkpoint written by `convforge train` (optional)")
    p.add_argument("--classes", type=positive_int, default=20, help="object classes when no checkpoint")
    p.add_argument("--input", type=image_size, nargs=2, metavar=("H", "W"), help="image size (default: the config's)")
    p.add_argument("--out", required=True, help="output path (PATH.json and PATH.npz are written)")
    p.add_argument("--calib-batches", type=positive_int, default=4,
                   help="random calibration batches (untrained/float models)")
    p.add_argument("--acc-bits", type=bounded_int(8, 63, "the reference accumulates in int64"), default=32,
                   help="accumulator width every layer must fit")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the untrained weights and calibration images")


def _random_batches(count: int, hw: tuple[int, int], seed: int):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield torch.randint(0, 256, (2, 3, *hw), generator=gen).float()


def run(args: argparse.Namespace) -> int:
    from convforge.models.nets import build_codenet
    from convforge.models.quant import calibrate, export_qgraph, is_quantized, prepare_qat

    torch.manual_seed(args.seed)
    calibrated = False
    if args.checkpoint:
        from convforge.models.train.checkpoint import load_checkpoint, model_from_checkpoint

        model = model_from_checkpoint(load_checkpoint(args.checkpoint), args.checkpoint)
        calibrated = is_quantized(model)
    else:
        model = build_codenet(args.config, num_classes=args.classes)
        print(f"note: exporting an untrained CoDeNet-{args.config} (no --checkpoint)", file=sys.stderr)
    hw = tuple(args.input) if args.input else tuple(model.config.input_size)
    if not is_quantized(model):
        prepare_qat(model)
    if not calibrated:
        calibrate(model, _random_batches(args.calib_batches, hw, args.seed))
    graph = export_qgraph(model, hw, acc_bits=args.acc_bits)
    json_path, npz_path = graph.save(args.out)
    print(graph.summary())
    print(f"wrote {json_path} and {npz_path} ({len(graph.layers)} layers)")
    return 0
