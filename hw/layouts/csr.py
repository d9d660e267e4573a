# ruff: noqa: E501
"""convforge CSR register map: offsets, fields and error codes.

GENERATED from hw/regmap/convforge.rdl by ``python -m convforge.hw.regmap``; do not edit
(tests/hw/test_regmap.py fails when this file differs from what the rdl generates).
Imports nothing outside the standard library, so the driver uses it on a board.

Offsets are bytes from the CSR block's base; every register is 32 bits. Field ``access``:
``const`` (read-only constant), ``ro`` (read-only, hardware-driven), ``rw``, ``w1p``
(write 1 for a one-cycle pulse, reads 0), ``w1c`` (sticky, write 1 to clear).
Unmapped addresses answer SLVERR (reads return 0); writes to read-only registers are
ignored with OKAY.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """A bit field ``[lsb + width - 1 : lsb]`` of a register."""

    name: str
    lsb: int
    width: int
    access: str
    reset: int
    desc: str

    @property
    def mask(self) -> int:
        """The field's bits in the register word."""
        return ((1 << self.width) - 1) << self.lsb

    def get(self, word: int) -> int:
        """The field's value in ``word``."""
        return (word >> self.lsb) & ((1 << self.width) - 1)

    def put(self, word: int, value: int) -> int:
        """``word`` with the field set to ``value`` (ValueError if it does not fit)."""
        if not 0 <= value < 1 << self.width:
            raise ValueError(f"field {self.name}: {value} does not fit {self.width} bits")
        return (word & ~self.mask) | (value << self.lsb)


