"""The Vivado board flow: the accelerator packaged as a Vivado IP, a block design with the
Zynq processing system per board, and a batch script that writes a PYNQ overlay
(``convforge.bit`` + ``convforge.hwh``) and its timing summary.

What :func:`write_project` writes into ``out`` (nothing runs Vivado; :func:`run_vivado` does):

* ``ip/convforge_accel/component.xml`` -- the IP description (IP-XACT IEEE 1685-2009, the
  ``spirit`` schema with Xilinx vendor extensions that Vivado's IP packager reads and
  writes) under :data:`convforge.hw.ip.ACCEL_VLNV`: bus interfaces ``m_axi`` (aximm master,
  AXI4, ``EngineConfig.axi_data_bits`` wide, its own address space), ``s_axil`` (aximm
  slave, AXI4-Lite, whose memory map is PeakRDL's IP-XACT export of the one register map
  ``hw/regmap/convforge.rdl``), ``irq`` (interrupt, level high), ``clk`` (clock,
  ``ASSOCIATED_BUSIF m_axi:s_axil``, ``FREQ_HZ`` = the EngineConfig clock) and ``rst``
  (reset, active high: Amaranth's synchronous ``rst``); the port map ties each AXI logical
  port (``AWADDR``) to the physical port Amaranth emits (``m_axi__awaddr``).
* ``ip/convforge_accel/hdl/convforge_accel.v`` -- the generated Verilog (top
  ``convforge_accel``).
* ``vivado/block_design.tcl`` -- the block design ``convforge``: the PS (Zynq UltraScale+
  ``zynq_ultra_ps_e`` or Zynq-7000 ``processing_system7``), PL clock 0 at the EngineConfig
  clock, the accelerator's ``m_axi`` on the HP port (``S_AXI_HP0_FPD`` / ``S_AXI_HP0``)
  through an AXI interconnect, ``s_axil`` on the general-purpose master port
  (``M_AXI_HPM0_FPD`` / ``M_AXI_GP0``) at :func:`convforge.hw.ip.csr_base_address`, ``irq``
  to ``pl_ps_irq0`` / ``IRQ_F2P``, a ``proc_sys_reset`` for ``rst``.
* ``vivado/build.tcl`` -- creates the project for the board's part, checks the IP
  (``ipx::check_integrity``), sources the block design, synthesises, implements, writes
  ``convforge.bit``, ``convforge.hwh`` (PYNQ loads them as a pair by base name),
  ``timing_summary.rpt``, ``utilization.rpt`` and ``timing.json`` into ``out``; exits 2 when
  the design misses its clock (WNS < 0) after writing them.
* ``engine.toml`` and ``manifest.json`` (board, part, config, files, the command).

Plain Tcl rather than edalize: edalize's Vivado backend builds an RTL project around a
named top module, but an overlay's top is the block design's wrapper, which only exists
after the block-design Tcl ran inside Vivado, and the ``.hwh`` comes out of the block
design's generated targets; both would go into an edalize ``tclSource`` hook anyway, and
edalize would add a Makefile layer and a dependency for one ``vivado -mode batch`` call.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from convforge.errors import ConfigError, ConvforgeError
from convforge.hw.boards import Board
from convforge.hw.config import EngineConfig
from convforge.hw.ip import ACCEL_INSTANCE, ACCEL_VLNV, csr_base_address

if TYPE_CHECKING:
    from convforge.hw.estimate import FitReport

#: Verilog top module of the packaged IP.
TOP_MODULE = "convforge_accel"
#: Directory of the IP (relative to the project directory) and its Verilog file.
IP_DIR = Path("ip") / TOP_MODULE
HDL_FILE = Path("hdl") / f"{TOP_MODULE}.v"
#: Block design name and the overlay file base name PYNQ loads (``convforge.bit`` + ``.hwh``).
BD_NAME = "convforge"
OVERLAY_NAME = "convforge"
#: The CSR address block's name in the IP's memory map (Vivado's segment ``convforge_0/s_axil/reg0``).
CSR_BLOCK = "reg0"
#: Address window the block design assigns to the CSR slave (Vivado's smallest segment,
#: 4 KiB; the CSR block decodes :data:`convforge.hw.layouts.csr.ADDRESS_SPAN` bytes of it).
CSR_WINDOW = 0x1000
#: Amaranth's clock and reset ports of the ``sync`` domain (reset: active high, synchronous).
CLOCK_PORT, RESET_PORT = "clk", "rst"
#: The IP-XACT namespaces Vivado's component.xml uses.
SPIRIT_NS = "http://www.spiritconsortium.org/XMLSchema/SPIRIT/1685-2009"
XILINX_NS = "http://www.xilinx.com"
#: Files the Vivado run writes into the project directory.
RESULT_FILES = (f"{OVERLAY_NAME}.bit", f"{OVERLAY_NAME}.hwh", "timing_summary.rpt", "utilization.rpt", "timing.json")
#: Default wall-clock limit of one Vivado run (seconds): a ZU3EG build takes 20-60 min.
DEFAULT_TIMEOUT_S = 4 * 3600.0


@dataclass(frozen=True)
class ProcessingSystem:
    """The Zynq processing system of a part family, as the block design wires it.

    Attributes:
        family: yosys family of the board profile (``xcup`` Zynq UltraScale+, ``xc7`` Zynq-7000).
        ip: the PS IP's VLNV without version (Vivado picks the installed one).
        cell: its instance name.
        vivado_family: Vivado's family name (``supportedFamilies`` of the IP).
        gp_master / gp_master_clk: the general-purpose master port the CSR hangs on, and its clock pin.
        hp_slave / hp_slave_clk: the high-performance slave port the DMA uses, and its clock pin.
        hp_max_data_bits: widest data bus of that HP port (bits).
        m_axi_addr_bits: address bits of the accelerator's ``m_axi`` on this PS (byte addresses).
        pl_clk, pl_resetn, irq: PL clock 0, its active-low reset, the PL-to-PS interrupt pin.
        data_space: the PS's master address space.
        clock_property / actual_clock_property: PS properties of PL clock 0 in MHz
            (requested / what the PLL reaches).
    """

    family: str
    ip: str
    cell: str
    vivado_family: str
    gp_master: str
    gp_master_clk: str
    hp_slave: str
    hp_slave_clk: str
    hp_max_data_bits: int
    m_axi_addr_bits: int
    pl_clk: str
    pl_resetn: str
    irq: str
    data_space: str
    clock_property: str
    actual_clock_property: str

    def ps_config(self, cfg: EngineConfig) -> dict[str, str]:
        """``CONFIG.*`` properties of the PS cell: the ports used, their widths, PL clock 0."""
        clock = f"{cfg.clock_mhz:g}"
        if self.family == "xcup":
            return {
                "CONFIG.PSU__USE__M_AXI_GP0": "1",  # M_AXI_HPM0_FPD: the CSR
                "CONFIG.PSU__MAXIGP0__DATA_WIDTH": "32",
                "CONFIG.PSU__USE__M_AXI_GP1": "0",
                "CONFIG.PSU__USE__M_AXI_GP2": "0",
                "CONFIG.PSU__USE__S_AXI_GP2": "1",  # S_AXI_HP0_FPD: the DMA
                "CONFIG.PSU__SAXIGP2__DATA_WIDTH": str(cfg.axi_data_bits),
                "CONFIG.PSU__USE__IRQ0": "1",
                "CONFIG.PSU__FPGA_PL0_ENABLE": "1",
                self.clock_property: clock,
            }
        return {
            "CONFIG.PCW_USE_M_AXI_GP0": "1",
            "CONFIG.PCW_USE_S_AXI_HP0": "1",
            "CONFIG.PCW_S_AXI_HP0_DATA_WIDTH": str(cfg.axi_data_bits),
            "CONFIG.PCW_USE_FABRIC_INTERRUPT": "1",
            "CONFIG.PCW_IRQ_F2P_INTR": "1",
            "CONFIG.PCW_EN_CLK0_PORT": "1",
            "CONFIG.PCW_EN_RST0_PORT": "1",
            self.clock_property: clock,
        }


#: PS facts per yosys family (Zynq UltraScale+ TRM UG1085 ch. 35 and PG201; Zynq-7000
#: TRM UG585 ch. 5 and PG082). ZynqMP's S_AXI_HP ports carry 49 address bits, of which
#: the physical memory map uses 40 (DDR high ends below 0x10_0000_0000); Zynq-7000's HP
#: ports are 32-bit AXI3, 64 data bits, and Vivado's interconnect converts the AXI4 master.
PROCESSING_SYSTEMS: dict[str, ProcessingSystem] = {
    "xcup": ProcessingSystem(
        family="xcup", ip="xilinx.com:ip:zynq_ultra_ps_e", cell="zynq_ultra_ps_e_0", vivado_family="zynquplus",
        gp_master="M_AXI_HPM0_FPD", gp_master_clk="maxihpm0_fpd_aclk",
        hp_slave="S_AXI_HP0_FPD", hp_slave_clk="saxihp0_fpd_aclk", hp_max_data_bits=128, m_axi_addr_bits=40,
        pl_clk="pl_clk0", pl_resetn="pl_resetn0", irq="pl_ps_irq0", data_space="Data",
        clock_property="CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ",
        actual_clock_property="CONFIG.PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ",
    ),
    "xc7": ProcessingSystem(
        family="xc7", ip="xilinx.com:ip:processing_system7", cell="processing_system7_0", vivado_family="zynq",
        gp_master="M_AXI_GP0", gp_master_clk="M_AXI_GP0_ACLK",
        hp_slave="S_AXI_HP0", hp_slave_clk="S_AXI_HP0_ACLK", hp_max_data_bits=64, m_axi_addr_bits=32,
        pl_clk="FCLK_CLK0", pl_resetn="FCLK_RESET0_N", irq="IRQ_F2P", data_space="Data",
        clock_property="CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ",
        actual_clock_property="CONFIG.PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ",
    ),
}

#: Vivado board part of each board (pattern; used for the PS presets when the board files
#: are installed, otherwise the bare part is used and the PS keeps Vivado's defaults
#: besides the ports above -- the PYNQ image's boot loader configures DDR and MIO anyway).
BOARD_PARTS = {
    "ultra96v2": "avnet.com:ultra96v2:part0:*",
    "kv260": "xilinx.com:kv260_som:part0:*",
    "pynqz2": "tul.com.tw:pynq-z2:part0:*",
}

#: Largest difference allowed between the requested and the reached PL clock (fraction).
CLOCK_TOLERANCE = 0.01


def processing_system(board: Board) -> ProcessingSystem:
    """The PS of ``board``'s part family.

    Raises:
        ConfigError: the board has no Zynq PS this flow knows (e.g. an ECP5 board: its flow is
            :mod:`convforge.hw.boards.ecp5`).
    """
    try:
        return PROCESSING_SYSTEMS[board.yosys_family]
    except KeyError:
        raise ConfigError(
            f"board {board.name!r} (family {board.yosys_family!r}) has no Zynq processing system; "
            f"the Vivado flow builds {sorted(PROCESSING_SYSTEMS)} boards"
        ) from None


def check_engine(cfg: EngineConfig, board: Board) -> None:
    """Refuse an EngineConfig the board's PS ports cannot carry.

    Raises:
        ConfigError: ``axi_data_bits`` wider than the HP port.
    """
    ps = processing_system(board)
    if cfg.axi_data_bits > ps.hp_max_data_bits:
        raise ConfigError(
            f"EngineConfig.axi_data_bits = {cfg.axi_data_bits}: the {ps.hp_slave} port of {board.title} carries at "
            f"most {ps.hp_max_data_bits} data bits; set axi_data_bits = {ps.hp_max_data_bits} (or less)"
        )


# --------------------------------------------------------------------------- ports
@dataclass(frozen=True)
class Port:
    """A top-level port of the IP: Verilog name, ``in``/``out``, width in bits."""

    name: str
    direction: str
    width: int


def accelerator(cfg: EngineConfig, board: Board):
    """The :class:`~convforge.hw.rtl.accel.Accelerator` as it is built for ``board``
    (``m_axi`` address width of the board's PS)."""
    from convforge.hw.rtl.accel import Accelerator  # noqa: PLC0415

    return Accelerator(cfg, addr_bits=processing_system(board).m_axi_addr_bits)


def accelerator_ports(cfg: EngineConfig, board: Board) -> list[Port]:
    """:func:`signature_ports` of :func:`accelerator` without elaborating it (milliseconds)."""
    top = accelerator(cfg, board)
    ports = signature_ports(top)
    top._MustUse__silence = True  # built for its signature only: not an unused design
    return ports


def signature_ports(component) -> list[Port]:
    """The Verilog ports of an Amaranth component, in signature order, as Amaranth 0.5
    names them: ``clk`` and ``rst`` of the ``sync`` domain, then each signature member's
    path joined with ``__`` (``m_axi__awaddr``)."""
    from amaranth.hdl import Shape  # noqa: PLC0415
    from amaranth.lib.wiring import Out  # noqa: PLC0415

    ports = [Port(CLOCK_PORT, "in", 1), Port(RESET_PORT, "in", 1)]
    for path, member in component.signature.members.flatten():
        if not member.is_port:
            continue
        ports.append(Port("__".join(map(str, path)), "out" if member.flow == Out else "in",
                          Shape.cast(member.shape).width))
    return ports


_PORT_DECL = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):(\d+)\]\s+)?\\?([\w$.]+)\s*;",
                        re.MULTILINE)


