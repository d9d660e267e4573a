"""C simulation of a generated hls4ml project with plain g++, checked layer by layer.

:func:`compile_project` compiles the project hls4ml wrote (its ``build_lib.sh``: the
firmware and the ctypes bridge) into a shared library, cached under a hash of every
generated source, so a model is compiled once and later runs (in this process, another
pytest worker, or a later session) load the cached library. A file lock makes two
processes wait for each other instead of compiling the same project twice.

:func:`csim_check` runs the C simulation with hls4ml's per-layer tracing and compares
every QGraph tensor with the integer reference (:func:`convforge.models.quant.executor.run_qgraph`)
with ``np.array_equal``.

The compile cache lives under ``$CONVFORGE_HLS_BUILD`` or ``./build/hls``. ``-O1`` is the
default: ``-O0`` compiles about 30 % faster but simulates about 14x slower.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convforge.errors import SimulationError
from convforge.filelock import file_lock
from convforge.models.quant.executor import run_qgraph
from convforge.models.quant.qgraph import QGraph

DEFAULT_OPT = "-O1"
#: Seconds one g++ build of a project may take before it is abandoned.
COMPILE_TIMEOUT_S = 3600


def default_cache_root() -> Path:
    """Where compiled C-simulation libraries are cached: ``$CONVFORGE_HLS_BUILD`` or ``./build/hls``."""
    return Path(os.environ.get("CONVFORGE_HLS_BUILD", Path.cwd() / "build" / "hls")).resolve()


def _source_files(project: Path) -> list[Path]:
    files = [p for p in (project / "firmware").rglob("*") if p.is_file() and p.suffix in (".h", ".cpp", ".hpp")]
    files += [p for p in project.glob("*_bridge.cpp")]
    return sorted(files)


def source_hash(project: Path, opt: str) -> str:
    """sha256 over the generated C++ (path relative to the project and content) and the flags.

    The weight headers count only up to their ``#else``, without hls4ml's min/max comment
    lines: C simulation reads the values from
    ``firmware/weights/*.txt`` at run time (the ``#else`` branch is the synthesis copy), so
    one library serves every model of the same structure, whatever its weights.
    """
    h = hashlib.sha256(f"opt={opt}\n".encode())
    for path in _source_files(project):
        h.update(str(path.relative_to(project)).encode() + b"\0")
        data = path.read_bytes()
        if path.parent.name == "weights":  # declaration only: no values, no min/max comments
            head = data.split(b"#else", 1)[0]
            data = b"\n".join(line for line in head.splitlines() if not line.startswith(b"//"))
        h.update(data)
    return h.hexdigest()


@dataclass
class CompileResult:
    """A compiled C-simulation library: ``library`` path, whether it came from the cache, seconds."""

    library: Path
    cached: bool
    seconds: float
    key: str


def compile_project(project: str | Path, project_name: str, opt: str = DEFAULT_OPT,
                    cache_root: str | Path | None = None) -> CompileResult:
    """Compile a written hls4ml project's C-simulation library with g++ (cached).

    Args:
        project: the directory hls4ml wrote (holds ``build_lib.sh``).
        project_name: hls4ml's ``ProjectName``.
        opt: g++ optimisation flag replacing hls4ml's ``-O3``.
        cache_root: the cache directory (default :func:`default_cache_root`).

    Raises:
        SimulationError: g++ is missing, or the build failed (the compiler output is in
            the message's log file) or took longer than ``COMPILE_TIMEOUT_S``.
    """
    project = Path(project).resolve()
    script = project / "build_lib.sh"
    if not script.is_file():
        raise SimulationError(f"{project}: no build_lib.sh; write the hls4ml project first")
    if shutil.which("g++") is None:
        raise SimulationError("g++ is not on PATH; C simulation needs a C++ compiler (apt install g++)")
    text = script.read_text()
    patched = re.sub(r'CFLAGS="-O\w* -fPIC"', f'CFLAGS="{opt} -fPIC"', text)
    # weights are read relative to the working directory, which hls4ml's trace() sets to the
    # project's firmware/ (so a cached library reads the weights of the project running it)
    patched = re.sub(r'^WEIGHTS_DIR=.*$', 'WEIGHTS_DIR="\\"weights\\""', patched, flags=re.M)
    if f'CFLAGS="{opt} -fPIC"' not in patched or 'WEIGHTS_DIR="\\"weights\\""' not in patched:
        raise SimulationError(f"{script}: no CFLAGS / WEIGHTS_DIR line to patch; was it written by hls4ml 1.3?")
    if patched != text:
        script.write_text(patched)
    key = source_hash(project, opt)
    root = Path(cache_root).resolve() if cache_root else default_cache_root()
    entry = root / key[:24]
    library = entry / f"lib{project_name}.so"
    start = time.perf_counter()
    with file_lock(root / f".{key[:24]}.lock"):
        if library.is_file():
            return CompileResult(library, True, time.perf_counter() - start, key)
        log = project / "build_lib.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(["bash", str(script)], cwd=project, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                proc.wait(timeout=COMPILE_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                os.killpg(proc.pid, signal.SIGKILL)  # g++ and cc1plus too, not only the shell
                proc.wait()
                raise SimulationError(f"{project}: g++ build exceeded {COMPILE_TIMEOUT_S} s (log: {log})") from exc
        built = sorted((project / "firmware").glob(f"{project_name}-*.so"), key=lambda p: p.stat().st_mtime)
        if proc.returncode != 0 or not built:
            tail = "\n".join(log.read_text().splitlines()[-15:])
            raise SimulationError(f"{project}: C-simulation build failed (exit {proc.returncode}); log {log}:\n{tail}")
        entry.mkdir(parents=True, exist_ok=True)
        tmp = entry / f".{library.name}.{os.getpid()}"
        shutil.copy2(built[-1], tmp)
        tmp.replace(library)
    return CompileResult(library, False, time.perf_counter() - start, key)


def load_library(model, library: Path) -> None:
    """Attach a compiled library to an hls4ml ``ModelGraph`` (what ``model.compile()`` does).

    The library is loaded from a fresh copy in the project's ``firmware/``: ``dlopen`` hands
    back an already loaded file, whose weights (read once per load) could be another model's.
    """
    firmware = Path(model.config.get_output_dir()).resolve() / "firmware"
    for old in firmware.glob("csim-*.so"):
        old.unlink()
    copy = firmware / f"csim-{uuid.uuid4().hex[:12]}.so"
    shutil.copy2(library, copy)
    model._top_function_lib = ctypes.cdll.LoadLibrary(str(copy))


def trace_model(model, x: np.ndarray, library: Path) -> dict[str, np.ndarray]:
    """Run the C simulation of ``model`` on ``x`` with every traced layer's output kept.

    ``x`` is float64 ``(N, H, W, C)`` holding integers (channels-last, as the model's input).
    hls4ml's ``ModelGraph.trace`` recompiles before tracing; here its compile step loads the
    cached ``library`` instead. Returns ``{hls4ml layer name: (N, *layer shape) float64}``.
    """
    model.compile = lambda: load_library(model, library)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            _, traces = model.trace(np.ascontiguousarray(x, dtype=np.float64))
    finally:
        del model.compile  # back to hls4ml's own compile()
    return traces


@dataclass
class LayerCheck:
    """One QGraph layer's C-simulation result: ``mismatches`` integers differ (0: bit-exact)."""

    layer: str
    op: str
    tensors: list[str]
    elements: int
    mismatches: int
    first_mismatch: str = ""

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


@dataclass
class CsimReport:
    """What :func:`csim_check` measured."""

    checks: list[LayerCheck] = field(default_factory=list)
    images: int = 0
    compile: CompileResult | None = None
    write_s: float = 0.0
    run_s: float = 0.0

    @property
    def passed(self) -> int:
        return sum(c.ok for c in self.checks)

    @property
    def failed(self) -> int:
        return sum(not c.ok for c in self.checks)

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"


def csim_check(graph: QGraph, images: np.ndarray, out_dir: str | Path, opt: str = DEFAULT_OPT,
               cache_root: str | Path | None = None, progress: bool = False, model_spec=None) -> CsimReport:
    """Generate, compile and C-simulate ``graph``; compare every layer with the integer reference.

    Args:
        graph: the QGraph.
        images: uint8 ``(N, H, W, C)`` (file layout) input frames.
        out_dir: where the hls4ml project is written.
        opt: g++ optimisation flag.
        progress: tqdm bar over the layers being compared.
        model_spec: the ``(model, spec)`` of :func:`~convforge.hw.hls.project.write_project`
            when the project in ``out_dir`` is already written (written here when None).

    Returns:
        A :class:`CsimReport`: one :class:`LayerCheck` per QGraph layer (all its output
        tensors, all images), compile and run times.

    Raises:
        HLSConversionError: the graph has a layer without HLS mapping.
        SimulationError: the C++ build failed.
        ShapeError: the images do not fit the graph's input.
    """
    from convforge.hw.hls.project import write_project

    images = np.asarray(images)
    reference = run_qgraph(graph, images, keep_all=True)  # validates dtype / shape (ShapeError)
    if images.ndim == 3:
        images = images[None]
    report = CsimReport(images=int(images.shape[0]))
    t0 = time.perf_counter()
    model, spec = model_spec if model_spec is not None else write_project(graph, out_dir)
    report.write_s = time.perf_counter() - t0
    report.compile = compile_project(out_dir, model.config.get_project_name(), opt, cache_root)
    t0 = time.perf_counter()
    traces = trace_model(model, images.astype(np.float64), report.compile.library)
    report.run_s = time.perf_counter() - t0
    layers = graph.layers
    if progress:
        from tqdm import tqdm

        layers = tqdm(layers, desc="C-sim vs integer reference", unit="layer", leave=False)
    for layer in layers:
        total, bad, first = 0, 0, ""
        for tensor in layer.outputs:
            ref = reference[tensor].numpy()
            name = spec.tensor_layer[tensor]
            if name not in traces:
                raise SimulationError(f"layer {layer.name!r}: hls4ml layer {name!r} was not traced")
            got = traces[name].reshape(ref.shape[0], ref.shape[2], ref.shape[3], ref.shape[1]).transpose(0, 3, 1, 2)
            got_int = np.rint(got).astype(np.int64)
            diff = (got_int != ref) | (got_int != got)  # a non-integer value is a mismatch too
            total += ref.size
            if diff.any():
                bad += int(diff.sum())
                if not first:
                    idx = tuple(int(i) for i in np.argwhere(diff)[0])
                    first = f"{tensor}{list(idx)}: C-sim {got_int[idx]}, reference {ref[idx]}"
        report.checks.append(LayerCheck(layer.name, layer.op, list(layer.outputs), total, bad, first))
    return report
