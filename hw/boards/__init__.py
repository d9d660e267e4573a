"""Board profiles: the Zynq boards convforge targets and a default engine for each."""

from __future__ import annotations

from dataclasses import dataclass, field

from convforge.errors import ConfigError
from convforge.hw.config import EngineConfig


@dataclass(frozen=True)
class Board:
    """A board: its FPGA part, resource budget and a default EngineConfig sized for it."""

    name: str
    title: str
    part: str
    #: Yosys ``synth_xilinx -family`` name for resource estimates.
    yosys_family: str
    dsp: int
    bram36: int
    lut: int
    ff: int
    uram: int = 0
    engine: EngineConfig = field(default_factory=EngineConfig)
    #: Sustained DDR bandwidth the programmable logic reaches, in GB/s (10**9 bytes/s):
    #: half the DRAM's peak (burst efficiency of strided NHWC tile transfers). The cycle
    #: model (:mod:`convforge.sw.compiler.cycles`) turns it into bytes per engine cycle.
    ddr_gbps: float = 4.0

    def ddr_bytes_per_cycle(self, clock_mhz: float | None = None) -> float:
        """DDR bytes per cycle of the engine clock (``clock_mhz`` or the engine's)."""
        clock = self.engine.clock_mhz if clock_mhz is None else clock_mhz
        return self.ddr_gbps * 1e3 / clock

    @property
    def budget(self) -> dict[str, int]:
        return {"LUT": self.lut, "FF": self.ff, "DSP": self.dsp, "BRAM36": self.bram36, "URAM": self.uram}


BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board(
            name="ultra96v2",
            title="Avnet Ultra96-V2 (Zynq UltraScale+ ZU3EG)",
            part="xczu3eg-sbva484-1-i",
            yosys_family="xcup",
            dsp=360,
            bram36=216,
            lut=70_560,
            ff=141_120,
            # max_channels 4096: CoDeNet d/e's decoder reads 2153 channels per pixel
            engine=EngineConfig(pe_ci=16, pe_co=16, dw_lanes=16, clock_mhz=250.0, max_channels=4096),
            # LPDDR4-2133, 32 bits: 8.5 GB/s peak
            ddr_gbps=4.2,
        ),
        Board(
            name="pynqz2",
            title="TUL PYNQ-Z2 (Zynq-7000 XC7Z020)",
            part="xc7z020clg400-1",
            yosys_family="xc7",
            dsp=220,
            bram36=140,
            lut=53_200,
            ff=106_400,
            engine=EngineConfig(pe_ci=8, pe_co=16, dw_lanes=8, axi_data_bits=64, clock_mhz=125.0,
                                max_channels=4096),
            # DDR3-1066, 16 bits: 4.3 GB/s peak
            ddr_gbps=2.1,
        ),
        Board(
            name="kv260",
            title="AMD Kria KV260 (Zynq UltraScale+ K26)",
            part="xck26-sfvc784-2LV-c",
            yosys_family="xcup",
            dsp=1_248,
            bram36=144,
            lut=117_120,
            ff=234_240,
            uram=64,
            # weight_depth 512: a 32x32 tile is one 8192-bit word, 114 BRAM36 wide in their
            # 512 x 72 shape, so 512 tiles (512 KiB) cost what 256 do (136 of the K26's 144 BRAM36
            # for the top, yosys estimate); the default 1024 took 250
            engine=EngineConfig(pe_ci=32, pe_co=32, dw_lanes=32, clock_mhz=250.0, max_channels=4096,
                                weight_depth=512),
            # DDR4-2400, 64 bits: 19.2 GB/s peak
            ddr_gbps=9.6,
        ),
    )
}

DEFAULT_BOARD = "ultra96v2"


def get_board(name: str) -> Board:
    """Look a board up by name; unknown names list the known ones."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in BOARDS:
        raise ConfigError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[key]
