"""``convforge detect``: boxes on images of any size, through the accelerator's driver."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from convforge.sw.argtypes import image_size, non_negative_int, positive_float, score

NAME = "detect"
HELP = "detect objects in image files through the PYNQ driver (SimDevice emu/rtl, a board) or the integer reference"
DESCRIPTION = (
    "Run a detector on image files (any size and format Pillow reads). Small images are "
    "letterboxed into the network input; large (aerial) images are tiled at native resolution "
    "with overlap and the detections of neighbouring tiles merged. Backends: emu / rtl run the "
    "PYNQ driver on a simulated PYNQ device (SimDevice) whose accelerator is the bit-exact "
    "emulator / the Verilator model; pynq runs it on a board's overlay; int is the integer "
    "reference. Writes one PNG with boxes and scores per image and detections.json (boxes in "
    "original-image pixels, per-frame time and, on hardware backends, the accelerator's counters)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None,
                     help="a shipped model by name (codenet_trees_w4a8, mbv2_trees_w4a8; default: the zoo's default)")
    src.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint from `convforge train`")
    p.add_argument("--backend", choices=("emu", "rtl", "pynq", "int"), default="emu")
    p.add_argument("--out", type=Path, default=Path("out/detect"), help="folder for the PNGs and detections.json")
    p.add_argument("--score-thresh", type=score, default=0.3, help="keep detections from this score up")
    p.add_argument("--tile", choices=("auto", "always", "never"), default="auto",
                   help="tile at native resolution (auto: longer side > 1.5 network inputs)")  # fmt: skip
    p.add_argument("--overlap", type=non_negative_int, default=64, help="pixels shared by neighbouring tiles")
    p.add_argument("--board", default="ultra96v2", help="board profile of the simulated overlay (emu, rtl)")
    p.add_argument("--config", type=Path, default=None,
                   help="EngineConfig TOML of the simulated overlay (emu, rtl; default: the board's engine); "
                        "rtl builds the Verilator model of this engine once and caches it")  # fmt: skip
    p.add_argument("--input-size", type=image_size, default=None,
                   help="network input side in pixels (default: the model's export size, 416 for the shipped "
                        "model); a small one (e.g. 32) keeps --backend rtl frames to minutes")  # fmt: skip
    p.add_argument("--overlay", type=Path, default=None,
                   help="the board's convforge.bit (pynq), or a simulated overlay file (emu, rtl)")  # fmt: skip
    p.add_argument("--program", type=Path, default=None,
                   help="a Program file from `convforge compile` (default: compile for the hardware)")  # fmt: skip
    p.add_argument("--timeout", type=positive_float, default=None,
                   help="seconds a frame may take (driver timeout; default 60, on rtl 6 hours)")
    p.add_argument("--json", action="store_true", help="print the detections as JSON instead of a table")


def _load_graph(model: str | None, checkpoint: Path | None, input_size: int | None = None):
    from convforge.models.train.inference import load_for_backend
    from convforge.models.train.zoo import default_model, get_model

    if checkpoint is not None:
        ckpt = checkpoint
    else:
        ckpt = (get_model(model) if model else default_model()).checkpoint
    loaded = load_for_backend(ckpt, "int", input_size)
    return loaded.target, loaded.checkpoint


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from convforge.models.eval import draw_detections
    from convforge.models.train.evaluate import head_scales
    from convforge.sw.detect import detect_image
    from convforge.sw.runtime.session import open_session

    t0 = time.perf_counter()
    from convforge.sw.commands.rtl import resolve_config

    graph, ckpt = _load_graph(args.model, args.checkpoint, args.input_size)
    size = int(graph.tensors[graph.input].shape[1])
    if args.overlap >= size:  # before opening a backend (rtl takes a while to start)
        from convforge.errors import ConfigError

        raise ConfigError(f"--overlap {args.overlap} px must be below the network input side {size} px; "
                          "pass a smaller --overlap (or a larger --input-size)")
    engine = resolve_config(args.board, args.config) if args.backend in ("emu", "rtl") else None
    session = open_session(args.backend, graph, args.board, args.overlay, args.program, args.out / "sim",
                           args.timeout, engine=engine, progress=args.backend == "rtl" and not args.json)  # fmt: skip
    scales = head_scales(graph)
    class_names = graph.meta.get("class_names")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    images = tqdm(args.images, desc="images", unit="image", disable=args.json or len(args.images) < 2)
    for path in images:
        det = detect_image(path, session.infer, session.input_size, scales, args.tile, args.overlap,
                           args.score_thresh, progress=not args.json)  # fmt: skip
        png = args.out / f"{path.stem}_detections.png"
        draw_detections(det.image, det.boxes, det.scores, np.zeros((0, 4)), png, args.score_thresh)
        doc = det.to_json(class_names)
        doc["png"] = str(png)
        results.append(doc)
        if not args.json:
            per_view = sum(f["seconds"] for f in det.frames) / max(1, len(det.frames))
            print(f"{path}: {len(det.scores)} detections (score >= {args.score_thresh:g}), {det.views} view(s), "
                  f"{per_view * 1e3:.1f} ms per frame on {args.backend} -> {png}")  # fmt: skip
    summary = {"backend": args.backend, "checkpoint": str(ckpt), "score_thresh": args.score_thresh,
               "session": session.info, "images": results, "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
    (args.out / "detections.json").write_text(json.dumps(summary, indent=1) + "\n")
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"wrote {args.out / 'detections.json'}")
    return 0
