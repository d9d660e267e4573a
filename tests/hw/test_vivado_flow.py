"""The Vivado board flow up to Vivado: the IP's component.xml against the register map and
the accelerator's ports, and the block-design / build Tcl run in a real Tcl interpreter
with Vivado's commands recorded (tests/hw/fake_vivado.py)."""

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from convforge.errors import ConfigError, ResourceError
from convforge.hw.boards import BOARDS, get_board
from convforge.hw.boards import vivado as v
from convforge.hw.config import EngineConfig
from convforge.hw.ip import ACCEL_INSTANCE, ACCEL_VLNV, csr_base_address
from convforge.hw.layouts import csr
from convforge.hw.rtl.csr import ADDR_BITS

sys.path.insert(0, str(Path(__file__).parent))
import fake_vivado  # noqa: E402

NS = {"spirit": v.SPIRIT_NS, "xilinx": v.XILINX_NS}
AXI4_LOGICAL = {
    "AWID", "AWADDR", "AWLEN", "AWSIZE", "AWBURST", "AWCACHE", "AWPROT", "AWVALID", "AWREADY",
    "WDATA", "WSTRB", "WLAST", "WVALID", "WREADY", "BID", "BRESP", "BVALID", "BREADY",
    "ARID", "ARADDR", "ARLEN", "ARSIZE", "ARBURST", "ARCACHE", "ARPROT", "ARVALID", "ARREADY",
    "RID", "RDATA", "RRESP", "RLAST", "RVALID", "RREADY",
}
AXI4LITE_LOGICAL = {
    "AWADDR", "AWPROT", "AWVALID", "AWREADY", "WDATA", "WSTRB", "WVALID", "WREADY", "BRESP", "BVALID", "BREADY",
    "ARADDR", "ARPROT", "ARVALID", "ARREADY", "RDATA", "RRESP", "RVALID", "RREADY",
}
#: A small engine: its Verilog emits in seconds (the board defaults take ~25 s).
SMALL = EngineConfig(pe_ci=4, pe_co=4, dw_lanes=4, max_channels=64, weight_depth=16, line_width=32,
                     act_buffer_bytes=4096, pool_block_rows=2, dw_modes=("regular",), axi_data_bits=64,
                     clock_mhz=100.0)


def _text(el, path):
    found = el.find(path, NS)
    assert found is not None, f"{path} missing"
    return found.text


def _component(board):
    b = get_board(board)
    return ET.fromstring(v.component_xml(b.engine, b, v.accelerator_ports(b.engine, b))), b


def _interface(root, name):
    for bi in root.findall("spirit:busInterfaces/spirit:busInterface", NS):
        if _text(bi, "spirit:name") == name:
            return bi
    raise AssertionError(f"no bus interface {name}")


def _portmap(bi):
    return {_text(pm, "spirit:logicalPort/spirit:name"): _text(pm, "spirit:physicalPort/spirit:name")
            for pm in bi.findall("spirit:portMaps/spirit:portMap", NS)}


def _params(bi):
    return {_text(p, "spirit:name"): _text(p, "spirit:value")
            for p in bi.findall("spirit:parameters/spirit:parameter", NS)}


