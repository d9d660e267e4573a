"""The PYNQ driver of the convforge accelerator, on the real ``pynq`` API (NumPy only).

Importing this module registers :class:`ConvforgeAccel` with pynq for the accelerator's
VLNV (:data:`convforge.hw.ip.ACCEL_VLNV`), so ``pynq.Overlay("convforge.bit").convforge_0``
*is* the driver, as PYNQ overlays ship their drivers::

    from pynq import Overlay
    import convforge.sw.runtime.driver            # registers the driver
    accel = Overlay("convforge.bit").convforge_0
    accel.load("model.cfprog")                    # a Program from `convforge compile`
    frame = accel.run(image_uint8_hwc)            # frame.outputs["hm"], frame.counters

Without a board, set ``CONVFORGE_SIMDEVICE=emu`` before importing this module (or call
:func:`convforge.sw.runtime.simdevice.use_simdevice`): the same code then drives the
simulated device. On a board without that variable nothing here touches pynq's devices.

Per frame the driver writes the image into the input region of the one buffer it
allocated for the Program's memory plan (``pynq.allocate``; the buffer is reused across
frames), flushes only that region, writes the CSRs (DDR base, program offset and
length), pulses ``start`` and waits for ``done`` with a timeout (interrupt where the
overlay wires one and asyncio can be used, polling otherwise), reads the status (an
error code raises :class:`AcceleratorError` naming the failing descriptor's layer) and
the counters, invalidates and reads the output regions.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pynq

from convforge.errors import ConvforgeError
from convforge.hw.config import EngineConfig
from convforge.hw.ip import ACCEL_VLNV
from convforge.hw.layouts import csr

#: Default time a frame may take before :meth:`ConvforgeAccel.run` gives up (seconds).
#: A full 416x416 frame takes milliseconds on the board and ~seconds in the emulator.
DEFAULT_TIMEOUT_S = 60.0

#: Polling interval while waiting for ``done`` (seconds): short enough to add < 1 % to a
#: 30 fps frame, long enough not to saturate the AXI-Lite port of a board.
POLL_INTERVAL_S = 0.0002


#: Per-unit busy counters: unit name -> the counter's ``_LO`` register (hw/layouts/csr.py).
BUSY_COUNTERS = {"pointwise": "BUSY_PW_LO", "depthwise": "BUSY_DW_LO", "pool": "BUSY_POOL_LO",
                 "add": "BUSY_ADD_LO", "dma": "BUSY_DMA_LO"}  # fmt: skip


def _field(reg: str, name: str, word: int) -> int:
    return csr.REGISTERS[reg].field(name).get(word)


def _mask(reg: str, *names: str) -> int:
    return sum(csr.REGISTERS[reg].field(n).mask for n in names)


def _error_name(code: int) -> str:
    try:
        return csr.ErrorCode(code).name
    except ValueError:
        return "UNKNOWN"


def _error_text(code: int) -> str:
    try:
        return csr.ERROR_CODE_TEXT[csr.ErrorCode(code)]
    except ValueError:
        return f"error code {code} is not in this driver's register map (a newer bitstream?)"


def tensor_extent(place) -> slice:
    """The byte range of the buffer holding a tensor (a ``TensorPlace``): the smallest
    slice covering every piece's view, so a sync moves only that tensor's bytes."""
    _, h, w = place.shape
    lo, hi = None, 0
    for p in place.pieces:
        rows, cols = (-(-h // 2), -(-w // 2)) if p.upsample else (h, w)
        first = p.offset + p.channel_offset
        last = first + (rows - 1) * p.row_stride + (cols - 1) * p.pixel_stride + (p.count - 1) * p.channel_stride
        lo = first if lo is None else min(lo, first)
        hi = max(hi, last + 1)
    return slice(lo or 0, hi)


class AcceleratorError(ConvforgeError):
    """The accelerator stopped a frame with an error code, never finished it (timeout),
    or its identity / configuration does not match the Program."""


@dataclass
class Frame:
    """One frame's results.

    Attributes:
        outputs: Program output name -> integer array as the integer reference lays it
            out (``(C, H, W)``).
        counters: cycles, per-unit busy cycles and percentages, DDR bytes read/written
            (from the CSR counters) and the frame rate they imply at the engine clock.
        seconds: host wall time of the frame (write input, run, read outputs), seconds.
        wait: how completion was awaited: ``"poll"`` or ``"interrupt"``.
    """

    outputs: dict[str, np.ndarray]
    counters: dict[str, float | int | dict] = field(default_factory=dict)
    seconds: float = 0.0
    wait: str = "poll"


class ConvforgeAccel(pynq.DefaultIP):
    """Driver of one convforge accelerator instance (a ``pynq.DefaultIP``).

    Created by ``pynq.Overlay`` for every IP of type :data:`ACCEL_VLNV`; ``description``
    is pynq's IP description (``phys_addr``, ``addr_range``, interrupts).
    """

    bindto = [ACCEL_VLNV]

    def __init__(self, description: dict) -> None:
        super().__init__(description)
        self._csr = csr
        self.program = None
        self._buffer = None
        self._checked = False

    # ------------------------------------------------------------------ registers
    def _rd(self, offset: int) -> int:
        return int(self.mmio.read(offset))

    def _wr(self, offset: int, value: int) -> None:
        self.mmio.write(offset, int(value) & 0xFFFF_FFFF)

    def _rd64(self, lo_offset: int) -> int:
        # Reading _LO latches _HI (register map): one consistent 64-bit snapshot.
        lo = self._rd(lo_offset)
        return (self._rd(lo_offset + 4) << 32) | lo

    def register_state(self) -> str:
        """The control/status registers as one line, for error messages and logs."""
        c = self._csr
        status = self._rd(c.ADDR_STATUS)
        return (
            f"STATUS={status:#010x} (busy={_field('STATUS', 'busy', status)} done={_field('STATUS', 'done', status)} "
            f"error_code={_field('STATUS', 'error_code', status)}), ERR_INDEX={self._rd(c.ADDR_ERR_INDEX)}, "
            f"CTRL={self._rd(c.ADDR_CTRL):#x}, IRQ_STATUS={self._rd(c.ADDR_IRQ_STATUS):#x}, "
            f"PROG_OFFSET={self._rd(c.ADDR_PROG_OFFSET):#x}, PROG_LENGTH={self._rd(c.ADDR_PROG_LENGTH)}, "
            f"CYCLES={self._rd64(c.ADDR_CYCLES_LO)}"
        )

    def engine_config(self) -> EngineConfig:
        """The EngineConfig the hardware reports in its CFG registers.

        Raises:
            AcceleratorError: the ID register does not read the convforge magic number or
                the register map's major version differs from this driver's.
        """
        self.check_identity()
        c = self._csr
        count = self._rd(c.ADDR_CFG_COUNT)
        words = [self._rd(c.ADDR_CFG + 4 * i) for i in range(count)]
        return EngineConfig.from_csr_words(words, source=f"{self._source()} CFG registers")

    def check_identity(self) -> None:
        """Check ID and VERSION; AcceleratorError naming the register if they differ."""
        c = self._csr
        ident = self._rd(c.ADDR_ID)
        if ident != c.ID_MAGIC:
            raise AcceleratorError(
                f"{self._source()}: ID register reads {ident:#010x}, not convforge's {c.ID_MAGIC:#010x}; "
                "the overlay's IP at this address is not a convforge accelerator (check the bitstream)"
            )
        major = _field("VERSION", "major", self._rd(c.ADDR_VERSION))
        if major != c.VERSION_MAJOR:
            raise AcceleratorError(
                f"{self._source()}: register map major version {major}, this driver speaks {c.VERSION_MAJOR}; "
                "use the convforge release the bitstream was built with, or rebuild the bitstream"
            )

    def _source(self) -> str:
        return f"accelerator at {self.mmio.base_addr:#x}"

    # ------------------------------------------------------------------ program
    def load(self, program) -> None:
        """Load a Program (a :class:`convforge.sw.runtime.program.Program` or its file path).

        Checks that the hardware runs the EngineConfig the Program was compiled for,
        allocates one buffer for the whole memory plan (reused by every later frame),
        copies the memory image (descriptors, weights, requant tables) into it and flushes
        it to the device.

        Raises:
            ProgramFormatError: a corrupt Program file or one of another version.
            AcceleratorError: the Program was compiled for another EngineConfig (the
                message names every differing field) or the hardware's identity is wrong.
        """
        from convforge.sw.runtime.program import Program

        if not isinstance(program, Program):
            program = Program.load(Path(program))
        hw = self.engine_config()
        if hw != program.config:
            diffs = [
                f"{name}: hardware {getattr(hw, name)!r}, Program {getattr(program.config, name)!r}"
                for name in EngineConfig.csr_field_names()
                if getattr(hw, name) != getattr(program.config, name)
            ]
            raise AcceleratorError(
                f"the Program was compiled for another EngineConfig than the {self._source()} runs "
                f"({'; '.join(diffs)}); compile it again for this hardware "
                "(`convforge compile --config` with the board's EngineConfig)"
            )
        nbytes = int(program.buffer_bytes)
        if self._buffer is None or self._buffer.nbytes < nbytes:
            self._buffer = pynq.allocate(shape=(nbytes,), dtype=np.uint8)
        self._buffer[: program.image.size] = program.image
        self._buffer[program.image.size :] = 0
        self._buffer.sync_to_device()
        self.program = program
        self.reset()

    def reset(self) -> None:
        """Soft reset: abort any frame, clear status, counters and interrupt status."""
        c = self._csr
        self._wr(c.ADDR_CTRL, _mask("CTRL", "soft_reset"))

    # ------------------------------------------------------------------ frames
    def run(self, image: np.ndarray, timeout_s: float = DEFAULT_TIMEOUT_S, wait: str = "auto") -> Frame:
        """Run one frame on ``image`` and return the outputs and counters.

        Args:
            image: ``(H, W, 3)`` uint8 RGB at the Program's input size.
            timeout_s: seconds to wait for ``done``.
            wait: ``"poll"``, ``"interrupt"`` (the overlay must wire the ``irq`` pin) or
                ``"auto"`` (interrupt when wired and no asyncio loop is already running in
                this thread, e.g. outside Jupyter; polling otherwise). The choice is
                reported in :attr:`Frame.wait`.

        Raises:
            AcceleratorError: no Program loaded; the frame ended with an error code (the
                message names the failing descriptor's index and layer); or ``done`` did not
                rise within ``timeout_s`` (the message gives the register state).
            ShapeError: the image does not match the Program's input.
        """
        if self.program is None:
            raise AcceleratorError("no Program loaded; call load(<Program file>) first")
        c, prog = self._csr, self.program
        use_irq = self._use_interrupt(wait)
        t0 = time.perf_counter()
        prog.place_image(self._buffer, image)
        self._buffer[tensor_extent(prog.tensors[prog.input])].sync_to_device()
        base = int(self._buffer.device_address)
        self._wr(c.ADDR_BASE_ADDR_LO, base & 0xFFFF_FFFF)
        self._wr(c.ADDR_BASE_ADDR_HI, base >> 32)
        self._wr(c.ADDR_BUF_BYTES, prog.buffer_bytes)
        self._wr(c.ADDR_PROG_OFFSET, prog.program_offset)
        self._wr(c.ADDR_PROG_LENGTH, prog.n_descriptors)
        self._wr(c.ADDR_IRQ_STATUS, _mask("IRQ_STATUS", "done", "error"))  # write 1 to clear stale events
        self._wr(c.ADDR_CTRL, _mask("CTRL", "start", *(("irq_enable",) if use_irq else ())))
        if use_irq:
            self._wait_interrupt(timeout_s)
        status = self._wait_done(timeout_s, t0)
        code = _field("STATUS", "error_code", status)
        if code != c.ErrorCode.NONE:
            index = self._rd(c.ADDR_ERR_INDEX)
            layer = prog.descriptors[index].get("layer") if 0 <= index < len(prog.descriptors) else None
            state = self.register_state()
            self.reset()
            raise AcceleratorError(
                f"the accelerator stopped at descriptor {index} (layer {layer!r}) with error "
                f"{_error_name(code)} ({code}): {_error_text(code)}; registers: {state}"
            )
        counters = self.counters()
        outputs = {head: self.read_tensor(tensor) for head, tensor in prog.outputs.items()}
        return Frame(outputs, counters, time.perf_counter() - t0, "interrupt" if use_irq else "poll")

    def read_tensor(self, tensor: str) -> np.ndarray:
        """Any QGraph tensor of the last frame, read back through the Program's tensor map
        (invalidates its bytes first): int64 ``(C, H, W)``."""
        if self.program is None:
            raise AcceleratorError("no Program loaded; call load(<Program file>) first")
        if tensor not in self.program.tensors:
            raise AcceleratorError(f"the Program has no tensor {tensor!r} in its tensor map")
        if self.program.tensors[tensor].fused:
            raise AcceleratorError(
                f"tensor {tensor!r} is an intermediate of the fused chain {self.program.tensors[tensor].fused}: it "
                "stays in the on-chip scratchpad; compile with `convforge compile --fuse never` to read it back")
        self._buffer[tensor_extent(self.program.tensors[tensor])].sync_from_device()
        return self.program.read(self._buffer, tensor)

    def _use_interrupt(self, wait: str) -> bool:
        if wait not in ("auto", "poll", "interrupt"):
            raise AcceleratorError(f"wait={wait!r}: choose auto, poll or interrupt")
        wired = getattr(self, "irq", None) is not None
        if wait == "interrupt" and not wired:
            raise AcceleratorError(
                f"wait='interrupt' but the overlay wires no interrupt to the {self._source()} (irq pin); "
                "use wait='poll' or connect irq to the PS interrupt controller in the block design"
            )
        if wait == "poll" or not wired:
            return False
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return True
        return wait == "interrupt"

    def _wait_interrupt(self, timeout_s: float) -> None:
        try:
            asyncio.run(asyncio.wait_for(self.irq.wait(), timeout_s))
        except TimeoutError:
            pass  # _wait_done reports the register state

    def _wait_done(self, timeout_s: float, t0: float) -> int:
        c = self._csr
        deadline = t0 + timeout_s
        while True:
            status = self._rd(c.ADDR_STATUS)
            if _field("STATUS", "done", status):
                return status
            if time.perf_counter() > deadline:
                state = self.register_state()
                self.reset()
                raise AcceleratorError(
                    f"the {self._source()} did not finish the frame within {timeout_s:g} s (done never rose); "
                    f"registers: {state}. The accelerator was soft-reset; check the bitstream and the Program, "
                    "or pass a longer timeout_s"
                )
            time.sleep(POLL_INTERVAL_S)

    def counters(self) -> dict:
        """The counters of the last frame: cycles, per-unit busy cycles and % of the frame,
        DDR bytes read and written, and the FPS the cycles give at the engine clock."""
        c = self._csr
        cycles = self._rd64(c.ADDR_CYCLES_LO)
        busy = {unit: self._rd64(c.REGISTERS[lo].offset) for unit, lo in BUSY_COUNTERS.items()}
        clock_mhz = self.program.config.clock_mhz if self.program is not None else None
        return {
            "cycles": cycles,
            "busy_cycles": busy,
            "busy_percent": {u: (100.0 * b / cycles if cycles else 0.0) for u, b in busy.items()},
            "ddr_read_bytes": self._rd64(c.ADDR_DMA_RD_BYTES_LO),
            "ddr_write_bytes": self._rd64(c.ADDR_DMA_WR_BYTES_LO),
            "fps_at_clock": (clock_mhz * 1e6 / cycles) if cycles and clock_mhz else None,
        }


# The environment variable selects the simulated device when the driver is imported,
# before any pynq.Overlay is created; without it pynq's own devices are untouched.
if os.environ.get("CONVFORGE_SIMDEVICE", "").strip():
    from convforge.sw.runtime.simdevice import enable_from_env

    enable_from_env()
