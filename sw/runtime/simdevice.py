"""``SimDevice``: a PYNQ device without a board, registered through pynq's own registry.

With it, ``pynq.Overlay``, ``pynq.allocate`` and ``pynq.MMIO`` work unchanged on an x86
machine, and the very same driver code that runs on an Ultra96-V2 / PYNQ-Z2 / KV260
(:class:`convforge.sw.runtime.driver.ConvforgeAccel`) drives a simulated accelerator:

* **overlay metadata** comes from a *simulated overlay file* (:func:`write_sim_overlay`):
  the board, its EngineConfig, and the design's own address map (the accelerator IP
  under :data:`convforge.hw.ip.ACCEL_VLNV` at the board's CSR base address, the CSR
  block's size) — no Vivado output needed;
* **MMIO** (capability ``REGISTER_RW``) goes to a behavioural model of the CSR block
  (:class:`convforge.sw.runtime.csr_model.CsrModel`), built from the same generated
  register module the RTL and the driver use;
* **buffers** behave as on a board's HP ports: physically contiguous, *not* coherent —
  the device sees host writes only after ``sync_to_device()`` (flush) and the host sees
  device writes only after ``sync_from_device()`` (invalidate), so a driver that forgets
  a sync fails here as it would on the board;
* a **backend** is the accelerator behind the CSR window: ``emu`` (a behavioural CSR model,
  :class:`~convforge.sw.runtime.csr_model.CsrModel`, that runs the NumPy emulator on the
  buffer memory when ``start`` is written) or ``rtl`` (the Verilator model of the generated
  accelerator top, :class:`convforge.sim.bridge.RtlSimulation`, in a cocotb child process:
  MMIO becomes AXI4-Lite transactions on its CSR port, a flush / invalidate copies bytes into
  / out of the AXI memory model its DMA reads and writes, and the counters, status and
  interrupt line are the RTL's own).

Selection, never affecting a plain ``import pynq`` on a board: set the environment
variable ``CONVFORGE_SIMDEVICE=emu`` (read when :mod:`convforge.sw.runtime.driver` is
imported) or call :func:`use_simdevice`. pynq probes devices once and caches the list
(``Device.devices``); :func:`use_simdevice` works before and after that first probe.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pynq.buffer import PynqBuffer
from pynq.pl_server.device import Device

from convforge.errors import ConfigError, SimulationError
from convforge.hw.boards import get_board
from convforge.hw.config import EngineConfig
from convforge.hw.ip import ACCEL_INSTANCE, ACCEL_VLNV, csr_base_address

#: Environment variable selecting the simulated device and its backend (``emu`` or ``rtl``).
ENV_VAR = "CONVFORGE_SIMDEVICE"
BACKENDS = ("emu", "rtl")

#: pynq probes device classes in ascending priority; the first device found is the
#: default. Built-in classes use 40 (Versal), 50 (Embedded), 100 (Remote), 200 (XRT):
#: a lower number makes an explicitly requested SimDevice the default.
PROBE_PRIORITY = 5

SIM_OVERLAY_FORMAT = "convforge-sim-overlay"
SIM_OVERLAY_VERSION = 1

#: First physical address handed out by the simulated memory allocator (a DDR address
#: of the Zynq UltraScale+ memory map) and the allocation alignment (one page).
SIM_DDR_BASE = 0x1000_0000
SIM_PAGE = 4096


# --------------------------------------------------------------------------- overlay file
@dataclass(frozen=True)
class SimOverlay:
    """What a simulated overlay file describes.

    Attributes:
        path: the file.
        board: board profile name.
        engine: the accelerator's EngineConfig (what its ID/config registers report).
        csr_base: physical byte address of the CSR block.
        csr_range: size of the CSR block's address window in bytes.
    """

    path: Path
    board: str
    engine: EngineConfig
    csr_base: int
    csr_range: int


def write_sim_overlay(
    path: str | Path, board: str = "ultra96v2", engine: EngineConfig | None = None
) -> Path:
    """Write the simulated overlay file a :class:`SimDevice` loads with ``pynq.Overlay(path)``.

    Args:
        path: the file to write (e.g. ``convforge_sim.bit``).
        board: board profile whose address map and default EngineConfig the design has.
        engine: an EngineConfig other than the board's default.

    Returns:
        The written path.
    """
    from convforge.sw.runtime.csr_model import CSR_RANGE

    prof = get_board(board)
    doc = {
        "format": SIM_OVERLAY_FORMAT,
        "version": SIM_OVERLAY_VERSION,
        "board": prof.name,
        "engine": (engine or prof.engine).to_dict(),
        "csr_base": csr_base_address(prof.yosys_family),
        "csr_range": CSR_RANGE,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    return path


def read_sim_overlay(path: str | Path) -> SimOverlay:
    """Parse a simulated overlay file; ConfigError naming the file if it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path}: not a convforge simulated overlay ({exc}); a SimDevice loads the file written by "
            "convforge.sw.runtime.simdevice.write_sim_overlay (a real .bit needs a board)"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != SIM_OVERLAY_FORMAT:
        raise ConfigError(f"{path}: not a convforge simulated overlay (no format {SIM_OVERLAY_FORMAT!r})")
    if doc.get("version") != SIM_OVERLAY_VERSION:
        raise ConfigError(
            f"{path}: simulated overlay version {doc.get('version')}, this convforge reads {SIM_OVERLAY_VERSION}; "
            "write it again with write_sim_overlay"
        )
    engine = EngineConfig.from_dict(doc["engine"], source=str(path))
    return SimOverlay(path, doc["board"], engine, int(doc["csr_base"]), int(doc["csr_range"]))


