"""The Program's words: descriptor, operand view, packed weights and requant parameters.

Every word the compiler writes and the accelerator, the emulator, the driver and the
testbenches read is an ``amaranth.lib.data`` layout defined **here**, once. Python code
packs and unpacks them with :func:`convforge.hw.packing.pack_array` /
:func:`~convforge.hw.packing.unpack_array`, which take every bit offset from the layout.

Memory image (all offsets are bytes relative to ONE base address, the start of the
buffer the driver allocates and writes to the ``program address`` CSR; the hardware adds
the base, so a Program is never patched)::

    [ descriptors (DESCRIPTOR_BYTES each, END last) | weights + requant tables | activations ]

Bytes are little-endian: bit ``b`` of a word is bit ``b % 8`` of byte ``b // 8``.

Operand view (:func:`view_layout`): the element ``(y, x, c)`` of an operand lives at byte

    offset + channel_offset + (y >> upsample) * row_stride + (x >> upsample) * pixel_stride
           + c * channel_stride

so concat and split are channel offsets, channel shuffle is a channel stride, and a
nearest 2x upsample is the ``upsample`` read flag (INTEGER_SPEC §4: data movement only).
"""

from __future__ import annotations

from amaranth import signed, unsigned
from amaranth.lib import data, enum

from convforge.hw.config import EngineConfig
from convforge.hw.layouts.csr import ErrorCode

#: Descriptor size in bytes: 8 beats of a 128-bit AXI bus (4 of 256, 16 of 64).
DESCRIPTOR_BYTES = 128
#: Width of every byte offset / stride that spans the buffer.
ADDR_BITS = 32
#: Width of image heights and widths, in pixels.
DIM_BITS = 16
#: Packed weight tiles and parameter tables start on this byte alignment (one 128-bit beat;
#: wider buses see it as an alignment of the table start only).
TABLE_ALIGN = 64


class Opcode(enum.IntEnum, shape=4):
    """What one descriptor does (one layer pass on one unit)."""

    #: End of the program: the controller raises ``done``.
    END = 0
    #: Pointwise (1x1) convolution on the PE array.
    CONV_PW = 1
    #: k x k dense convolution on the PE array: the DMA gathers each output pixel's
    #: ``k x k x C`` window (im2col in the address generator, tap order ``(i, j, c)``),
    #: so the array sees ``k*k*C`` input channels. The stem (3x3, stride 4, 3 channels).
    CONV_KXK = 2
    #: 3x3 depthwise convolution on the depthwise unit, fixed dilation.
    DW_REGULAR = 3
    #: Square deformable depthwise 3x3; ``src2`` is the dilation map (uint8, 1 channel).
    DW_SQUARE = 4
    #: Bilinear deformable depthwise 3x3; ``src2`` is the offset map (int8, 18 channels).
    DW_BILINEAR = 5
    #: k x k max pool (padded taps ignored).
    MAXPOOL = 6
    #: Residual add ``sat(rshift_round(a*Ma + b*Mb, S), lo, hi)``; ``src2`` is ``b``.
    ADD = 7
    #: DMA move of ``src`` to ``dst`` (a data movement the addressing could not fold).
    COPY = 8


#: Opcodes that read weights from ``weights_offset`` and requant words from ``requant_offset``.
PE_OPCODES = (Opcode.CONV_PW, Opcode.CONV_KXK)
#: Opcodes run by the depthwise unit (their weights and requant share one word per channel).
DW_OPCODES = (Opcode.DW_REGULAR, Opcode.DW_SQUARE, Opcode.DW_BILINEAR)


#: Error codes the controller reports in ``STATUS.error_code`` and the emulator raises: the
#: register map's ``error_code_e`` (``hw/regmap/convforge.rdl``), defined once there. NONE,
#: BAD_OPCODE, BAD_DESCRIPTOR, ADDRESS_RANGE, CONFIG_MISMATCH and NO_END come from a
#: descriptor (the emulator raises them too); AXI_SLVERR, AXI_DECERR and TIMEOUT only from
#: the bus (hardware only).
Fault = ErrorCode


def view_layout(config: EngineConfig) -> data.StructLayout:
    """One operand's DMA addressing (bytes; see the module docstring for the formula).

    Fields: ``offset`` (byte offset of pixel (0, 0) from the base), ``channel_offset``
    (bytes), ``channel_stride`` (bytes between consecutive channels), ``pixel_stride``
    (bytes between horizontal neighbours), ``row_stride`` (bytes between rows),
    ``upsample`` (1: nearest 2x upsample on read; never set on ``dst``), ``signed``
    (1: int8 elements, 0: uint8), ``onchip`` (1: the view addresses the on-chip fusion
    scratchpad of ``EngineConfig.fuse_buffer_bytes`` bytes -- offsets from its byte 0,
    no base address added -- instead of the DDR buffer).
    """
    ch_bits = max(8, config.max_channels.bit_length())
    return data.StructLayout({
        "offset": unsigned(ADDR_BITS),
        "channel_offset": unsigned(ch_bits),
        "channel_stride": unsigned(8),
        "pixel_stride": unsigned(ch_bits + 8),
        "row_stride": unsigned(ADDR_BITS),
        "upsample": unsigned(1),
        "signed": unsigned(1),
        "onchip": unsigned(1),
    })