@dataclass(frozen=True)
class Register:
    """A register, or an array of ``count`` registers ``stride`` bytes apart."""

    name: str
    offset: int
    desc: str
    fields: tuple[Field, ...]
    count: int = 1
    stride: int = 4

    def field(self, name: str) -> Field:
        """The field called ``name`` (KeyError names the register's fields)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}; fields: {[f.name for f in self.fields]}")

    @property
    def readable_reset(self) -> int:
        """The word a read returns after reset (``w1p`` fields read 0)."""
        return sum(f.reset << f.lsb for f in self.fields if f.access != "w1p")


class ErrorCode(enum.IntEnum):
    """``error_code_e`` of the rdl (STATUS.error_code)."""

    NONE = 0
    BAD_OPCODE = 1
    BAD_DESCRIPTOR = 2
    ADDRESS_RANGE = 3
    CONFIG_MISMATCH = 4
    NO_END = 5
    AXI_SLVERR = 6
    AXI_DECERR = 7
    TIMEOUT = 8


#: Meaning of each :class:`ErrorCode` value.
ERROR_CODE_TEXT: dict[ErrorCode, str] = {
    ErrorCode.NONE: 'No error.',
    ErrorCode.BAD_OPCODE: "A descriptor's opcode is not one this engine executes (unknown, or its unit is not built).",
    ErrorCode.BAD_DESCRIPTOR: 'A descriptor field is out of range (channels, kernel, stride, shift, view flags).',
    ErrorCode.ADDRESS_RANGE: "An operand, weight or table address lies outside the Program's buffer.",
    ErrorCode.CONFIG_MISMATCH: "The Program was compiled for another EngineConfig (its config tag differs from this engine's).",
    ErrorCode.NO_END: 'The Program has no END descriptor within PROG_LENGTH descriptors.',
    ErrorCode.AXI_SLVERR: 'An AXI read or write (DMA or descriptor fetch) answered SLVERR.',
    ErrorCode.AXI_DECERR: 'An AXI read or write (DMA or descriptor fetch) answered DECERR.',
    ErrorCode.TIMEOUT: 'The watchdog expired: a unit or the AXI bus made no progress.',
}

#: ID register value.
ID_MAGIC = 0x434E5646
VERSION_MAJOR = 1
VERSION_MINOR = 1
#: Bytes of address space the CSR block decodes.
ADDRESS_SPAN = 0x200
#: EngineConfig field names in CFG word order; the last CFG word is the hash.
CFG_FIELDS: tuple[str, ...] = (
    'pe_ci',
    'pe_co',
    'dw_lanes',
    'act_bits',
    'w_bits',
    'first_w_bits',
    'acc_bits',
    'bias_bits',
    'm_bits',
    's_bits',
    'line_width',
    'd_max',
    'frac_bits',
    'offset_range',
    'dw_modes',
    'axi_data_bits',
    'clock_mhz',
    'weight_depth',
    'max_channels',
    'act_buffer_bytes',
    'pool_k_max',
    'pool_s_max',
    'pool_block_rows',
    'fuse_buffer_bytes',
)
CFG_WORDS = 25

#: Byte offset of every register (of the first word of an array).
ADDR_ID              = 0x000
ADDR_VERSION         = 0x004
ADDR_CTRL            = 0x008
ADDR_STATUS          = 0x00C
ADDR_ERR_INDEX       = 0x010
ADDR_IRQ_STATUS      = 0x014
ADDR_BUF_BYTES       = 0x018
ADDR_BASE_ADDR_LO    = 0x020
ADDR_BASE_ADDR_HI    = 0x024
ADDR_PROG_OFFSET     = 0x028
ADDR_PROG_LENGTH     = 0x02C
ADDR_CYCLES_LO       = 0x030
ADDR_CYCLES_HI       = 0x034
ADDR_BUSY_PW_LO      = 0x040
ADDR_BUSY_PW_HI      = 0x044
ADDR_BUSY_DW_LO      = 0x048
ADDR_BUSY_DW_HI      = 0x04C
ADDR_BUSY_POOL_LO    = 0x050
ADDR_BUSY_POOL_HI    = 0x054
ADDR_BUSY_ADD_LO     = 0x058
ADDR_BUSY_ADD_HI     = 0x05C
ADDR_BUSY_DMA_LO     = 0x060
ADDR_BUSY_DMA_HI     = 0x064
ADDR_DMA_RD_BYTES_LO = 0x070
ADDR_DMA_RD_BYTES_HI = 0x074
ADDR_DMA_WR_BYTES_LO = 0x078
ADDR_DMA_WR_BYTES_HI = 0x07C
ADDR_CFG_COUNT       = 0x0FC
ADDR_CFG             = 0x100

#: Every register, by name, in address order.
REGISTERS: dict[str, Register] = {
    'ID': Register('ID', 0x000, "Identification. Constant 0x434E5646 (ASCII 'CNVF').", (
        Field('id', 0, 32, 'const', 0x434E5646, 'Magic number.'),
    )),
    'VERSION': Register('VERSION', 0x004, 'Register map version. Bumped when the register map changes incompatibly (major) or gains registers (minor).', (
        Field('minor', 0, 16, 'const', 0x1, 'Minor version.'),
        Field('major', 16, 16, 'const', 0x1, 'Major version.'),
    )),
    'CTRL': Register('CTRL', 0x008, 'Control.', (
        Field('start', 0, 1, 'w1p', 0x0, 'Write 1: start the frame (one-cycle pulse to the controller). Reads 0.'),
        Field('soft_reset', 1, 1, 'w1p', 0x0, 'Write 1: soft reset (one-cycle pulse): the controller aborts and idles; status, counters and IRQ_STATUS clear. Reads 0.'),
        Field('irq_enable', 2, 1, 'rw', 0x0, '1: drive the irq output while an IRQ_STATUS bit is set.'),
    )),
    'STATUS': Register('STATUS', 0x00C, 'Status.', (
        Field('busy', 0, 1, 'ro', 0x0, '1 while the controller runs a frame.'),
        Field('done', 1, 1, 'ro', 0x0, '1 once the frame ended (normally or with an error), until the next START or SOFT_RESET.'),
        Field('error', 2, 1, 'ro', 0x0, '1 when ERROR_CODE is not NONE.'),
        Field('error_code', 8, 8, 'ro', 0x0, 'Why the frame stopped (error_code_e); NONE after a normal end.'),
    )),
    'ERR_INDEX': Register('ERR_INDEX', 0x010, 'Failing descriptor. Index (0-based, into the Program) of the descriptor that raised ERROR_CODE.', (
        Field('index', 0, 32, 'ro', 0x0, 'Descriptor index.'),
    )),
    'IRQ_STATUS': Register('IRQ_STATUS', 0x014, 'Interrupt status. Sticky event bits; write 1 to clear. irq = CTRL.irq_enable & (done | error).', (
        Field('done', 0, 1, 'w1c', 0x0, 'Set when a frame ends (STATUS.done rises).'),
        Field('error', 1, 1, 'w1c', 0x0, 'Set when a frame ends with an error.'),
    )),
    'BUF_BYTES': Register('BUF_BYTES', 0x018, "Buffer size. Bytes of the Program's buffer at BASE_ADDR (Program.buffer_bytes). Every descriptor, table and operand byte must lie below BASE_ADDR + BUF_BYTES, else the frame stops with ADDRESS_RANGE.", (
        Field('bytes', 0, 32, 'rw', 0x0, 'Bytes.'),
    )),
    'BASE_ADDR_LO': Register('BASE_ADDR_LO', 0x020, 'DDR base address, low word. Byte address of the one buffer the driver allocates; every descriptor address is a byte offset from it.', (
        Field('addr', 0, 32, 'rw', 0x0, 'Bits 31:0.'),
    )),
    'BASE_ADDR_HI': Register('BASE_ADDR_HI', 0x024, 'DDR base address, high word.', (
        Field('addr', 0, 32, 'rw', 0x0, 'Bits 63:32.'),
    )),
    'PROG_OFFSET': Register('PROG_OFFSET', 0x028, 'Program offset. Byte offset of the first descriptor from BASE_ADDR.', (
        Field('offset', 0, 32, 'rw', 0x0, 'Bytes.'),
    )),
    'PROG_LENGTH': Register('PROG_LENGTH', 0x02C, 'Program length. Number of descriptors to execute.', (
        Field('count', 0, 32, 'rw', 0x0, 'Descriptors.'),
    )),
    'CYCLES_LO': Register('CYCLES_LO', 0x030, 'Cycle counter, low word. Clock cycles while STATUS.busy.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 31:0 (reading this register latches bits 63:32).'),
    )),
    'CYCLES_HI': Register('CYCLES_HI', 0x034, 'Cycle counter, high word.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 63:32 as latched by the last read of the _LO register.'),
    )),
    'BUSY_PW_LO': Register('BUSY_PW_LO', 0x040, 'Cycles the pointwise PE array was busy.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 31:0 (reading this register latches bits 63:32).'),
    )),
    'BUSY_PW_HI': Register('BUSY_PW_HI', 0x044, '.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 63:32 as latched by the last read of the _LO register.'),
    )),
    'BUSY_DW_LO': Register('BUSY_DW_LO', 0x048, 'Cycles the depthwise unit was busy.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 31:0 (reading this register latches bits 63:32).'),
    )),
    'BUSY_DW_HI': Register('BUSY_DW_HI', 0x04C, '.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 63:32 as latched by the last read of the _LO register.'),
    )),
    'BUSY_POOL_LO': Register('BUSY_POOL_LO', 0x050, 'Cycles the max-pool unit was busy.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 31:0 (reading this register latches bits 63:32).'),
    )),
    'BUSY_POOL_HI': Register('BUSY_POOL_HI', 0x054, '.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 63:32 as latched by the last read of the _LO register.'),
    )),
    'BUSY_ADD_LO': Register('BUSY_ADD_LO', 0x058, 'Cycles the residual-add unit was busy.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 31:0 (reading this register latches bits 63:32).'),
    )),
    'BUSY_ADD_HI': Register('BUSY_ADD_HI', 0x05C, '.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 63:32 as latched by the last read of the _LO register.'),
    )),
    'BUSY_DMA_LO': Register('BUSY_DMA_LO', 0x060, 'Cycles the DMA had a transfer in flight.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 31:0 (reading this register latches bits 63:32).'),
    )),
    'BUSY_DMA_HI': Register('BUSY_DMA_HI', 0x064, '.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 63:32 as latched by the last read of the _LO register.'),
    )),
    'DMA_RD_BYTES_LO': Register('DMA_RD_BYTES_LO', 0x070, 'Bytes the DMA and descriptor fetch read from DDR.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 31:0 (reading this register latches bits 63:32).'),
    )),
    'DMA_RD_BYTES_HI': Register('DMA_RD_BYTES_HI', 0x074, '.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 63:32 as latched by the last read of the _LO register.'),
    )),
    'DMA_WR_BYTES_LO': Register('DMA_WR_BYTES_LO', 0x078, 'Bytes the DMA wrote to DDR.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 31:0 (reading this register latches bits 63:32).'),
    )),
    'DMA_WR_BYTES_HI': Register('DMA_WR_BYTES_HI', 0x07C, '.', (
        Field('value', 0, 32, 'ro', 0x0, 'Bits 63:32 as latched by the last read of the _LO register.'),
    )),
    'CFG_COUNT': Register('CFG_COUNT', 0x0FC, 'EngineConfig word count. Number of CFG words (EngineConfig fields + 1 hash word).', (
        Field('count', 0, 32, 'const', 0x19, 'Words.'),
    )),
    'CFG': Register('CFG', 0x100, 'EngineConfig word. EngineConfig.to_csr_words(): one word per field (dataclass order), the last word a CRC-32 of names and values.', (
        Field('value', 0, 32, 'ro', 0x0, 'Encoded field value (ints as is, floats in thousandths, choice sets as bit masks).'),
    ), 25, 4),
}
