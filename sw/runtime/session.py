"""Open the accelerator behind a backend name and get a per-frame inference function.

``emu`` and ``rtl`` run the PYNQ driver on a :class:`~convforge.sw.runtime.simdevice.SimDevice`;
``pynq`` runs it on a board's real overlay; ``int`` is the integer reference (the oracle
the hardware is checked against; needs torch). All hardware backends go through the very
same driver code: ``pynq.Overlay(...).convforge_0`` -> ``load(Program)`` -> ``run(image)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convforge.errors import ConfigError, SimulationError

BACKENDS = ("emu", "rtl", "pynq", "int")
HARDWARE_BACKENDS = ("emu", "rtl", "pynq")

#: ``rtl``: default frame timeout (seconds). The simulation runs ~3-30 k cycles/s, so a frame
#: takes minutes at 32x32 and hours at 416x416. A hung *engine* still ends its frame (its AXI
#: watchdog raises TIMEOUT after ``controller.WATCHDOG_CYCLES`` idle cycles) and a hung
#: *simulator* gives a SimulationError within ``sim.bridge.REQUEST_TIMEOUT_S``; this bounds
#: only a frame that keeps making progress.
RTL_TIMEOUT_S = 6 * 3600.0


@dataclass
class Session:
    """A backend ready to run frames.

    Attributes:
        backend: the backend name.
        input_size: the network's square input side in pixels.
        infer: ``infer(image (S, S, 3) uint8) -> (outputs {name: (C, H, W) ints}, frame info)``;
            frame info has ``seconds`` and, on hardware backends, ``counters``.
        accel: the driver (hardware backends), else None.
        info: what was opened (overlay, device, EngineConfig, Program summary).
    """

    backend: str
    input_size: int
    infer: Callable[[np.ndarray], tuple[Mapping[str, np.ndarray], dict]]
    accel: object | None = None
    info: dict = field(default_factory=dict)


def pynq_board_missing() -> str | None:
    """None on a PYNQ board; otherwise what is missing, as one sentence."""
    import platform

    try:
        import pynq
    except ImportError:
        return "pynq is not installed (pip install 'convforge[board]' on the board's PYNQ image)"
    from convforge.sw.runtime.simdevice import SimDevice, probed_devices

    devices = [d for d in probed_devices() if not isinstance(d, SimDevice)]
    if devices:
        return None
    return (
        f"pynq {pynq.__version__} found no programmable-logic device on this {platform.machine()} machine "
        "(a PYNQ board image — Ultra96-V2, PYNQ-Z2, KV260 — runs on armv7l/aarch64 with the FPGA manager); "
        "run this command on the board with --overlay <convforge.bit beside its .hwh>, or use --backend emu here"
    )


def open_session(
    backend: str,
    graph,
    board: str = "ultra96v2",
    overlay: str | Path | None = None,
    program: str | Path | None = None,
    workdir: str | Path = "out/sim",
    timeout_s: float | None = None,
    engine=None,
    progress: bool = False,
) -> Session:
    """Open ``backend`` for the QGraph ``graph``.

    Args:
        backend: ``emu``, ``rtl`` (SimDevice), ``pynq`` (a board) or ``int``.
        graph: the model's QGraph (compiled for the hardware's EngineConfig unless
            ``program`` is given).
        board: board profile: the simulated overlay's design (SimDevice backends) and the
            DDR bandwidth the cycle model assumes.
        overlay: the board's ``.bit`` (``pynq``), or a simulated overlay file to use
            instead of writing one into ``workdir``.
        program: a Program file to load instead of compiling ``graph``.
        timeout_s: per-frame timeout in seconds. Default: the driver's
            (:data:`~convforge.sw.runtime.driver.DEFAULT_TIMEOUT_S`), on ``rtl``
            :data:`RTL_TIMEOUT_S`.
        engine: the EngineConfig of the simulated overlay (SimDevice backends; default the
            board's). ``rtl`` builds the Verilator model of this engine (cached).
        progress: ``rtl``: show the simulated clock cycles of each frame and the simulation
            rate on stderr while it runs.

    Raises:
        ConfigError: unknown backend, or ``pynq`` without a board (says what is missing).
        SimulationError: ``rtl``: no simulator, the model's build failed, or the simulation
            died or hung (the message names its log).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    size = int(graph.tensors[graph.input].shape[1])
    if backend == "int":
        return _int_session(graph, size)

    import pynq

    from convforge.sw.runtime import driver as drv
    from convforge.sw.runtime import simdevice

    if backend == "pynq":
        missing = pynq_board_missing()
        if missing:
            raise ConfigError(f"--backend pynq: {missing}")
        if overlay is None:
            raise ConfigError("--backend pynq needs --overlay: the convforge .bit (its .hwh beside it) on the board")
        device = pynq.Device.active_device
        if isinstance(device, simdevice.SimDevice):
            raise ConfigError(
                "--backend pynq but the active pynq device is a SimDevice (CONVFORGE_SIMDEVICE is set); unset it"
            )
        bitfile = Path(overlay)
    else:
        device = simdevice.use_simdevice(backend)
        bitfile = (Path(overlay) if overlay else
                   simdevice.write_sim_overlay(Path(workdir) / "convforge_sim.bit", board, engine))
    if not bitfile.is_file():
        raise ConfigError(f"{bitfile}: overlay file not found")
    ol = pynq.Overlay(str(bitfile), device=device)
    from convforge.hw.ip import ACCEL_INSTANCE

    accel = getattr(ol, ACCEL_INSTANCE)
    if not isinstance(accel, drv.ConvforgeAccel):
        raise SimulationError(f"{bitfile}: {ACCEL_INSTANCE} has driver {type(accel).__name__}, not ConvforgeAccel")
    engine = accel.engine_config()
    if program is not None:
        from convforge.sw.runtime.program import Program

        prog = Program.load(Path(program))
    else:
        from convforge.hw.boards import get_board
        from convforge.sw.compiler import compile as compile_program

        prog = compile_program(graph, engine, ddr_gbps=get_board(board).ddr_gbps)
    accel.load(prog)
    if timeout_s is None and backend == "rtl":
        timeout_s = RTL_TIMEOUT_S
    kwargs = {} if timeout_s is None else {"timeout_s": timeout_s}
    watch = _RtlProgress(device.csr) if backend == "rtl" and progress else None

    def infer(image: np.ndarray) -> tuple[Mapping[str, np.ndarray], dict]:
        if watch is None:
            frame = accel.run(image, **kwargs)
        else:
            with watch:
                frame = accel.run(image, **kwargs)
        return frame.outputs, {"seconds": round(frame.seconds, 6), "counters": frame.counters, "wait": frame.wait}

    info = {"device": device.name, "overlay": str(bitfile), "engine": engine.to_dict(),
            "descriptors": prog.n_descriptors}  # fmt: skip
    return Session(backend, size, infer, accel, info)


class _RtlProgress:
    """A tqdm counter of one frame's simulated clock cycles, fed by the RTL simulation's answers
    (``RtlSimulation.progress``). No total: the cycle model predicts the engine the design
    describes, not the byte-serial operand moves the RTL has today (docs/hardware.md)."""

    def __init__(self, sim) -> None:
        self.sim, self.bar = sim, None

    def __enter__(self) -> _RtlProgress:
        from tqdm import tqdm

        start = self.sim.cycle
        self.bar = tqdm(desc="RTL frame", unit="cycle", unit_scale=True, leave=False)

        def update(cycle: int, in_flight: bool) -> None:  # noqa: ARG001
            self.bar.update(max(0, cycle - start) - self.bar.n)

        self.sim.progress = update
        return self

    def __exit__(self, *exc) -> None:
        self.sim.progress = None
        self.bar.close()


def _int_session(graph, size: int) -> Session:
    from convforge.models.quant.executor import run_qgraph

    def infer(image: np.ndarray) -> tuple[Mapping[str, np.ndarray], dict]:
        t0 = time.perf_counter()
        heads = run_qgraph(graph, image)
        outs = {k: heads[k][0].numpy() for k in ("hm", "wh", "reg")}
        return outs, {"seconds": round(time.perf_counter() - t0, 6)}

    return Session("int", size, infer, None, {"device": "integer reference (torch, int64)"})