class SimMetadata:
    """The overlay metadata pynq's ``Overlay`` reads (what a ``.hwh`` parser provides)."""

    def __init__(self, overlay: SimOverlay) -> None:
        self.overlay = overlay
        self.ip_dict = {
            ACCEL_INSTANCE: {
                "fullpath": ACCEL_INSTANCE,
                "type": ACCEL_VLNV,
                "bdtype": None,
                "phys_addr": overlay.csr_base,
                "addr_range": overlay.csr_range,
                "mem_id": "s_axil",
                "parameters": {"board": overlay.board, **{k: str(v) for k, v in overlay.engine.to_dict().items()}},
                "registers": {},
                "interrupts": {},
                "gpio": {},
                "state": None,
            }
        }
        self.mem_dict: dict = {}
        self.gpio_dict: dict = {}
        self.interrupt_pins: dict = {}
        self.interrupt_controllers: dict = {}
        self.hierarchy_dict: dict = {}
        self.systemgraph = None
        # No PL clocks to program: pynq's Clocks only exist on armv7l / aarch64.
        self.clock_dict: dict = {}


# --------------------------------------------------------------------------- memory
class SimMemory:
    """Physically contiguous, non-coherent buffers in a simulated DDR.

    Every allocation gets a physical address (page aligned, from :data:`SIM_DDR_BASE`) and
    a device-side copy of its bytes. ``flush`` copies host -> device, ``invalidate``
    device -> host, as the caches of a Zynq's HP ports require.
    """

    def __init__(self, device: SimDevice) -> None:
        self._device = device
        self._next = SIM_DDR_BASE
        self._bo = 0
        # bo -> (physical address, device-side bytes)
        self.regions: dict[int, tuple[int, np.ndarray]] = {}
        self._lock = threading.Lock()
        self.dram = None

    def attach(self, dram) -> None:
        """Make ``dram`` (``write_memory(address, bytes)`` / ``read_memory(address, length)``,
        e.g. the RTL simulation's AXI memory model) the device side of every buffer: flushes
        go there, invalidates come from there. The device-side bytes of existing buffers are
        copied into it (DDR keeps its contents across a reconfiguration); None detaches."""
        self.dram = dram
        if dram is not None:
            for address, data in list(self.regions.values()):
                dram.write_memory(address, data.tobytes())

    def allocate(self, shape: Any, dtype: Any = "u4", **kwargs: Any) -> PynqBuffer:
        """A zeroed ``PynqBuffer`` of ``shape``/``dtype`` (pynq.allocate's contract).

        Raises:
            SimulationError: options a board's allocator has and this model does not
                (``cacheable``, memory banks): every simulated buffer is non-coherent.
        """
        if kwargs:
            raise SimulationError(
                f"SimDevice buffers do not model {', '.join(sorted(kwargs))}: every buffer is contiguous and "
                "non-coherent (sync_to_device / sync_from_device); allocate without these options"
            )
        buf = PynqBuffer(shape, dtype, device=self._device, coherent=False)
        buf[...] = 0
        nbytes = max(int(buf.nbytes), 1)
        with self._lock:
            self._bo += 1
            bo, address = self._bo, self._next
            self._next += -(-nbytes // SIM_PAGE) * SIM_PAGE
            self.regions[bo] = (address, np.zeros(nbytes, dtype=np.uint8))
        buf.bo = bo
        buf.device_address = address
        weakref.finalize(buf, self.regions.pop, bo, None)
        return buf

    def device_bytes(self, physical_address: int) -> tuple[np.ndarray, int]:
        """The device-side bytes of the buffer holding ``physical_address``, and the
        address's offset in it. SimulationError if no buffer holds it."""
        for address, data in list(self.regions.values()):
            if address <= physical_address < address + len(data):
                return data, physical_address - address
        raise SimulationError(
            f"no buffer allocated at physical address {physical_address:#x}; the driver must write the "
            "device_address of a pynq.allocate buffer to the DDR base registers"
        )

    @staticmethod
    def _host_view(vaddr: int, length: int) -> np.ndarray:
        return np.ctypeslib.as_array((ctypes.c_uint8 * length).from_address(vaddr))

    def flush(self, bo: int, offset: int, vaddr: int, length: int) -> None:
        address, data = self.regions[bo]
        data[offset : offset + length] = self._host_view(vaddr, length)
        if self.dram is not None:
            self.dram.write_memory(address + offset, data[offset : offset + length].tobytes())

    def invalidate(self, bo: int, offset: int, vaddr: int, length: int) -> None:
        address, data = self.regions[bo]
        if self.dram is not None:
            data[offset : offset + length] = np.frombuffer(self.dram.read_memory(address + offset, length), np.uint8)
        self._host_view(vaddr, length)[:] = data[offset : offset + length]


# --------------------------------------------------------------------------- the device
class SimDevice(Device):
    """A PYNQ device whose programmable logic is simulated (see the module docstring).

    Args:
        backend: ``emu`` or ``rtl``.
    """

    _probe_priority_ = PROBE_PRIORITY

    @classmethod
    def _probe_(cls) -> list[SimDevice]:
        backend = os.environ.get(ENV_VAR, "").strip()
        return [cls(backend)] if backend else []

    def __init__(self, backend: str = "emu") -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"{ENV_VAR}={backend!r}: unknown SimDevice backend; choose one of {', '.join(BACKENDS)}")
        super().__init__(f"convforge-sim-{backend}")
        self.backend_name = backend
        self.name = f"convforge SimDevice ({backend})"
        self.arch = "x86_64"
        self.capabilities = {"REGISTER_RW": True}
        self.default_memory = SimMemory(self)
        self.timestamp = ""
        self.bitfile_name = None
        self.overlay: SimOverlay | None = None
        self.csr = None

    # -- metadata and download (pynq.Overlay) --
    def get_bitfile_metadata(self, bitfile_name: str, partial: bool = False) -> SimMetadata:
        if partial:
            raise SimulationError("SimDevice has no partial reconfiguration regions")
        return SimMetadata(read_sim_overlay(bitfile_name))

    def download(self, bitstream: Any, parser: SimMetadata | None = None) -> None:
        """"Configure the PL": put the backend's accelerator for the overlay's design behind
        the CSR window (``rtl``: builds the Verilator model unless cached, starts it; a
        previously loaded one is stopped first)."""
        meta = parser if parser is not None else self.get_bitfile_metadata(bitstream.bitfile_name)
        self.close()
        self.overlay = meta.overlay
        self.csr = make_backend(self.backend_name, meta.overlay, self.default_memory)
        self.post_download(bitstream, meta)

    def close(self) -> None:
        """Stop the accelerator model (``rtl``: ends the simulation); the overlay must be loaded again."""
        csr, self.csr = self.csr, None
        self.default_memory.attach(None)
        if csr is not None and hasattr(csr, "close"):
            csr.close()

    def gen_cache(self, bitstream: Any, parser: Any = None) -> None:
        """Nothing to cache: the metadata is built from the overlay file on every load."""

    def insert_device_tree(self, abs_dtbo: str) -> None:
        raise SimulationError("SimDevice has no device tree; load the overlay without dtbo")

    # -- MMIO (REGISTER_RW) --
    def _csr_offset(self, address: int, length: int) -> int:
        ov = self.overlay
        if self.csr is None or ov is None:
            raise SimulationError("no overlay loaded on the SimDevice; create pynq.Overlay(<sim overlay file>) first")
        if not (ov.csr_base <= address and address + length <= ov.csr_base + ov.csr_range):
            raise SimulationError(
                f"MMIO access at {address:#x} (+{length} bytes) outside the accelerator's CSR window "
                f"{ov.csr_base:#x}..{ov.csr_base + ov.csr_range:#x}"
            )
        return address - ov.csr_base

    def read_registers(self, address: int, length: int) -> bytes:
        base = self._csr_offset(address, length)
        words = [self.csr.read(base + 4 * i) for i in range(-(-length // 4))]
        return b"".join(int(w).to_bytes(4, "little") for w in words)[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        base = self._csr_offset(address, len(data))
        if len(data) % 4:
            raise SimulationError(f"MMIO write of {len(data)} bytes: the CSR block takes whole 32-bit words")
        for i in range(len(data) // 4):
            self.csr.write(base + 4 * i, int.from_bytes(data[4 * i : 4 * i + 4], "little"))

    # -- buffers --
    def flush(self, bo: int, offset: int, vaddr: int, length: int) -> None:
        self.default_memory.flush(bo, offset, vaddr, length)

    def invalidate(self, bo: int, offset: int, vaddr: int, length: int) -> None:
        self.default_memory.invalidate(bo, offset, vaddr, length)


# --------------------------------------------------------------------------- backends
def make_backend(name: str, overlay: SimOverlay, memory: SimMemory):
    """The accelerator behind the CSR window (``read(offset)``, ``write(offset, value)``, ``irq``).

    ``emu``: :class:`~convforge.sw.runtime.csr_model.CsrModel` running the emulator on
    ``memory``'s device-side bytes. ``rtl``: :class:`convforge.sim.bridge.RtlSimulation` of
    the overlay's EngineConfig, attached to ``memory`` as its DDR (imported here, lazily:
    only this backend needs cocotb, Verilator and the ``sim`` package).

    Raises:
        ConfigError: an unknown backend name.
        SimulationError: ``rtl``: no simulator, the build failed or the simulation did not start.
    """
    if name == "emu":
        from convforge.sw.runtime.csr_model import CsrModel, EmulatorBackend

        return CsrModel(overlay.engine, EmulatorBackend(overlay.engine, get_board(overlay.board).ddr_gbps), memory)
    if name == "rtl":
        from convforge.sim.bridge import RtlSimulation

        sim = RtlSimulation(overlay.engine)
        try:
            memory.attach(sim)
        except BaseException:
            sim.close()
            raise
        return sim
    raise ConfigError(f"unknown SimDevice backend {name!r}; choose one of {', '.join(BACKENDS)}")


# --------------------------------------------------------------------------- selection
def probed_devices() -> list:
    """``pynq.Device.devices`` (pynq probes once and caches the list), without pynq's
    "No devices found, is the XRT environment sourced?" warning: on a machine without a
    board, finding none is the expected answer, and the caller says what it means."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No devices found", category=UserWarning)
        return Device.devices


def use_simdevice(backend: str = "emu") -> SimDevice:
    """Make a SimDevice the active pynq device (``pynq.Device.active_device``) and return it.

    Works whether or not pynq has already probed its devices; calling it again returns
    the same device if the backend matches.
    """
    devices = probed_devices()
    for dev in devices:
        if isinstance(dev, SimDevice) and dev.backend_name == backend:
            break
    else:
        dev = SimDevice(backend)
        devices.insert(0, dev)
    Device.active_device = dev
    return dev


def enable_from_env() -> SimDevice | None:
    """Activate the SimDevice named by ``CONVFORGE_SIMDEVICE`` if the variable is set."""
    backend = os.environ.get(ENV_VAR, "").strip()
    return use_simdevice(backend) if backend else None
