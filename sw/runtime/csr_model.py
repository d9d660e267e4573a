"""Behavioural model of the accelerator's CSR block, for the simulated PYNQ device.

Built from the generated register module :mod:`convforge.hw.layouts.csr` (the one the
RTL and the driver use), generically over its registers and field access types: ``const``
fields read their reset value, ``rw`` fields hold what was written, ``w1p`` fields act
on a written 1 and read 0, ``w1c`` fields clear on a written 1, ``ro`` fields are set by
the model; reading a 64-bit counter's ``_LO`` word latches its ``_HI`` word. An access to
an unmapped address (the RTL answers SLVERR) raises :class:`SimulationError`.

Writing ``CTRL.start`` runs a frame on the backend (see :class:`EmulatorBackend`): STATUS
goes busy; when the backend returns, the counters take its figures and STATUS / ERR_INDEX /
IRQ_STATUS say how the frame ended, exactly as the register map describes. A backend that
returns ``None`` never finishes (``busy`` stays 1, ``done`` never rises).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from convforge.errors import SimulationError
from convforge.hw.config import EngineConfig
from convforge.hw.layouts import csr
from convforge.sw.runtime.driver import BUSY_COUNTERS

#: Bytes of address space the CSR block decodes (the IP's address range in the overlay).
CSR_RANGE = csr.ADDRESS_SPAN



@dataclass
class FrameResult:
    """What a backend reports for one frame (all figures of the hardware's counters).

    Attributes:
        cycles: clock cycles of the frame.
        busy_cycles: unit (keys of :data:`BUSY_COUNTERS`) -> cycles busy.
        ddr_read_bytes, ddr_write_bytes: bytes moved over the AXI master.
        error_code: :class:`convforge.hw.layouts.csr.ErrorCode` value (0: none).
        error_index: index of the failing descriptor (when ``error_code`` is not 0).
    """

    cycles: int = 0
    busy_cycles: dict[str, int] = field(default_factory=dict)
    ddr_read_bytes: int = 0
    ddr_write_bytes: int = 0
    error_code: int = 0
    error_index: int = 0


class CsrModel:
    """The CSR block of one accelerator built for ``engine``.

    Args:
        engine: the EngineConfig the hardware reports (ID / CFG registers).
        backend: runs a frame: ``backend.run(memory, program_offset, n_descriptors)`` with
            ``memory`` the device-side bytes from the DDR base address on; returns a
            :class:`FrameResult`, or None for a frame that never ends.
        memory: the device's :class:`~convforge.sw.runtime.simdevice.SimMemory`.
    """

    def __init__(self, engine: EngineConfig, backend, memory) -> None:
        self.engine = engine
        self.backend = backend
        self.memory = memory
        self._cfg = [int(w) for w in engine.to_csr_words()]
        # The CFG array is as long as this engine's encoding (the rdl's CFG_WORDS parameter).
        counts = {r.name: (len(self._cfg) if r.name == "CFG" else r.count) for r in csr.REGISTERS.values()}
        self._by_offset = {r.offset + i * r.stride: (r, i)
                           for r in csr.REGISTERS.values() for i in range(counts[r.name])}  # fmt: skip
        self._latched: dict[int, int] = {}
        # 64-bit counters: a read of the _LO word latches the _HI word (register map).
        self._counter_lo = {r.offset for r in csr.REGISTERS.values()
                            if r.name.endswith("_LO") and all(f.access == "ro" for f in r.fields)}  # fmt: skip
        self.soft_reset()
        self.words[csr.ADDR_CTRL] = 0

    # ------------------------------------------------------------------ state
    def soft_reset(self) -> None:
        """CTRL.soft_reset: status, counters and IRQ_STATUS clear (CTRL.irq_enable, base
        and program registers keep their values)."""
        keep = {csr.ADDR_CTRL, csr.ADDR_BASE_ADDR_LO, csr.ADDR_BASE_ADDR_HI, csr.ADDR_BUF_BYTES, csr.ADDR_PROG_OFFSET,
                csr.ADDR_PROG_LENGTH}
        old = getattr(self, "words", {})
        self.words = {off: (old.get(off, 0) if off in keep else reg.readable_reset) for off, (reg, _) in
                      self._by_offset.items()}  # fmt: skip
        self._latched.clear()

    def _set_field(self, reg_name: str, field_name: str, value: int) -> None:
        reg = csr.REGISTERS[reg_name]
        self.words[reg.offset] = reg.field(field_name).put(self.words[reg.offset], value)

    def _set64(self, lo_name: str, value: int) -> None:
        lo = csr.REGISTERS[lo_name].offset
        self.words[lo] = value & 0xFFFF_FFFF
        self.words[lo + 4] = (value >> 32) & 0xFFFF_FFFF

    # ------------------------------------------------------------------ bus
    def _lookup(self, offset: int):
        if offset not in self._by_offset:
            raise SimulationError(
                f"CSR access at offset {offset:#x}: no register there (the CSR block answers SLVERR); "
                "see docs/registers.md for the register map"
            )
        return self._by_offset[offset]

    def read(self, offset: int) -> int:
        """The 32-bit word at byte ``offset``."""
        reg, index = self._lookup(offset)
        if reg.name == "CFG":
            return self._cfg[index] if index < len(self._cfg) else 0
        if reg.name == "CFG_COUNT":
            return len(self._cfg)
        if offset - 4 in self._counter_lo:
            return self._latched.get(offset, 0)
        word = self.words[offset]
        if offset in self._counter_lo:
            self._latched[offset + 4] = self.words[offset + 4]
        return sum(f.get(word) << f.lsb for f in reg.fields if f.access != "w1p")

    def write(self, offset: int, value: int) -> None:
        """A 32-bit write at byte ``offset``; read-only fields ignore it (OKAY)."""
        reg, _ = self._lookup(offset)
        word = self.words[offset]
        pulses = set()
        for f in reg.fields:
            v = f.get(value)
            if f.access == "rw":
                word = f.put(word, v)
            elif f.access == "w1c" and v:
                word = f.put(word, 0)
            elif f.access == "w1p" and v:
                pulses.add(f.name)
        self.words[offset] = word
        if reg.name == "CTRL":
            if "soft_reset" in pulses:
                self.soft_reset()
            if "start" in pulses:
                self.start()

    # ------------------------------------------------------------------ a frame
    def start(self) -> None:
        """CTRL.start: clear status and counters (IRQ_STATUS is sticky until written 1), go
        busy, run the backend, report."""
        irq_status = self.words[csr.ADDR_IRQ_STATUS]
        self.soft_reset()
        self.words[csr.ADDR_IRQ_STATUS] = irq_status
        self._set_field("STATUS", "busy", 1)
        base = (self.words[csr.ADDR_BASE_ADDR_HI] << 32) | self.words[csr.ADDR_BASE_ADDR_LO]
        try:
            data, offset = self.memory.device_bytes(base)
        except SimulationError:
            # The controller's first descriptor fetch would answer DECERR: no DDR there.
            self._finish(FrameResult(error_code=int(csr.ErrorCode.AXI_DECERR), error_index=0))
            return
        # BUF_BYTES bounds the buffer as in the RTL: a byte at or past BASE_ADDR + BUF_BYTES is
        # outside the program's buffer (ADDRESS_RANGE), so a driver that forgets it fails here too.
        buf_bytes = self.words[csr.ADDR_BUF_BYTES]
        result = self.backend.run(data[offset:offset + buf_bytes], self.words[csr.ADDR_PROG_OFFSET],
                                  self.words[csr.ADDR_PROG_LENGTH])
        if result is not None:
            self._finish(result)

    def _finish(self, r: FrameResult) -> None:
        self._set64("CYCLES_LO", r.cycles)
        for unit, lo in BUSY_COUNTERS.items():
            self._set64(lo, r.busy_cycles.get(unit, 0))
        self._set64("DMA_RD_BYTES_LO", r.ddr_read_bytes)
        self._set64("DMA_WR_BYTES_LO", r.ddr_write_bytes)
        self._set_field("STATUS", "busy", 0)
        self._set_field("STATUS", "done", 1)
        self._set_field("STATUS", "error", int(r.error_code != 0))
        self._set_field("STATUS", "error_code", int(r.error_code))
        self._set_field("ERR_INDEX", "index", int(r.error_index) if r.error_code else 0)
        self._set_field("IRQ_STATUS", "done", 1)
        self._set_field("IRQ_STATUS", "error", int(r.error_code != 0))

    @property
    def irq(self) -> bool:
        """The irq output: CTRL.irq_enable and any IRQ_STATUS bit."""
        enabled = csr.REGISTERS["CTRL"].field("irq_enable").get(self.words[csr.ADDR_CTRL])
        return bool(enabled and self.words[csr.ADDR_IRQ_STATUS])


#: Cycle-model unit name -> busy counter (unit keys of the driver's BUSY_COUNTERS).
MODEL_UNITS = {"pe_array": "pointwise", "depthwise": "depthwise", "pool": "pool", "add": "add"}


class EmulatorBackend:
    """Runs a frame with the NumPy emulator of the Program (``emu`` backend).

    Counters come from the emulator's cycle model (:mod:`convforge.sw.runtime.cycles`,
    calibrated to the RTL engine), per executed descriptor: ``cycles`` add to the frame,
    ``cycles - fetch_cycles`` to the busy counter of the descriptor's unit (the RTL counts a
    unit busy while its descriptor executes), ``dma_cycles`` to the DMA busy counter, and
    ``ddr_read_bytes`` / ``ddr_write_bytes`` to the DMA byte counters (whole read beats,
    strobed write bytes: what the RTL's DMA_RD_BYTES / DMA_WR_BYTES count).
    """

    def __init__(self, engine: EngineConfig, ddr_gbps: float | None = None) -> None:
        from convforge.sw.runtime.emulator import Emulator

        self.emulator = Emulator(engine) if ddr_gbps is None else Emulator(engine, ddr_gbps)

    def run(self, memory: np.ndarray, program_offset: int, n_descriptors: int) -> FrameResult:
        from convforge.errors import EmulatorFault

        try:
            stats = self.emulator.run(memory, program_offset, n_descriptors)
        except EmulatorFault as fault:
            # The emulator's fault codes are the register map's ErrorCode (one definition).
            return FrameResult(error_code=int(csr.ErrorCode(fault.code)), error_index=int(fault.index))
        busy = dict.fromkeys(BUSY_COUNTERS, 0)
        for fig in stats.per_descriptor:
            if fig["unit"] in MODEL_UNITS:
                busy[MODEL_UNITS[fig["unit"]]] += int(fig["cycles"]) - int(fig["fetch_cycles"])
            busy["dma"] += int(fig["dma_cycles"])
        read = sum(int(f["ddr_read_bytes"]) for f in stats.per_descriptor)
        written = sum(int(f["ddr_write_bytes"]) for f in stats.per_descriptor)
        return FrameResult(cycles=int(stats.cycles), busy_cycles=busy, ddr_read_bytes=read,
                           ddr_write_bytes=written)  # fmt: skip
