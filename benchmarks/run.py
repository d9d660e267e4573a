"""``make bench``: measure convforge and write every figure to JSON.

Each benchmark is a function returning a JSON-serialisable dict; the runner writes
``<out>/<name>.json`` per benchmark and ``<out>/summary.json`` with all of them, plus the
machine they ran on. Nothing here asserts: goals live in the docs and issue notes, the
numbers come from here.

    python benchmarks/run.py --out benchmarks/results [--only NAME ...] [--skip NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _timeit(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs after one warm-up, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_model_info() -> dict:
    """Parameters and MACs of every CoDeNet config at its published input size (20 classes)."""
    from convforge.models.nets import CONFIGS, build_codenet, count_params_macs

    rows = {}
    for name, cfg in CONFIGS.items():
        model = build_codenet(name, num_classes=20)
        rows[name] = {k: v for k, v in count_params_macs(model, tuple(cfg.input_size)).items()}
    published = {"a": (1.59e6, 0.29e9), "c": (1.59e6, 1.14e9), "d": (6.08e6, None), "e": (6.08e6, None)}
    for name, (params, macs) in published.items():
        rows[name]["params_vs_published"] = rows[name]["params"] / params - 1
        if macs:
            rows[name]["macs_vs_published"] = rows[name]["macs"] / macs - 1
    return rows


def bench_mobilenetv2() -> dict:
    """MobileNetV2 classifier at each width (224x224, 1000 classes) against the paper, and the
    shipped detector configs at their training input."""
    from convforge.models.nets import MBV2_CONFIGS, MobileNetV2, build_mobilenetv2_det, count_params_macs

    rows: dict = {}
    for width in (1.0, 0.75, 0.5, 0.35):
        rows[f"classifier@{width:g}"] = count_params_macs(MobileNetV2(width), (224, 224))
    rows["classifier@1"]["params_vs_torchvision"] = rows["classifier@1"]["params"] / 3_504_872 - 1
    rows["classifier@1"]["conv_macs_vs_paper"] = rows["classifier@1"]["conv_macs"] / 300e6 - 1
    for name, cfg in MBV2_CONFIGS.items():
        rows[name] = count_params_macs(build_mobilenetv2_det(name, num_classes=1), tuple(cfg.input_size))
    return rows


def zoo_model_figures(name: str, data: str = "trees:test") -> dict:
    """AP50 (VOC07 11-point) of a shipped model with the float, QAT and integer backends on
    ``data``, overall and per image (the tree test split has one image per site), plus its
    size and cost. The int backend runs the shipped QGraph."""
    from convforge.models.data import get_dataset
    from convforge.models.nets import count_params_macs
    from convforge.models.quant.qgraph import QGraph
    from convforge.models.train.checkpoint import load_checkpoint
    from convforge.models.train.evaluate import predict_float, predict_int, score
    from convforge.models.train.inference import load_for_backend
    from convforge.models.train.zoo import get_model

    zoo = get_model(name)
    doc = load_checkpoint(zoo.checkpoint)
    train_size = int(doc["train"]["input_size"])
    out: dict = {"checkpoint_bytes": zoo.checkpoint.stat().st_size, "training_wall_s": doc.get("wall_s")}
    for backend in ("float", "qat", "int"):
        loaded = load_for_backend(zoo.checkpoint, backend)
        dataset = get_dataset(data, train=False, input_size=loaded.input_size)
        t = time.perf_counter()
        if isinstance(loaded.target, QGraph):
            dets, samples = predict_int(loaded.target, dataset)
        else:
            dets, samples = predict_float(loaded.target, dataset)
        row = {"ap50": float(score(dets, samples, dataset.num_classes, backend).ap50),
               "seconds": time.perf_counter() - t, "per_image": {}}  # fmt: skip
        for sample in samples:
            one = score({sample.image_id: dets[sample.image_id]}, [sample], dataset.num_classes, backend)
            row["per_image"][sample.image_id] = float(one.ap50)
        out[backend] = row
        if backend == "float":
            out["input_size"] = loaded.input_size
            out["at_export_size"] = count_params_macs(loaded.target, (loaded.input_size, loaded.input_size))
            out["at_train_size"] = count_params_macs(loaded.target, (train_size, train_size))
    out["float_minus_int"] = out["float"]["ap50"] - out["int"]["ap50"]
    return out


def bench_zoo_models() -> dict:
    """:func:`zoo_model_figures` for every shipped model (the default first)."""
    from convforge.models.train.zoo import model_names

    return {name: zoo_model_figures(name) for name in model_names()}


def _exported(config: str, num_classes: int = 20):
    from convforge.models.nets import CONFIGS, build_codenet
    from convforge.models.quant import calibrate, export_qgraph, prepare_qat

    torch.manual_seed(0)
    size = tuple(CONFIGS[config].input_size)
    model = build_codenet(config, num_classes=num_classes)
    prepare_qat(model, input_hw=size)
    calibrate(model, [torch.rand(2, 3, *size) * 255 for _ in range(2)])
    model.eval()
    return model, export_qgraph(model, size), size


def bench_integer_reference() -> dict:
    """Seconds per frame of the integer reference (the oracle) and of the fake-quant model."""
    from convforge.models.quant.executor import run_qgraph

    rows = {}
    for config in ("tiny", "a"):
        model, graph, size = _exported(config)
        image = torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8)
        with torch.no_grad():
            t_int = _timeit(lambda g=graph, x=image: run_qgraph(g, x), repeat=2)
            t_fq = _timeit(lambda m=model, x=image: m(x.float()), repeat=2)
        rows[config] = {
            "input": list(size),
            "layers": len(graph.layers),
            "int_reference_s_per_frame": t_int,
            "fake_quant_s_per_frame": t_fq,
        }
    return rows


def bench_deform_ops() -> dict:
    """Forward and forward+backward time of the pure-PyTorch deformable operators."""
    from convforge.models.ops import deform_conv2d, deform_square_dw_conv2d

    torch.manual_seed(0)
    n, c, h, w = 1, 64, 64, 64
    x = torch.randn(n, c, h, w, requires_grad=True)
    off = (torch.randn(n, 18, h, w) * 2).requires_grad_(True)
    wt = torch.randn(c, 1, 3, 3, requires_grad=True)
    dil = torch.randint(0, 9, (n, 1, h, w)).float()

    def fwd_bwd(fn):
        return lambda: fn().sum().backward()

    return {
        "shape": [n, c, h, w],
        "deform_conv2d_dw_forward_s": _timeit(lambda: deform_conv2d(x, off, wt, padding=1)),
        "deform_conv2d_dw_fwd_bwd_s": _timeit(fwd_bwd(lambda: deform_conv2d(x, off, wt, padding=1))),
        "square_dw_forward_s": _timeit(lambda: deform_square_dw_conv2d(x, dil, wt)),
    }


def bench_rtl_throughput() -> dict:
    """Cycles per output vector of the RTL units in Verilator (bit-checked while measured)."""
    from convforge.hw.config import EngineConfig
    from convforge.sim.regress_pe_array import measure_utilisation
    from convforge.sim.tb_depthwise import measure_throughput

    pe_cfg = EngineConfig(pe_ci=8, pe_co=8)
    dw_cfg = EngineConfig(dw_lanes=4, line_width=32)
    return {
        "pe_array": [measure_utilisation(pe_cfg, ci, co, npix=32) for ci, co in ((64, 64), (116, 116), (24, 58))],
        "depthwise_cycles_per_output_vector": measure_throughput(dw_cfg),
        "configs": {"pe_array": pe_cfg.to_dict(), "depthwise": dw_cfg.to_dict()},
    }


def bench_synth() -> dict:
    """Yosys resource estimates of every unit for each board's default engine."""
    import tempfile

    from convforge.sw.commands.synth import synth_report

    out = {}
    for board in ("ultra96v2", "pynqz2"):
        with tempfile.TemporaryDirectory() as work:
            t = time.perf_counter()
            out[board] = synth_report(board, None, None, Path(work), jobs=2)
            out[board]["seconds"] = time.perf_counter() - t
    return out


BENCHMARKS: dict[str, Callable[[], dict]] = {
    "model_info": bench_model_info,
    "mobilenetv2": bench_mobilenetv2,
    "zoo_models": bench_zoo_models,
    "integer_reference": bench_integer_reference,
    "deform_ops": bench_deform_ops,
    "rtl_throughput": bench_rtl_throughput,
    "synth": bench_synth,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--skip", nargs="*", choices=list(BENCHMARKS), default=[], help="skip these")
    args = parser.parse_args(argv)
    names = [n for n in (args.only or BENCHMARKS) if n not in args.skip]
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "results": {},
    }
    failed = []
    for name in names:
        print(f"bench {name} ...", flush=True)
        t = time.perf_counter()
        try:
            result = BENCHMARKS[name]()
        except Exception as exc:  # a broken benchmark is reported, the others still run
            failed.append(name)
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["wall_s"] = time.perf_counter() - t
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        summary["results"][name] = result
        print(f"bench {name}: {'FAILED ' + result['error'] if name in failed else 'ok'} ({result['wall_s']:.1f} s)")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(f"wrote {args.out}/summary.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
