"""AMBA AXI interface signatures: AXI4-Lite (the CSR slave) and AXI4 (the DMA master).

Signatures are written from the **manager's** (master's) side: ``Out`` members are driven
by the manager. A subordinate (slave) port is ``In(axi4lite_signature(...))``. Amaranth
0.5 names the Verilog ports ``<port>__<member>`` (``s_axil__awaddr``), which is what
cocotbext-axi finds with ``AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__")``.

Member names and widths follow the AMBA AXI and ACE Protocol Specification (ARM IHI 0022),
section B1 (AXI4-Lite): 32- or 64-bit data, ``*prot`` 3 bits, ``*resp`` 2 bits.
"""

from __future__ import annotations

import enum

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from convforge.errors import ConfigError


class Resp(enum.IntEnum):
    """``BRESP`` / ``RRESP`` encodings (IHI 0022, A3.4.4)."""

    OKAY = 0b00
    EXOKAY = 0b01
    SLVERR = 0b10
    DECERR = 0b11


def axi4lite_signature(addr_bits: int, data_bits: int = 32) -> wiring.Signature:
    """AXI4-Lite, manager's view: channels AW (``awaddr``, ``awprot``), W (``wdata``,
    ``wstrb``), B (``bresp``), AR (``araddr``, ``arprot``), R (``rdata``, ``rresp``), each
    with ``*valid`` (manager -> subordinate for AW/W/AR) and ``*ready``.

    Raises:
        ConfigError: ``data_bits`` not 32 or 64, or ``addr_bits`` < 2.
    """
    if data_bits not in (32, 64):
        raise ConfigError(f"AXI4-Lite data width {data_bits}: must be 32 or 64 bits (IHI 0022 B1.1)")
    if addr_bits < 2:
        raise ConfigError(f"AXI4-Lite address width {addr_bits}: must be at least 2 bits")
    return wiring.Signature({
        "awaddr": Out(addr_bits), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wvalid": Out(1), "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_bits), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_bits), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


def axi4_signature(addr_bits: int, data_bits: int, id_bits: int = 1) -> wiring.Signature:
    """AXI4 full, manager's view (``Out`` members are driven by the manager).

    Channels AW (``awid awaddr awlen awsize awburst awcache awprot awvalid``/``awready``),
    W (``wdata wstrb wlast wvalid``/``wready``), B (``bid bresp bvalid``/``bready``),
    AR (``arid araddr arlen arsize arburst arcache arprot arvalid``/``arready``),
    R (``rid rdata rresp rlast rvalid``/``rready``). Amaranth names the Verilog ports
    ``<port>__<member>``; cocotbext-axi finds them with
    ``AxiBus.from_prefix(dut, "m_axi", bus_separator="__")``.

    Raises:
        ConfigError: ``data_bits`` not a power of two in 32..1024, or ``addr_bits`` < 12.
    """
    if data_bits not in (32, 64, 128, 256, 512, 1024):
        raise ConfigError(f"AXI4 data width {data_bits}: must be a power of two in 32..1024 "
                          "(EngineConfig.axi_data_bits)")
    if addr_bits < 12:
        raise ConfigError(f"AXI4 address width {addr_bits}: needs at least 12 bits (4 KiB pages)")
    return wiring.Signature({
        "awid": Out(id_bits), "awaddr": Out(addr_bits), "awlen": Out(8), "awsize": Out(3),
        "awburst": Out(2), "awcache": Out(4), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wlast": Out(1), "wvalid": Out(1),
        "wready": In(1),
        "bid": In(id_bits), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "arid": Out(id_bits), "araddr": Out(addr_bits), "arlen": Out(8), "arsize": Out(3),
        "arburst": Out(2), "arcache": Out(4), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rid": In(id_bits), "rdata": In(data_bits), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
        "rready": Out(1),
    })