def verilog_ports(text: str, module: str) -> list[Port]:
    """The ports of ``module`` as declared in Verilog ``text`` (Amaranth's emission style:
    one ``input``/``output`` declaration per port in the module body).

    Raises:
        ConvforgeError: ``module`` is not in ``text``.
    """
    start = re.search(rf"^module\s+\\?{re.escape(module)}\s*\(", text, re.MULTILINE)
    if start is None:
        raise ConvforgeError(f"module {module!r} not found in the emitted Verilog")
    end = text.find("endmodule", start.end())
    body = text[start.end():end]
    return [Port(m.group(4), "in" if m.group(1) == "input" else "out",
                 int(m.group(2)) - int(m.group(3)) + 1 if m.group(2) else 1)
            for m in _PORT_DECL.finditer(body)]


def check_ports(expected: list[Port], emitted: list[Port]) -> None:
    """Raise :class:`ConvforgeError` listing every difference between the signature's ports
    and the emitted Verilog's (the component.xml port map is built from the former)."""
    a, b = {p.name: p for p in expected}, {p.name: p for p in emitted}
    diffs = [f"{n}: signature {a.get(n)}, Verilog {b.get(n)}" for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
    if diffs:
        raise ConvforgeError("the emitted Verilog's ports differ from the accelerator's signature: " + "; ".join(diffs))


# --------------------------------------------------------------------------- component.xml
def _q(tag: str) -> str:
    ns, _, name = tag.partition(":")
    return f"{{{SPIRIT_NS if ns == 'spirit' else XILINX_NS}}}{name}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, _q(tag), {_q(k.replace("__", ":")): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _vlnv(parent: ET.Element, tag: str, vlnv: str) -> None:
    vendor, library, name, version = vlnv.split(":")
    _sub(parent, tag, spirit__vendor=vendor, spirit__library=library, spirit__name=name, spirit__version=version)


#: Bus parameters the block design may overwrite by propagation (``presence optional``, as
#: Vivado's IP packager marks them): the PS's PL clock is the PLL's nearest frequency
#: (249.9975 MHz for 250), and a fixed FREQ_HZ would disagree with it.
PROPAGATED_PARAMETERS = ("FREQ_HZ",)


def _parameters(parent: ET.Element, params: dict[str, str], bus: str) -> None:
    if not params:
        return
    ps = _sub(parent, "spirit:parameters")
    for name, value in params.items():
        p = _sub(ps, "spirit:parameter")
        _sub(p, "spirit:name", name)
        _sub(p, "spirit:value", value, spirit__id=f"BUSIFPARAM_VALUE.{bus.upper()}.{name}")
        if name in PROPAGATED_PARAMETERS:
            info = _sub(_sub(p, "spirit:vendorExtensions"), "xilinx:parameterInfo")
            _sub(_sub(info, "xilinx:enablement"), "xilinx:presence", "optional")


#: Bus interfaces of the IP: name -> (bus type VLNV, mode, parameters). AXI logical ports
#: are the member names upper-cased (``awaddr`` -> ``AWADDR``), as in Xilinx's aximm_rtl.
def _bus_interfaces(cfg: EngineConfig) -> list[tuple[str, str, str, dict[str, str], dict[str, str]]]:
    return [
        ("m_axi", "xilinx.com:interface:aximm:1.0", "master", {"PROTOCOL": "AXI4"}, {}),
        ("s_axil", "xilinx.com:interface:aximm:1.0", "slave", {"PROTOCOL": "AXI4LITE"}, {}),
        ("irq", "xilinx.com:signal:interrupt:1.0", "master", {"SENSITIVITY": "LEVEL_HIGH"}, {"INTERRUPT": "irq"}),
        ("clk", "xilinx.com:signal:clock:1.0", "slave",
         {"ASSOCIATED_BUSIF": "m_axi:s_axil", "ASSOCIATED_RESET": RESET_PORT,
          "FREQ_HZ": str(round(cfg.clock_mhz * 1e6))}, {"CLK": CLOCK_PORT}),
        ("rst", "xilinx.com:signal:reset:1.0", "slave", {"POLARITY": "ACTIVE_HIGH"}, {"RST": RESET_PORT}),
    ]


def register_memory_map() -> ET.Element:
    """The CSR memory map (``spirit:memoryMap``) exported by PeakRDL's IP-XACT exporter from
    ``hw/regmap/convforge.rdl`` (IEEE 1685-2009 flavour), renamed to the ``s_axil`` bus
    interface (memory map ``s_axil``, address block :data:`CSR_BLOCK`).

    Raises:
        ConfigError: peakrdl-ipxact or systemrdl-compiler missing, or the rdl invalid.
    """
    import tempfile  # noqa: PLC0415

    try:
        from peakrdl_ipxact import IPXACTExporter, Standard  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError("packaging the IP needs peakrdl-ipxact: pip install -e '.[hw]'") from exc
    from convforge.hw.regmap import elaborate  # noqa: PLC0415

    vendor, library, name, version = ACCEL_VLNV.split(":")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "regmap.xml"
        IPXACTExporter(vendor=vendor, library=library, version=version,
                       standard=Standard.IEEE_1685_2009).export(elaborate().top, str(path))
        root = ET.parse(path).getroot()
    mmap = root.find(_q("spirit:memoryMaps") + "/" + _q("spirit:memoryMap"))
    if mmap is None:
        raise ConfigError("PeakRDL's IP-XACT export has no memoryMap")
    mmap.find(_q("spirit:name")).text = "s_axil"
    block = mmap.find(_q("spirit:addressBlock"))
    block.find(_q("spirit:name")).text = CSR_BLOCK
    return mmap


def component_xml(cfg: EngineConfig, board: Board, ports: list[Port]) -> str:
    """Text of the IP's ``component.xml`` (see the module docstring).

    Args:
        cfg: the EngineConfig (``clock_mhz`` -> ``FREQ_HZ``; ``axi_data_bits`` sizes ``m_axi``).
        board: the board (its PS family names the supported Vivado family).
        ports: the top's ports (:func:`signature_ports`, checked against the Verilog).
    """
    ET.register_namespace("spirit", SPIRIT_NS)
    ET.register_namespace("xilinx", XILINX_NS)
    ET.register_namespace("xsi", "http://www.w3.org/2001/XMLSchema-instance")
    ps = processing_system(board)
    vendor, library, name, version = ACCEL_VLNV.split(":")
    comp = ET.Element(_q("spirit:component"))
    for tag, value in (("vendor", vendor), ("library", library), ("name", name), ("version", version)):
        _sub(comp, f"spirit:{tag}", value)
    by_name = {p.name: p for p in ports}
    bifs = _sub(comp, "spirit:busInterfaces")
    for bus, bus_type, mode, params, explicit in _bus_interfaces(cfg):
        bi = _sub(bifs, "spirit:busInterface")
        _sub(bi, "spirit:name", bus)
        _vlnv(bi, "spirit:busType", bus_type)
        _vlnv(bi, "spirit:abstractionType", bus_type.replace(":1.0", "_rtl:1.0"))
        m = _sub(bi, f"spirit:{mode}")
        if bus == "m_axi":
            _sub(m, "spirit:addressSpaceRef", spirit__addressSpaceRef="m_axi")
        elif bus == "s_axil":
            _sub(m, "spirit:memoryMapRef", spirit__memoryMapRef="s_axil")
        mapping = explicit or {p.name.split("__", 1)[1].upper(): p.name
                               for p in ports if p.name.startswith(bus + "__")}
        pms = _sub(bi, "spirit:portMaps")
        for logical, physical in mapping.items():
            if physical not in by_name:
                raise ConvforgeError(f"bus interface {bus}: port {physical!r} is not a port of {TOP_MODULE}")
            pm = _sub(pms, "spirit:portMap")
            _sub(_sub(pm, "spirit:logicalPort"), "spirit:name", logical)
            _sub(_sub(pm, "spirit:physicalPort"), "spirit:name", physical)
        _parameters(bi, params, bus)
    spaces = _sub(comp, "spirit:addressSpaces")
    space = _sub(spaces, "spirit:addressSpace")
    _sub(space, "spirit:name", "m_axi")
    _sub(space, "spirit:range", str(1 << ps.m_axi_addr_bits))
    _sub(space, "spirit:width", str(cfg.axi_data_bits))
    _sub(comp, "spirit:memoryMaps").append(register_memory_map())
    model = _sub(comp, "spirit:model")
    views = _sub(model, "spirit:views")
    for view, env in (("xilinx_verilogsynthesis", "synthesis"), ("xilinx_verilogbehavioralsimulation", "simulation")):
        v = _sub(views, "spirit:view")
        _sub(v, "spirit:name", view)
        _sub(v, "spirit:envIdentifier", f"verilogSource:vivado.xilinx.com:{env}")
        _sub(v, "spirit:language", "verilog")
        _sub(v, "spirit:modelName", TOP_MODULE)
        _sub(_sub(v, "spirit:fileSetRef"), "spirit:localName", f"{view}_view_fileset")
    sports = _sub(model, "spirit:ports")
    for p in ports:
        pe = _sub(sports, "spirit:port")
        _sub(pe, "spirit:name", p.name)
        wire = _sub(pe, "spirit:wire")
        _sub(wire, "spirit:direction", p.direction)
        if p.width > 1:
            vec = _sub(wire, "spirit:vector")
            _sub(vec, "spirit:left", str(p.width - 1), spirit__format="long")
            _sub(vec, "spirit:right", "0", spirit__format="long")
    filesets = _sub(comp, "spirit:fileSets")
    for view in ("xilinx_verilogsynthesis", "xilinx_verilogbehavioralsimulation"):
        fs = _sub(filesets, "spirit:fileSet")
        _sub(fs, "spirit:name", f"{view}_view_fileset")
        f = _sub(fs, "spirit:file")
        _sub(f, "spirit:name", HDL_FILE.as_posix())
        _sub(f, "spirit:fileType", "verilogSource")
    _sub(comp, "spirit:description",
         f"convforge accelerator: {cfg.describe()}. CSR registers: docs/registers.md.")
    ext = _sub(_sub(comp, "spirit:vendorExtensions"), "xilinx:coreExtensions")
    fams = _sub(ext, "xilinx:supportedFamilies")
    _sub(fams, "xilinx:family", ps.vivado_family, xilinx__lifeCycle="Production")
    _sub(_sub(ext, "xilinx:taxonomies"), "xilinx:taxonomy", "/UserIP")
    _sub(ext, "xilinx:displayName", "convforge accelerator")
    _sub(ext, "xilinx:coreRevision", "1")
    ET.indent(comp, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(comp, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- Tcl
def _tcl_dict(props: dict[str, str]) -> str:
    return " \\\n  ".join(f"{k} {{{v}}}" for k, v in props.items())


def block_design_tcl(cfg: EngineConfig, board: Board) -> str:
    """Text of ``vivado/block_design.tcl``: creates the block design :data:`BD_NAME` in the
    open project (the IP repository already on ``ip_repo_paths``) and validates it.

    Expects the Tcl variable ``convforge_board_preset`` (1 when the board part is set).
    """
    ps = processing_system(board)
    base = csr_base_address(board.yosys_family)
    p = ps.cell
    lines = [
        f"# convforge block design for {board.title} ({board.part}); generated by convforge.hw.boards.vivado.",
        f"# PL clock 0 = EngineConfig.clock_mhz = {cfg.clock_mhz:g} MHz; CSR at 0x{base:08X}; DMA on {ps.hp_slave}.",
        f"create_bd_design {BD_NAME}",
        f"set ps [create_bd_cell -type ip -vlnv {ps.ip} {p}]",
    ]
    if ps.family == "xc7":
        lines.append('apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 -config [list make_external '
                     '"FIXED_IO, DDR" apply_board_preset $convforge_board_preset Master Disable Slave Disable] $ps')
    else:
        lines.append("if {$convforge_board_preset} {\n  apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e "
                     "-config {apply_board_preset 1} $ps\n}")
    lines += [
        f"set_property -dict [list \\\n  {_tcl_dict(ps.ps_config(cfg))} \\\n] $ps",
        f"set requested_mhz {cfg.clock_mhz:g}",
        f"set actual_mhz [get_property {ps.actual_clock_property} $ps]",
        'puts "convforge: PL clock 0 requested $requested_mhz MHz, the PS reaches $actual_mhz MHz"',
        f"if {{abs($actual_mhz - $requested_mhz) > {CLOCK_TOLERANCE} * $requested_mhz}} {{\n"
        '  error "convforge: the PS cannot make $requested_mhz MHz (it reaches $actual_mhz MHz); '
        'choose an EngineConfig.clock_mhz the PL clock divider reaches"\n}',
        f"set accel [create_bd_cell -type ip -vlnv {ACCEL_VLNV} {ACCEL_INSTANCE}]",
        "set reset [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset proc_sys_reset_0]",
        "set csr_ic [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_interconnect csr_interconnect]",
        "set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $csr_ic",
        "set ddr_ic [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_interconnect ddr_interconnect]",
        "set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $ddr_ic",
        f"connect_bd_intf_net [get_bd_intf_pins {p}/{ps.gp_master}] [get_bd_intf_pins csr_interconnect/S00_AXI]",
        f"connect_bd_intf_net [get_bd_intf_pins csr_interconnect/M00_AXI] [get_bd_intf_pins {ACCEL_INSTANCE}/s_axil]",
        f"connect_bd_intf_net [get_bd_intf_pins {ACCEL_INSTANCE}/m_axi] [get_bd_intf_pins ddr_interconnect/S00_AXI]",
        f"connect_bd_intf_net [get_bd_intf_pins ddr_interconnect/M00_AXI] [get_bd_intf_pins {p}/{ps.hp_slave}]",
        "connect_bd_net " + " ".join(f"[get_bd_pins {pin}]" for pin in (
            f"{p}/{ps.pl_clk}", f"{p}/{ps.gp_master_clk}", f"{p}/{ps.hp_slave_clk}", f"{ACCEL_INSTANCE}/{CLOCK_PORT}",
            "proc_sys_reset_0/slowest_sync_clk",
            *(f"{ic}/{c}" for ic in ("csr_interconnect", "ddr_interconnect")
              for c in ("ACLK", "S00_ACLK", "M00_ACLK")))),
        f"connect_bd_net [get_bd_pins {p}/{ps.pl_resetn}] [get_bd_pins proc_sys_reset_0/ext_reset_in]",
        f"connect_bd_net [get_bd_pins proc_sys_reset_0/peripheral_reset] [get_bd_pins {ACCEL_INSTANCE}/{RESET_PORT}]",
        "connect_bd_net [get_bd_pins proc_sys_reset_0/interconnect_aresetn] "
        + " ".join(f"[get_bd_pins {ic}/ARESETN]" for ic in ("csr_interconnect", "ddr_interconnect")),
        "connect_bd_net [get_bd_pins proc_sys_reset_0/peripheral_aresetn] "
        + " ".join(f"[get_bd_pins {ic}/{c}]" for ic in ("csr_interconnect", "ddr_interconnect")
                   for c in ("S00_ARESETN", "M00_ARESETN")),
        f"connect_bd_net [get_bd_pins {ACCEL_INSTANCE}/irq] [get_bd_pins {p}/{ps.irq}]",
        f"assign_bd_address -offset 0x{base:08X} -range 0x{CSR_WINDOW:X} "
        f"-target_address_space [get_bd_addr_spaces {p}/{ps.data_space}] "
        f"[get_bd_addr_segs {ACCEL_INSTANCE}/s_axil/{CSR_BLOCK}] -force",
        f"assign_bd_address -target_address_space [get_bd_addr_spaces {ACCEL_INSTANCE}/m_axi] "
        f'[get_bd_addr_segs -of_objects [get_bd_intf_pins {p}/{ps.hp_slave}] -filter {{NAME =~ "*DDR*"}}]',
        "validate_bd_design",
        "save_bd_design",
    ]
    return "\n".join(lines) + "\n"


def _board_part_tcl(board: Board) -> str:
    """Tcl that sets the board part (and ``convforge_board_preset``) when its files are installed."""
    pattern = BOARD_PARTS.get(board.name)
    if pattern is None:
        return f"set convforge_board_preset 0  ;# no Vivado board part known for {board.name}: the bare part"
    return f"""\
set convforge_board_preset 0
set board_part [lindex [lsort [get_board_parts -quiet {{{pattern}}}]] end]
if {{$board_part ne ""}} {{
  set_property board_part $board_part [current_project]
  set convforge_board_preset 1
}} else {{
  puts "convforge: board files for {board.name} ({pattern}) not installed; building for the bare part $part"
}}"""


def build_tcl(cfg: EngineConfig, board: Board) -> str:
    """Text of ``vivado/build.tcl``: the whole batch flow (see the module docstring).

    Run from anywhere as ``vivado -mode batch -source vivado/build.tcl [-tclargs JOBS]``;
    paths are relative to the script. Exit status 1: a step failed; 2: timing not met.
    """
    processing_system(board)  # a Zynq board
    return f"""\
# convforge overlay build for {board.title}; generated by convforge.hw.boards.vivado.
# vivado -mode batch -source vivado/build.tcl [-tclargs JOBS]
set here [file dirname [file normalize [info script]]]
set out [file dirname $here]
set jobs [expr {{[llength $argv] > 0 ? [lindex $argv 0] : 4}}]
set part {board.part}
create_project -force convforge_{board.name} [file join $out vivado convforge_{board.name}] -part $part
{_board_part_tcl(board)}
# the IP: check the generated component.xml before using it
ipx::open_core [file join $out {IP_DIR.as_posix()} component.xml]
if {{[catch {{ipx::check_integrity [ipx::current_core]}} msg]}} {{
  error "convforge: the generated IP {ACCEL_VLNV} failed ipx::check_integrity: $msg"
}}
ipx::unload_core [ipx::current_core]
set_property ip_repo_paths [list [file join $out ip]] [current_project]
update_ip_catalog
source [file join $here block_design.tcl]
set bd_file [get_files {BD_NAME}.bd]
generate_target all $bd_file
set wrapper [make_wrapper -files $bd_file -top]
add_files -norecurse $wrapper
set_property top {BD_NAME}_wrapper [current_fileset]
update_compile_order -fileset sources_1
launch_runs synth_1 -jobs $jobs
wait_on_run synth_1
if {{[get_property PROGRESS [get_runs synth_1]] ne "100%"}} {{
  error "convforge: synthesis failed; see the synth_1 log"
}}
launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
if {{[get_property PROGRESS [get_runs impl_1]] ne "100%"}} {{
  error "convforge: implementation failed; see the impl_1 log"
}}
open_run impl_1
report_timing_summary -max_paths 10 -file [file join $out timing_summary.rpt]
report_utilization -file [file join $out utilization.rpt]
set wns [get_property STATS.WNS [get_runs impl_1]]
set whs [get_property STATS.WHS [get_runs impl_1]]
set worst [get_timing_paths -max_paths 1 -setup]
set path_from [get_property STARTPOINT_PIN $worst]
set path_to [get_property ENDPOINT_PIN $worst]
set bit [file join [get_property DIRECTORY [get_runs impl_1]] {BD_NAME}_wrapper.bit]
file copy -force $bit [file join $out {OVERLAY_NAME}.bit]
set hwh [lindex [get_files -all -quiet */{BD_NAME}.hwh] 0]
if {{$hwh eq ""}} {{ error "convforge: no {BD_NAME}.hwh among the block design's generated files" }}
file copy -force $hwh [file join $out {OVERLAY_NAME}.hwh]
# actual_mhz: the PL clock the PS reaches, read by block_design.tcl
set fh [open [file join $out timing.json] w]
set items {{}}
foreach {{key val}} [list board {board.name} part $part clock_mhz_requested {cfg.clock_mhz:g} \\
    clock_mhz_actual $actual_mhz wns_ns $wns whs_ns $whs worst_from $path_from worst_to $path_to] {{
  lappend items [expr {{[string is double -strict $val] ? "\\"$key\\": $val" : "\\"$key\\": \\"$val\\""}}]
}}
puts $fh "{{[join $items {{, }}]}}"
close $fh
puts "convforge: wrote [file join $out {OVERLAY_NAME}.bit] and [file join $out {OVERLAY_NAME}.hwh];\
 WNS $wns ns, WHS $whs ns"
if {{$wns < 0 || $whs < 0}} {{
  puts "convforge: TIMING NOT MET at $actual_mhz MHz: WNS $wns ns\
 (worst path $path_from -> $path_to); see timing_summary.rpt"
  exit 2
}}
exit 0
"""


# --------------------------------------------------------------------------- project
@dataclass(frozen=True)
class VivadoProject:
    """A written project directory.

    Attributes:
        out: the directory. board: the board profile. config: the EngineConfig.
        files: written files relative to ``out`` -> sha256.
        command: the shell command (run in ``out``) that builds the overlay.
    """

    out: Path
    board: Board
    config: EngineConfig
    files: dict[str, str]
    command: str

    @property
    def build_tcl(self) -> Path:
        return self.out / "vivado" / "build.tcl"

    @property
    def log(self) -> Path:
        return self.out / "vivado.log"


def vivado_command(jobs: int = 4) -> list[str]:
    """The Vivado batch command (run in the project directory)."""
    return ["vivado", "-mode", "batch", "-source", "vivado/build.tcl", "-log", "vivado.log",
            "-journal", "vivado.jou", "-tclargs", str(jobs)]


def write_project(cfg: EngineConfig, board: Board, out: Path, jobs: int = 4,
                  verilog: str | None = None) -> VivadoProject:
    """Write the IP, the block design and the build script of ``cfg`` on ``board`` into ``out``.

    The resource check (:func:`convforge.hw.estimate.check_fit`) is the caller's: this
    function writes. ``verilog``: the emitted top (default: emitted here, seconds).

    Raises:
        ConfigError: a board without a Zynq PS, or an EngineConfig its ports cannot carry.
        ConvforgeError: the emitted Verilog's ports differ from the signature.
    """
    from convforge import __version__  # noqa: PLC0415
    from convforge.hw.rtl.emit import emit_verilog  # noqa: PLC0415

    check_engine(cfg, board)
    ports = accelerator_ports(cfg, board)
    text = verilog if verilog is not None else emit_verilog(accelerator(cfg, board), TOP_MODULE)
    check_ports(ports, verilog_ports(text, TOP_MODULE))
    texts = {
        (IP_DIR / HDL_FILE).as_posix(): text,
        (IP_DIR / "component.xml").as_posix(): component_xml(cfg, board, ports),
        "vivado/block_design.tcl": block_design_tcl(cfg, board),
        "vivado/build.tcl": build_tcl(cfg, board),
        "engine.toml": cfg.to_toml(),
    }
    out = Path(out)
    for rel, body in texts.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(body)
    files = {rel: hashlib.sha256(body.encode()).hexdigest() for rel, body in texts.items()}
    command = " ".join(vivado_command(jobs))
    manifest = {"convforge": __version__, "board": board.name, "part": board.part, "vlnv": ACCEL_VLNV,
                "instance": ACCEL_INSTANCE, "csr_base": csr_base_address(board.yosys_family),
                "config": cfg.to_dict(), "files": files, "command": f"cd {out} && {command}",
                "outputs": list(RESULT_FILES)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return VivadoProject(out, board, cfg, files, command)


@dataclass(frozen=True)
class BuildResult:
    """A finished Vivado run: the overlay files and the timing figures (``timing.json``)."""

    bit: Path
    hwh: Path
    timing: dict
    seconds: float
    log: Path

    @property
    def timing_met(self) -> bool:
        return float(self.timing["wns_ns"]) >= 0 and float(self.timing["whs_ns"]) >= 0


#: Vivado log lines worth showing as progress (run steps, not every message).
_PROGRESS = re.compile(r"^(convforge:|INFO: \[Common 17-206\]|\[.*\] Launched|\[.*\] Finished|Starting |"
                       r"Phase \d+ |write_bitstream|ERROR|CRITICAL WARNING: \[Timing)")


def find_vivado() -> str | None:
    """``vivado`` on PATH (or ``$XILINX_VIVADO/bin/vivado``), else None."""
    exe = shutil.which("vivado")
    if exe is None and os.environ.get("XILINX_VIVADO"):
        cand = Path(os.environ["XILINX_VIVADO"]) / "bin" / "vivado"
        exe = str(cand) if cand.is_file() else None
    return exe


def run_vivado(project: VivadoProject, vivado: str, jobs: int = 4, timeout_s: float = DEFAULT_TIMEOUT_S,
               progress: Callable[[str], None] | None = print) -> BuildResult:
    """Run the batch flow in ``project.out`` and return the overlay files and timing.

    Progress lines (run steps, errors) go to ``progress``; everything to ``vivado.log``.

    Raises:
        ConvforgeError: Vivado failed, timed out (killed after ``timeout_s`` seconds) or
            left an output missing; the message names the log. Timing not met is *not* an
            error here: :attr:`BuildResult.timing_met` says it and the caller reports it.
    """
    cmd = [vivado, *vivado_command(jobs)[1:]]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=project.out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def relay() -> None:  # in a thread, so a silent Vivado cannot outlive the timeout
        for line in proc.stdout:
            if progress and _PROGRESS.match(line):
                progress(f"[{time.monotonic() - t0:7.0f} s] {line.rstrip()}")

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise ConvforgeError(f"Vivado ran past {timeout_s:.0f} s and was stopped; log {project.log}") from None
    finally:
        reader.join(timeout=10.0)
    missing = [f for f in RESULT_FILES if not (project.out / f).is_file()]
    if rc not in (0, 2) or missing:
        raise ConvforgeError(f"Vivado exited {rc}" + (f" without writing {', '.join(missing)}" if missing else "")
                             + f"; log {project.log}")
    timing = json.loads((project.out / "timing.json").read_text())
    return BuildResult(project.out / f"{OVERLAY_NAME}.bit", project.out / f"{OVERLAY_NAME}.hwh", timing,
                       time.monotonic() - t0, project.log)


@dataclass(frozen=True)
class Build:
    """What :func:`build` did: the fit report, the written project, the Vivado result
    (None when Vivado did not run)."""

    fit: FitReport
    project: VivadoProject
    result: BuildResult | None


def build(cfg: EngineConfig, board: Board, out: Path, *, vivado: str | None = None, run: bool = True,
          jobs: int = 4, timeout_s: float = DEFAULT_TIMEOUT_S,
          progress: Callable[[str], None] | None = print) -> Build:
    """The board flow: refuse a configuration that does not fit, write the project, run Vivado.

    1. :func:`check_engine` (the PS ports) and :func:`convforge.hw.estimate.check_fit` (the
       yosys estimate of the whole accelerator against the part) -- before anything is
       written to ``out``;
    2. :func:`write_project`;
    3. with ``run`` and a Vivado executable (``vivado`` or :func:`find_vivado`):
       :func:`run_vivado`.

    Raises:
        ResourceError: the estimate does not fit the part (nothing written).
        ConfigError, ConvforgeError: as the steps above.
    """
    from convforge.hw import estimate  # noqa: PLC0415

    check_engine(cfg, board)
    if progress:
        progress(f"checking that the accelerator fits {board.part} (yosys estimate of the whole top; "
                 "cached by the Verilog's sha256 after the first run)")
    fit = estimate.check_fit(cfg, board)
    if progress:
        progress(fit.format_table())
    project = write_project(cfg, board, out, jobs)
    exe = vivado or find_vivado()
    result = run_vivado(project, exe, jobs, timeout_s, progress) if run and exe else None
    return Build(fit, project, result)