def _ports(root):
    out = {}
    for p in root.findall("spirit:model/spirit:ports/spirit:port", NS):
        left = p.find("spirit:wire/spirit:vector/spirit:left", NS)
        out[_text(p, "spirit:name")] = (_text(p, "spirit:wire/spirit:direction"),
                                        int(left.text) + 1 if left is not None else 1)
    return out


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_component_xml_interfaces_widths_and_identity(board):
    root, b = _component(board)
    ps = v.processing_system(b)
    cfg = b.engine
    assert ":".join(_text(root, f"spirit:{t}") for t in ("vendor", "library", "name", "version")) == ACCEL_VLNV
    ports = _ports(root)
    names = {_text(bi, "spirit:name") for bi in root.findall("spirit:busInterfaces/spirit:busInterface", NS)}
    assert names == {"m_axi", "s_axil", "irq", "clk", "rst"}

    m = _interface(root, "m_axi")
    assert m.find("spirit:busType", NS).get(f"{{{v.SPIRIT_NS}}}name") == "aximm"
    assert m.find("spirit:master/spirit:addressSpaceRef", NS) is not None
    pm = _portmap(m)
    assert set(pm) == AXI4_LOGICAL
    assert _params(m)["PROTOCOL"] == "AXI4"
    assert ports[pm["WDATA"]] == ("out", cfg.axi_data_bits) and ports[pm["RDATA"]] == ("in", cfg.axi_data_bits)
    assert ports[pm["WSTRB"]] == ("out", cfg.axi_data_bits // 8)
    assert ports[pm["AWADDR"]] == ("out", ps.m_axi_addr_bits) == ports[pm["ARADDR"]]
    assert ports[pm["AWLEN"]] == ("out", 8)
    space = root.find("spirit:addressSpaces/spirit:addressSpace", NS)
    assert _text(space, "spirit:name") == "m_axi"
    assert int(_text(space, "spirit:width")) == cfg.axi_data_bits
    assert int(_text(space, "spirit:range")) == 1 << ps.m_axi_addr_bits

    s = _interface(root, "s_axil")
    assert s.find("spirit:slave/spirit:memoryMapRef", NS).get(f"{{{v.SPIRIT_NS}}}memoryMapRef") == "s_axil"
    pm = _portmap(s)
    assert set(pm) == AXI4LITE_LOGICAL and _params(s)["PROTOCOL"] == "AXI4LITE"
    assert ports[pm["AWADDR"]] == ("in", ADDR_BITS) and 1 << ADDR_BITS == csr.ADDRESS_SPAN
    assert ports[pm["WDATA"]] == ("in", 32) and ports[pm["RDATA"]] == ("out", 32)

    clk = _interface(root, "clk")
    assert _portmap(clk) == {"CLK": "clk"} and ports["clk"] == ("in", 1)
    params = _params(clk)
    assert int(params["FREQ_HZ"]) == round(cfg.clock_mhz * 1e6)
    assert set(params["ASSOCIATED_BUSIF"].split(":")) == {"m_axi", "s_axil"}
    assert params["ASSOCIATED_RESET"] == "rst"
    rst = _interface(root, "rst")
    assert _portmap(rst) == {"RST": "rst"} and _params(rst)["POLARITY"] == "ACTIVE_HIGH"
    irq = _interface(root, "irq")
    assert _portmap(irq) == {"INTERRUPT": "irq"} and ports["irq"] == ("out", 1)
    assert _params(irq)["SENSITIVITY"] == "LEVEL_HIGH"
    # every port is in some interface; the file set is the Verilog of the top module
    mapped = {p for bi in root.findall("spirit:busInterfaces/spirit:busInterface", NS) for p in _portmap(bi).values()}
    assert mapped == set(ports)
    assert {f.text for f in root.findall("spirit:fileSets/spirit:fileSet/spirit:file/spirit:name", NS)} == \
        {v.HDL_FILE.as_posix()}
    views = root.findall("spirit:model/spirit:views/spirit:view/spirit:modelName", NS)
    assert {e.text for e in views} == {v.TOP_MODULE}
    assert _text(root, "spirit:vendorExtensions/xilinx:coreExtensions/xilinx:supportedFamilies/xilinx:family") == \
        ps.vivado_family


def test_component_memory_map_has_every_register_of_the_rdl():
    root, _ = _component("ultra96v2")
    mmaps = root.findall("spirit:memoryMaps/spirit:memoryMap", NS)
    assert [_text(m, "spirit:name") for m in mmaps] == ["s_axil"]
    block = mmaps[0].find("spirit:addressBlock", NS)
    assert _text(block, "spirit:name") == v.CSR_BLOCK and int(_text(block, "spirit:baseAddress"), 0) == 0
    regs = {_text(r, "spirit:name"): r for r in block.findall("spirit:register", NS)}
    assert set(regs) == set(csr.REGISTERS)
    for name, reg in csr.REGISTERS.items():
        el = regs[name]
        assert int(_text(el, "spirit:addressOffset"), 0) == reg.offset, name
        dim = el.find("spirit:dim", NS)
        assert (int(dim.text) if dim is not None else 1) == reg.count, name
        fields = {_text(f, "spirit:name"): (int(_text(f, "spirit:bitOffset")), int(_text(f, "spirit:bitWidth")))
                  for f in el.findall("spirit:field", NS)}
        assert fields == {f.name: (f.lsb, f.width) for f in reg.fields}, name
    assert int(_text(block, "spirit:range"), 0) <= csr.ADDRESS_SPAN


def test_ports_of_the_signature_are_the_ports_amaranth_emits():
    from convforge.hw.rtl.emit import emit_verilog

    b = get_board("pynqz2")
    text = emit_verilog(v.accelerator(SMALL, b), v.TOP_MODULE)
    emitted = v.verilog_ports(text, v.TOP_MODULE)
    assert sorted(emitted, key=lambda p: p.name) == sorted(v.accelerator_ports(SMALL, b), key=lambda p: p.name)
    assert any(p.name == "m_axi__awaddr" and p.width == 32 for p in emitted)  # Zynq-7000: 32-bit HP addresses
    wrong = [p if p.name != "irq" else v.Port("irq", "in", 1) for p in emitted]
    with pytest.raises(Exception, match="irq"):
        v.check_ports(v.accelerator_ports(SMALL, b), wrong)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_block_design_tcl_wires_the_ps_as_the_board_needs(board, tmp_path):
    b = get_board(board)
    ps = v.processing_system(b)
    script = tmp_path / "block_design.tcl"
    script.write_text(v.block_design_tcl(b.engine, b))
    tcl = fake_vivado.run_tcl(script, tmp_path, preamble="set convforge_board_preset 0")
    calls = fake_vivado.calls(tcl)
    cells = fake_vivado.cells(tcl)
    assert cells[ps.cell] == ps.ip and cells[ACCEL_INSTANCE] == ACCEL_VLNV
    props = fake_vivado.properties(tcl, ps.cell)
    assert float(props[ps.clock_property]) == b.engine.clock_mhz
    hp_width = "CONFIG.PSU__SAXIGP2__DATA_WIDTH" if ps.family == "xcup" else "CONFIG.PCW_S_AXI_HP0_DATA_WIDTH"
    assert int(props[hp_width]) == b.engine.axi_data_bits
    intf = {(c[1], c[2]) for c in calls if c[0] == "connect_bd_intf_net"}
    assert intf == {(f"{ps.cell}/{ps.gp_master}", "csr_interconnect/S00_AXI"),
                    ("csr_interconnect/M00_AXI", f"{ACCEL_INSTANCE}/s_axil"),
                    (f"{ACCEL_INSTANCE}/m_axi", "ddr_interconnect/S00_AXI"),
                    ("ddr_interconnect/M00_AXI", f"{ps.cell}/{ps.hp_slave}")}
    nets = [set(c[1:]) for c in calls if c[0] == "connect_bd_net"]
    assert {f"{ACCEL_INSTANCE}/irq", f"{ps.cell}/{ps.irq}"} in nets
    assert {"proc_sys_reset_0/peripheral_reset", f"{ACCEL_INSTANCE}/rst"} in nets  # active-high reset
    clock_net = next(n for n in nets if f"{ps.cell}/{ps.pl_clk}" in n)
    assert {f"{ACCEL_INSTANCE}/clk", f"{ps.cell}/{ps.gp_master_clk}", f"{ps.cell}/{ps.hp_slave_clk}"} <= clock_net
    csr_assign = next(c for c in calls if c[0] == "assign_bd_address" and "-offset" in c)
    assert int(csr_assign[csr_assign.index("-offset") + 1], 0) == csr_base_address(b.yosys_family)
    assert int(csr_assign[csr_assign.index("-range") + 1], 0) >= csr.ADDRESS_SPAN
    assert csr_assign[-2] == f"{ACCEL_INSTANCE}/s_axil/{v.CSR_BLOCK}"
    assert ("validate_bd_design",) in calls


def test_block_design_refuses_a_clock_the_ps_cannot_make(tmp_path):
    b = get_board("ultra96v2")
    script = tmp_path / "block_design.tcl"
    script.write_text(v.block_design_tcl(b.engine, b))
    with pytest.raises(Exception, match="cannot make 250 MHz"):
        fake_vivado.run_tcl(script, tmp_path, preamble="set convforge_board_preset 0", clock_ratio=0.9)


def test_engine_wider_than_the_hp_port_is_refused():
    b = get_board("pynqz2")
    with pytest.raises(ConfigError, match="axi_data_bits = 128.*at most 64"):
        v.check_engine(EngineConfig(axi_data_bits=128), b)


@pytest.mark.parametrize("wns, code", [(0.123, 0), (-0.4, 2)])
def test_build_tcl_writes_the_pynq_pair_and_timing(tmp_path, wns, code):
    b = get_board("kv260")
    project = v.write_project(SMALL, b, tmp_path / "proj", verilog=_fake_verilog(SMALL, b))
    tcl = fake_vivado.run_tcl(project.build_tcl, tmp_path, wns=wns, board_parts="xilinx.com:kv260_som:part0:1.4")
    calls = fake_vivado.calls(tcl)
    create = next(c for c in calls if c[0] == "create_project")
    assert create[create.index("-part") + 1] == b.part == "xck26-sfvc784-2LV-c"
    assert ("set_property", "board_part", "xilinx.com:kv260_som:part0:1.4") in [c[:3] for c in calls]
    assert int(tcl.getvar("convforge_board_preset")) == 1
    assert any(c[0] == "ipx::check_integrity" for c in calls)
    assert any(c[:2] == ("launch_runs", "impl_1") and "write_bitstream" in c for c in calls)
    assert int(tcl.getvar("exit_code")) == code
    for name in ("convforge.bit", "convforge.hwh"):
        assert (project.out / name).is_file()
    timing = json.loads((project.out / "timing.json").read_text())
    assert timing["wns_ns"] == wns and timing["part"] == b.part and timing["clock_mhz_requested"] == 100
    manifest = json.loads((project.out / "manifest.json").read_text())
    assert manifest["board"] == "kv260" and manifest["config"] == SMALL.to_dict()
    assert manifest["csr_base"] == 0xA000_0000


def _fake_verilog(cfg, board):
    """Verilog with exactly the accelerator's ports (the module body does not matter to the Tcl)."""
    decl = [f"  {'input' if p.direction == 'in' else 'output'} {f'[{p.width - 1}:0] ' if p.width > 1 else ''}{p.name};"
            for p in v.accelerator_ports(cfg, board)]
    names = ", ".join(p.name for p in v.accelerator_ports(cfg, board))
    return f"module {v.TOP_MODULE}({names});\n" + "\n".join(decl) + "\nendmodule\n"


def _fake_vivado_on_path(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "vivado"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(fake_vivado.__file__).resolve()} \"$@\"\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
    return exe


def _fits(monkeypatch, calls):
    from convforge.hw import estimate

    def check_fit(config, board, **kw):
        calls.append((config, board))
        return estimate.FitReport(board=board.name, title=board.title, part=board.part, family=board.yosys_family,
                                  config=config, top={"LUT": 1, "FF": 1, "DSP": 1, "BRAM36": 1}, units={},
                                  budget={k: board.budget[k] for k in estimate.RESOURCES})

    monkeypatch.setattr(estimate, "check_fit", check_fit)


def test_build_cli_runs_vivado_when_on_path(tmp_path, monkeypatch, capsys):
    from convforge.sw.cli import main

    _fake_vivado_on_path(tmp_path, monkeypatch)
    checked = []
    _fits(monkeypatch, checked)
    config = tmp_path / "small.toml"
    config.write_text(SMALL.to_toml())
    out = tmp_path / "build"
    assert main(["build", "--board", "pynq-z2", "--config", str(config), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert checked and checked[0][0] == SMALL and checked[0][1].name == "pynqz2"
    assert "convforge: PL clock 0 requested 100 MHz" in text  # Vivado's progress lines come through
    assert f"wrote {out / 'convforge.bit'} and {out / 'convforge.hwh'}" in text
    assert "WNS 0.123 ns" in text
    assert (out / "ip" / "convforge_accel" / "component.xml").is_file()


def test_build_cli_without_vivado_prints_the_command(tmp_path, monkeypatch, capsys):
    from convforge.sw.cli import main

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("XILINX_VIVADO", raising=False)
    _fits(monkeypatch, [])
    config = tmp_path / "small.toml"
    config.write_text(SMALL.to_toml())
    out = tmp_path / "build"
    assert main(["build", "--board", "ultra96v2", "--config", str(config), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"cd {out} && vivado -mode batch -source vivado/build.tcl" in text
    assert "convforge package --board ultra96v2 --build" in text
    assert not (out / "convforge.bit").exists()


def test_build_cli_refuses_a_config_that_does_not_fit_before_writing(tmp_path, monkeypatch, capsys):
    from convforge.hw import estimate
    from convforge.sw.cli import main

    def check_fit(config, board, **kw):
        raise ResourceError("the accelerator does not fit: DSP 900 of 220; shrink EngineConfig dw_lanes=8",
                            over={"DSP": (900, 220)})

    monkeypatch.setattr(estimate, "check_fit", check_fit)
    out = tmp_path / "build"
    assert main(["build", "--board", "pynq-z2", "--out", str(out)]) == 2
    assert "DSP 900 of 220" in capsys.readouterr().err
    assert not out.exists()


def test_build_cli_json_reports_timing_not_met(tmp_path, monkeypatch, capsys):
    from convforge.sw.cli import main

    _fake_vivado_on_path(tmp_path, monkeypatch)
    monkeypatch.setenv("FAKE_VIVADO_WNS", "-0.75")
    _fits(monkeypatch, [])
    config = tmp_path / "small.toml"
    config.write_text(SMALL.to_toml())
    out = tmp_path / "build"
    assert main(["build", "--board", "kv260", "--config", str(config), "--out", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["vivado"]["timing_met"] is False and report["vivado"]["timing"]["wns_ns"] == -0.75
    assert report["vivado"]["timing"]["worst_to"].endswith("out_reg/D")
    assert report["fit"]["fits"] is True and report["part"] == "xck26-sfvc784-2LV-c"
    assert "TIMING NOT MET" in captured.err  # Vivado's own line, streamed as progress


def test_build_cli_dispatches_open_source_boards(tmp_path, monkeypatch, capsys):
    """ECP5 boards go to convforge.hw.boards.ecp5.build (the open-source flow); Vivado boards do not."""
    from convforge.hw.boards import ecp5
    from convforge.sw.cli import main

    built = []

    class Result:
        def summary(self):
            return "ecp5 summary"

        def to_dict(self):
            return {}

    def fake_build(config, out, board, seed, timeout_s):
        built.append((config, out, board, seed))
        return Result()

    monkeypatch.setattr(ecp5, "build", fake_build)
    assert main(["build", "--board", "ECPIX-5", "--out", str(tmp_path / "e"), "--seed", "3"]) == 0
    assert built == [(None, tmp_path / "e", "ecpix5", 3)] and "ecp5 summary" in capsys.readouterr().out
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    _fits(monkeypatch, [])
    config = tmp_path / "small.toml"
    config.write_text(SMALL.to_toml())
    assert main(["build", "--board", "ultra96v2", "--config", str(config), "--out", str(tmp_path / "u")]) == 0
    assert len(built) == 1


@pytest.mark.slow
def test_build_refuses_a_weight_buffer_larger_than_the_part_with_the_real_estimate(tmp_path, capsys):
    """The real yosys estimate of the whole top (minutes): a PYNQ-Z2 engine whose weight buffer
    (8192 tiles of 8x16 bytes = 1 MiB) needs more BRAM36 than the XC7Z020's 140."""
    import dataclasses

    from convforge.sw.cli import main

    config = tmp_path / "big.toml"
    config.write_text(dataclasses.replace(get_board("pynqz2").engine, weight_depth=8192).to_toml())
    out = tmp_path / "build"
    assert main(["build", "--board", "pynq-z2", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "BRAM36" in err and "of 140" in err and "weight_depth=8192" in err
    assert not out.exists()
