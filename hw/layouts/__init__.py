"""Every packed word of the accelerator, as ``amaranth.lib.data`` layouts, defined once.

``program`` holds the Program's words (descriptor, operand view, weight tiles, requant
and depthwise parameter words, opcodes, fault codes). Pack and unpack them with
:mod:`convforge.hw.packing`.
"""

from convforge.hw.layouts.program import (
    ADDR_BITS,
    DESCRIPTOR_BYTES,
    DIM_BITS,
    DW_OPCODES,
    PE_OPCODES,
    TABLE_ALIGN,
    Fault,
    Opcode,
    config_tag,
    descriptor_layout,
    dw_channel_word_layout,
    requant_word_layout,
    view_layout,
    weight_tile_bytes,
    weight_tile_layout,
)

__all__ = [
    "ADDR_BITS",
    "DESCRIPTOR_BYTES",
    "DIM_BITS",
    "DW_OPCODES",
    "PE_OPCODES",
    "TABLE_ALIGN",
    "Fault",
    "Opcode",
    "config_tag",
    "descriptor_layout",
    "dw_channel_word_layout",
    "requant_word_layout",
    "view_layout",
    "weight_tile_bytes",
    "weight_tile_layout",
]
