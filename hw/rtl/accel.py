"""The accelerator top: the CSR block, the engine (controller, DMA, units) and the interrupt.

One ``start`` (CTRL.start over ``s_axil``) runs the whole Program at ``BASE_ADDR +
PROG_OFFSET`` (``PROG_LENGTH`` descriptors, operands within ``BUF_BYTES``) through
``m_axi``; STATUS shows busy, done, the error code and ERR_INDEX the failing descriptor;
``irq`` follows IRQ_STATUS when CTRL.irq_enable is set (docs/registers.md). What the engine
executes and which opcodes are built: :mod:`convforge.hw.rtl.controller`.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from convforge.hw.config import EngineConfig
from convforge.hw.rtl.axi import axi4_signature, axi4lite_signature
from convforge.hw.rtl.controller import WATCHDOG_CYCLES, Engine
from convforge.hw.rtl.csr import ADDR_BITS, CsrBlock


class Accelerator(wiring.Component):
    """The whole accelerator as one component.

    Parameters:
        cfg: the EngineConfig (``axi_data_bits`` sizes ``m_axi``; its CSR words are the CFG
            registers; its tag is checked against every descriptor).
        addr_bits: ``m_axi`` address width (32 on Zynq-7000 HP ports; up to 49 on ZynqMP).
        max_burst, max_outstanding, watchdog_cycles: see :class:`Engine`.

    Ports:
        s_axil: In(:func:`axi4lite_signature` (9, 32)) -- the CPU's CSR port.
        m_axi: Out(:func:`axi4_signature` (addr_bits, axi_data_bits)) -- DDR.
        irq: Out(1) -- level interrupt.
    """

    def __init__(self, cfg: EngineConfig, addr_bits: int = 32, max_burst: int = 16,
                 max_outstanding: int = 4, watchdog_cycles: int = WATCHDOG_CYCLES) -> None:
        self.cfg = cfg
        self._engine_args = (addr_bits, max_burst, max_outstanding, watchdog_cycles)
        super().__init__({
            "s_axil": In(axi4lite_signature(ADDR_BITS, 32)),
            "m_axi": Out(axi4_signature(addr_bits, cfg.axi_data_bits)),
            "irq": Out(1),
        })

    def elaborate(self, platform) -> Module:  # noqa: ARG002
        m = Module()
        m.submodules.csr = csr = CsrBlock(self.cfg)
        m.submodules.engine = engine = Engine(self.cfg, *self._engine_args)
        wiring.connect(m, wiring.flipped(self.s_axil), csr.s_axil)
        wiring.connect(m, wiring.flipped(self.m_axi), engine.m_axi)
        m.d.comb += [
            self.irq.eq(csr.irq),
            engine.start.eq(csr.start), engine.soft_reset.eq(csr.soft_reset),
            engine.base_addr.eq(csr.base_addr), engine.prog_offset.eq(csr.prog_offset),
            engine.prog_length.eq(csr.prog_length), engine.buf_bytes.eq(csr.buf_bytes),
            csr.busy.eq(engine.busy), csr.done.eq(engine.done),
            csr.error_code.eq(engine.error_code), csr.error_index.eq(engine.error_index),
            csr.unit_busy.eq(engine.unit_busy),
            csr.dma_rd_bytes.eq(engine.dma_rd_bytes), csr.dma_wr_bytes.eq(engine.dma_wr_bytes),
        ]
        return m
