"""``convforge eval``: AP50 of a trained detector (float, QAT, or integer QGraph) on a dataset."""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from convforge.sw.argtypes import image_size, positive_int

NAME = "eval"
HELP = "evaluate a detector (float, qat or int backend): VOC AP50, PR curve, example detections"
DESCRIPTION = (
    "Evaluate a detector checkpoint on a dataset with the VOC AP at IoU 0.5 (11-point VOC07 by "
    "default, --auc for the area under the curve). Backends: float (the float weights the "
    "QAT started from), qat (the fake-quantised network), int (the exported QGraph run by the "
    "integer reference, heads decoded from the integers). Without --checkpoint a detector "
    "shipped with convforge is used: --model NAME (default: the zoo's default model)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from convforge.models.train.zoo import DEFAULT_NAME, model_names

    p.add_argument("--checkpoint", default=None, help="checkpoint from `convforge train` (default: shipped model)")
    p.add_argument("--model", default=None, choices=model_names(),
                   help=f"shipped model to evaluate when no --checkpoint is given (default {DEFAULT_NAME})")
    p.add_argument("--qgraph", default=None,
                   help="QGraph .json for --backend int (default: the one exported beside the checkpoint; "
                        "otherwise exported from the QAT checkpoint on the fly)")  # fmt: skip
    p.add_argument("--data", default="trees:test", help="dataset spec: trees:test, trees:train, voc:/path")
    p.add_argument("--backend", choices=("float", "qat", "int"), default="int")
    p.add_argument("--input-size", type=image_size, default=None,
                   help="network input side in pixels (default: the checkpoint's export size, 416 for the "
                        "shipped model: one whole 400x400 tree tile per input)")  # fmt: skip
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N images/tiles")
    p.add_argument("--auc", action="store_true", help="area-under-curve AP instead of VOC07 11-point")
    p.add_argument("--plots", default=None, metavar="DIR", help="write a PR curve and example detections here")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def run(args: argparse.Namespace) -> int:
    import torch

    from convforge.models.data import get_dataset
    from convforge.models.eval.plots import draw_detections, plot_pr_curve
    from convforge.models.train.inference import load_for_backend

    torch.set_num_threads(max(1, args.threads))
    t0 = time.time()
    from convforge.errors import ConfigError
    from convforge.models.train.zoo import default_model, get_model

    if args.checkpoint is not None and args.model is not None:
        raise ConfigError("give either --checkpoint (a trained file) or --model (a shipped model), not both")
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = (get_model(args.model) if args.model else default_model()).checkpoint
    loaded = load_for_backend(checkpoint, args.backend, args.input_size, args.qgraph)
    dataset = get_dataset(args.data, train=False, input_size=loaded.input_size)
    from convforge.models.train.evaluate import evaluate

    result = evaluate(loaded.target, dataset, args.backend, limit=args.limit, auc=args.auc,
                      progress=not args.json)  # fmt: skip
    summary = result.summary()
    summary.update(
        data=args.data,
        input_size=loaded.input_size,
        checkpoint=str(loaded.checkpoint),
        qgraph=str(loaded.qgraph) if loaded.qgraph else None,
        seconds=round(time.time() - t0, 1),
    )
    if args.plots:
        out = Path(args.plots)
        paths = []
        names = dataset.class_names
        for c, (rec, prec) in enumerate(zip(result.voc.rec, result.voc.prec, strict=True)):
            if result.voc.npos[c] == 0:
                continue
            ap = float(result.voc.ap[c])
            title = f"{names[c]} on {args.data} ({args.backend})"
            paths.append(plot_pr_curve(rec, prec, ap, out / f"pr_{args.backend}_{_safe(names[c])}.png", title))
        shown = min(4, len(result.samples))
        for i in range(shown):
            sample = dataset[i]
            det = result.detections[sample.image_id]
            paths.append(draw_detections(sample.image, det.boxes, det.scores, sample.boxes,
                                         out / f"det_{args.backend}_{_safe(sample.image_id)}.png"))  # fmt: skip
        summary["plots"] = [str(p) for p in paths]
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        metric = "AP (area under curve)" if args.auc else "AP50 (VOC07 11-point)"
        print(f"{args.backend} backend on {args.data}: {metric} = {100 * summary['ap50']:.1f} "
              f"over {summary['images']} images ({summary['gt_boxes']} boxes, "
              f"{summary['detections']} detections) in {summary['seconds']:.0f} s")  # fmt: skip
        for p in summary.get("plots", []):
            print(f"  wrote {p}")
    return 0