def descriptor_layout(config: EngineConfig) -> data.StructLayout:
    """One layer pass on one unit, :data:`DESCRIPTOR_BYTES` bytes.

    Fields (units in brackets):

    * ``opcode`` (:class:`Opcode`), ``config_tag`` (16 bits of the EngineConfig's hash,
      :func:`config_tag`; the controller refuses a mismatch).
    * ``in_channels``, ``out_channels`` [channels]; ``in_height``, ``in_width``,
      ``out_height``, ``out_width`` [pixels] (``in_*`` are the logical, upsampled sizes).
    * ``kernel``, ``stride``, ``pad`` (top/left), ``dilation`` [pixels].
    * ``w_bits`` (weight width), ``lo``/``hi`` (output clamp, INTEGER_SPEC §3).
    * ``d_max`` (square deformable), ``frac_bits``/``offset_range`` (bilinear: F, R).
    * ``add_ma``, ``add_mb``, ``add_s`` (residual add multipliers and shift).
    * ``acc_bound_bits``: ``bit_length`` of the compiler's worst-case ``|acc + bias|``
      (INTEGER_SPEC §6); the engine's accumulator is at least this wide.
    * ``tile_rows`` [output rows per activation-buffer band].
    * ``band_top`` [rows] (DW_REGULAR / DW_SQUARE only, 0 elsewhere): the descriptor is one
      row band of a fused chain whose ``src`` starts mid-image; the input row read for
      output row ``oy`` at vertical tap offset ``t`` (``i*dilation - pad`` regular,
      ``(i-1)*d`` square) is ``oy*stride + t + band_top`` of ``src`` (rows outside
      ``0..in_height-1`` are zero padding).
    * ``weights_offset``/``weights_bytes``, ``requant_offset`` [bytes from base].
    * ``src``, ``src2``, ``dst``: :func:`view_layout` operands (``src2`` is the dilation
      map, the offset map or the add's second operand).
    """
    ch_bits = max(8, config.max_channels.bit_length())
    fields = {
        "opcode": Opcode,
        "config_tag": unsigned(16),
        "in_channels": unsigned(ch_bits),
        "out_channels": unsigned(ch_bits),
        "in_height": unsigned(DIM_BITS),
        "in_width": unsigned(DIM_BITS),
        "out_height": unsigned(DIM_BITS),
        "out_width": unsigned(DIM_BITS),
        "kernel": unsigned(4),
        "stride": unsigned(4),
        "pad": unsigned(4),
        "dilation": unsigned(4),
        "w_bits": unsigned(4),
        "lo": signed(9),
        "hi": signed(9),
        "d_max": unsigned(4),
        "frac_bits": unsigned(3),
        "offset_range": unsigned(4),
        "add_ma": unsigned(config.m_bits),
        "add_mb": unsigned(config.m_bits),
        "add_s": unsigned(config.s_bits),
        "acc_bound_bits": unsigned(7),
        "tile_rows": unsigned(DIM_BITS),
        "band_top": unsigned(4),
        "weights_offset": unsigned(ADDR_BITS),
        "weights_bytes": unsigned(ADDR_BITS),
        "requant_offset": unsigned(ADDR_BITS),
        "src": view_layout(config),
        "src2": view_layout(config),
        "dst": view_layout(config),
    }
    used = data.StructLayout(fields).size
    if used > DESCRIPTOR_BYTES * 8:
        raise ValueError(f"descriptor needs {used} bits, more than {DESCRIPTOR_BYTES * 8}")
    fields["reserved"] = unsigned(DESCRIPTOR_BYTES * 8 - used)
    return data.StructLayout(fields)


def weight_tile_layout(config: EngineConfig, w_bits: int) -> data.ArrayLayout:
    """One PE-array weight tile: ``pe_co`` rows (output lanes) of ``pe_ci`` signed weights.

    A layer's tiles are stored output group major, input group minor (tile address
    ``co * ci_groups + ci``), each padded to :func:`weight_tile_bytes`; input channels
    and output lanes beyond the layer's counts hold 0.
    """
    return data.ArrayLayout(data.ArrayLayout(signed(w_bits), config.pe_ci), config.pe_co)


def weight_tile_bytes(config: EngineConfig, w_bits: int) -> int:
    """Bytes one tile occupies in memory: its bits rounded up to whole AXI beats."""
    beat = config.axi_data_bits
    bits = config.pe_ci * config.pe_co * w_bits
    return -(-bits // beat) * beat // 8


def requant_word_layout(config: EngineConfig) -> data.StructLayout:
    """Per output channel of a PE-array layer: ``bias`` (int32), ``m`` (uint15), ``s`` (uint6),
    padded to 64 bits; one word per channel, channel order, 8 bytes each."""
    used = config.bias_bits + config.m_bits + config.s_bits
    return data.StructLayout({
        "bias": signed(config.bias_bits),
        "m": unsigned(config.m_bits),
        "s": unsigned(config.s_bits),
        "reserved": unsigned(64 - used),
    })


def dw_channel_word_layout(config: EngineConfig) -> data.StructLayout:
    """Per channel of a depthwise-unit layer: 9 weights (tap ``i*3+j``, signed 8-bit slots
    holding ``w_bits`` values), ``bias``, ``m``, ``s``; padded to 128 bits."""
    used = 9 * 8 + config.bias_bits + config.m_bits + config.s_bits
    return data.StructLayout({
        "weights": data.ArrayLayout(signed(8), 9),
        "bias": signed(config.bias_bits),
        "m": unsigned(config.m_bits),
        "s": unsigned(config.s_bits),
        "reserved": unsigned(128 - used),
    })


def config_tag(config: EngineConfig) -> int:
    """16-bit tag of an EngineConfig (the low bits of the SHA-256 of its sorted JSON).

    Every descriptor carries it; an engine built from another configuration sees a
    different tag and faults with :attr:`Fault.CONFIG_MISMATCH` instead of computing garbage.
    """
    import hashlib
    import json

    doc = json.dumps(config.to_dict(), sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(doc).digest()[:2], "little")
