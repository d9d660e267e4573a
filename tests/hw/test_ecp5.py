"""``convforge.hw.boards.ecp5``: the scan harness carries every port bit (Amaranth
simulation), the board profile loads, nextpnr's report is read; the real place and route
is ``slow``."""

import json

import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from convforge.errors import ConfigError, SimulationError
from convforge.hw.boards.ecp5 import ScanHarness, ecp5_boards, get_ecp5_board, parse_report
from convforge.hw.config import EngineConfig


class _Dut(wiring.Component):
    """y = a + b (registered), z = ~a (combinational): outputs depend on every input bit."""

    a: In(5)
    b: In(3)
    y: Out(6)
    z: Out(5)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.y.eq(self.a + self.b)
        m.d.comb += self.z.eq(~self.a)
        return m


def test_scan_harness_shifts_inputs_in_and_outputs_out():
    si, cap, so = Signal(), Signal(), Signal()
    dut = _Dut()
    h = ScanHarness(dut, pins=(si, cap, so))
    assert (h.in_bits, h.out_bits) == (8, 11)
    a, b = 0b10110, 0b101
    got = []

    async def bench(ctx):
        word = a | b << 5                       # flatten order: a then b, LSB first
        for i in range(8):
            ctx.set(si, word >> i & 1)
            await ctx.tick()
        ctx.set(cap, 1)                         # inputs hold; y registers a + b
        await ctx.tick().repeat(2)
        ctx.set(cap, 0)
        for _ in range(11):
            got.append(ctx.get(so))
            await ctx.tick()

    sim = Simulator(h)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    value = sum(bit << i for i, bit in enumerate(got))
    assert value & 0x3F == a + b and value >> 6 == (~a & 0x1F)


def test_ecpix5_profile_loads_and_unknown_board_is_named():
    board = get_ecp5_board("ECPIX-5")
    assert board.platform.startswith("amaranth_boards.ecpix5:") and board.scan_connector == ("pmod", 0)
    assert isinstance(board.engine, EngineConfig) and board.engine.clock_mhz == 100.0
    assert "ecpix5" in ecp5_boards()
    with pytest.raises(ConfigError, match="known: ecpix5"):
        get_ecp5_board("orangecrab9000")


def test_parse_report_takes_the_slowest_clock_and_its_path():
    report = {
        "utilization": {"TRELLIS_COMB": {"used": 1200, "available": 83640},
                        "DP16KD": {"used": 4, "available": 208}},
        "fmax": {"clk100_0__io": {"achieved": 71.25, "constraint": 100.0}},
        "critical_paths": [{"from": "<async>", "to": "posedge clk100_0__io", "path": [
            {"type": "routing", "from": {"cell": "io"}, "to": {"cell": "ff_x"}, "delay": 20.0}]},
                           {"from": "posedge clk100_0__io", "to": "posedge clk100_0__io", "path": [
            {"type": "clk-to-q", "from": {"cell": "ff_a"}, "to": {"cell": "ff_a"}, "delay": 0.5},
            {"type": "routing", "from": {"cell": "ff_a"}, "to": {"cell": "lut1"}, "delay": 3.0},
            {"type": "logic", "from": {"cell": "lut1"}, "to": {"cell": "lut1"}, "delay": 0.4},
            {"type": "routing", "from": {"cell": "lut1"}, "to": {"cell": "ff_b"}, "delay": 9.0,
             "sources": ["hw/rtl/dma.py:10", "/share/lattice/cells_map_trellis.v:108.23-108.24",
                         "hw/rtl/controller.py:20"]},
            {"type": "setup", "from": {"cell": "ff_b"}, "to": {"cell": "ff_b"}, "delay": 1.1}]}],
    }
    util, fmax, constraint, path = parse_report(json.loads(json.dumps(report)))
    assert util["DP16KD"] == {"used": 4, "available": 208} and (fmax, constraint) == (71.25, 100.0)
    assert path["from"] == "ff_a" and path["to"] == "ff_b" and path["cells"] == 1
    assert path["routing_ns"] == 12.0 and abs(path["delay_ns"] - 14.0) < 1e-9
    assert path["sources"] == ["hw/rtl/dma.py:10", "hw/rtl/controller.py:20"]
    with pytest.raises(SimulationError, match="no Fmax"):
        parse_report({"utilization": {}})


@pytest.mark.slow
def test_ecpix5_place_and_route_writes_a_bitstream(tmp_path):
    from convforge.hw.boards.ecp5 import build

    small = EngineConfig(pe_ci=2, pe_co=2, dw_lanes=2, axi_data_bits=32, max_channels=64,
                         weight_depth=16, clock_mhz=100.0)
    result = build(small, tmp_path, "ecpix5", timeout_s=3 * 3600)
    assert result.bitstream.is_file() and result.bitstream_bytes > 100_000
    assert result.utilisation["TRELLIS_FF"]["used"] > 1000
    assert 5.0 < result.fmax_mhz < 500.0 and result.critical_path["delay_ns"] > 0
