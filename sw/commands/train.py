"""``convforge train``: float training, W4A8 QAT and QGraph export of a CoDeNet detector."""

from __future__ import annotations

import argparse
import json

from convforge.models.train.trainer import PHASES, TrainConfig
from convforge.sw.argtypes import (
    bounded_int,
    fraction,
    image_size,
    non_negative_int,
    positive_float,
    positive_int,
)

NAME = "train"
HELP = "train a detector (MobileNetV2 or CoDeNet): float, then W4A8 quantisation-aware fine-tuning, then QGraph export"
DESCRIPTION = (
    "Train a detector (--config mbv2-trees: MobileNetV2 from ImageNet weights + CoDeNet decoder; "
    "trees / a-e / tiny: CoDeNet) with CenterNet losses (focal heatmap loss, L1 size and offset), fine-tune it "
    "with W4A8 quantisation-aware training and export the integer QGraph. All three phases run by "
    "default; --phase runs one. Checkpoints (model, optimiser, epoch, phase, config, seed) are "
    "written to --out every epoch; --resume continues from OUT/last.pt. A validation split is "
    "held out from the training images only (never from a test split)."
)


#: Weight widths the QGraph accepts (INTEGER_SPEC §2; models/quant/validate.py W_BITS_RANGE).
_W_BITS = bounded_int(2, 8, "weight bits")


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", default=d.data, help="training data spec: trees:train or voc:/path/to/VOCdevkit")
    p.add_argument("--out", default=d.out, help="output directory for checkpoints, QGraph, curves")
    p.add_argument("--config", dest="model", default=d.model,
                   help="model config: mbv2-trees / mbv2-s32 (MobileNetV2 detector, stride-16 / stride-32 "
                   "backbone; mbv2-trees-s8 / mbv2-trees-noskip: without the stride-4 / both decoder skips), "
                   "trees (narrow CoDeNet, CPU-sized), tiny, or a published CoDeNet a-e")
    p.add_argument("--width", type=positive_float, default=None, help="channel width multiplier on the config")
    p.add_argument("--input-size", type=image_size, default=d.input_size, help="training input side in pixels")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--epochs", dest="float_epochs", type=non_negative_int, default=d.float_epochs, help="float epochs")
    p.add_argument("--qat-epochs", type=non_negative_int, default=d.qat_epochs, help="QAT fine-tuning epochs")
    p.add_argument("--lr", type=positive_float, default=d.lr, help="peak AdamW learning rate of the float phase")
    p.add_argument("--qat-lr", type=positive_float, default=d.qat_lr, help="peak learning rate of the QAT phase")
    p.add_argument("--val-fraction", type=fraction, default=d.val_fraction,
                   help="share of the training data held out for validation (0: none)")
    p.add_argument("--val-every", type=positive_int, default=d.val_every, help="validate every N epochs")
    p.add_argument("--ema", dest="ema_decay", type=fraction, default=d.ema_decay, metavar="DECAY",
                   help="float phase: validate and keep an exponential moving average of the weights with this "
                        "decay per step (0.99 averages ~100 steps; default 0: off)")
    p.add_argument("--export-size", type=image_size, default=d.export_size,
                   help="QGraph input side in pixels (416 holds a whole 400x400 tree tile)")
    p.add_argument("--w-bits", type=_W_BITS, default=d.w_bits)
    p.add_argument("--first-w-bits", type=_W_BITS, default=d.first_w_bits)
    p.add_argument("--dw-w-bits", type=_W_BITS, default=None,
                   help="weight bits of the depthwise layers (default: --w-bits); recorded per layer in the QGraph")
    p.add_argument("--init", default=d.init, choices=("auto", "imagenet", "random"),
                   help="backbone initialisation: auto = ImageNet weights for MobileNetV2, random for CoDeNet")
    p.add_argument("--calib-batches", type=positive_int, default=d.calib_batches)
    p.add_argument("--seed", type=non_negative_int, default=d.seed)
    p.add_argument("--threads", type=positive_int, default=d.threads,
                   help="torch CPU threads (more than the free cores slows training down badly)")
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    p.add_argument("--limit", type=positive_int, default=None, help="use only N training/validation views (smoke runs)")
    p.add_argument("--phase", choices=PHASES, action="append",
                   help="run only this phase (repeatable); default: float, qat, export")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")


def run(args: argparse.Namespace) -> int:
    from convforge.models.train.trainer import Trainer

    cfg = TrainConfig(
        out=args.out,
        data=args.data,
        model=args.model,
        width=args.width,
        input_size=args.input_size,
        batch_size=args.batch_size,
        float_epochs=args.float_epochs,
        qat_epochs=args.qat_epochs,
        lr=args.lr,
        qat_lr=args.qat_lr,
        val_fraction=args.val_fraction,
        val_every=args.val_every,
        ema_decay=args.ema_decay,
        export_size=args.export_size,
        w_bits=args.w_bits,
        first_w_bits=args.first_w_bits,
        dw_w_bits=args.dw_w_bits,
        init=args.init,
        calib_batches=args.calib_batches,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        limit=args.limit,
        progress=not args.no_progress,
    )
    phases = tuple(p for p in PHASES if p in args.phase) if args.phase else PHASES
    log = (lambda msg: None) if args.json else (lambda msg: print(msg, flush=True))
    outcome = Trainer(cfg, log=log).run(phases, resume=args.resume)
    summary = {
        "out": str(outcome.out),
        "phases": list(phases),
        "epochs": len(outcome.history),
        "wall_s": round(outcome.wall_s, 1),
        "float_checkpoint": str(outcome.float_checkpoint) if outcome.float_checkpoint else None,
        "qat_checkpoint": str(outcome.qat_checkpoint) if outcome.qat_checkpoint else None,
        "model_checkpoint": str(outcome.model_checkpoint) if outcome.model_checkpoint else None,
        "qgraph": str(outcome.qgraph) if outcome.qgraph else None,
        "last_val_ap50": next((r["val_ap50"] for r in reversed(outcome.history) if "val_ap50" in r), None),
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"done in {summary['wall_s']:.0f} s; outputs in {summary['out']}")
    return 0
