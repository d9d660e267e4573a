"""SimDevice: a pynq device from pynq's own registry; overlay, MMIO and buffers as on a board."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from convforge.errors import ConfigError, SimulationError
from convforge.hw.boards import get_board
from convforge.hw.ip import ACCEL_VLNV
from convforge.hw.layouts import csr


def _probe(env_value):
    env = {k: v for k, v in os.environ.items() if k != "CONVFORGE_SIMDEVICE"}
    if env_value is not None:
        env["CONVFORGE_SIMDEVICE"] = env_value
    code = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "import pynq, convforge.sw.runtime.driver\n"
        "print([type(d).__name__ for d in pynq.Device.devices])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_plain_pynq_is_untouched_without_the_environment_variable():
    assert _probe(None) == "[]"


def test_environment_variable_registers_simdevice_through_pynq_probe():
    assert _probe("emu") == "['SimDevice']"


def test_overlay_binds_the_convforge_driver_and_reports_the_board_engine(sim_overlay):
    import pynq

    from convforge.sw.runtime.driver import ConvforgeAccel

    dev, ol = sim_overlay
    assert pynq.Device.active_device is dev
    assert ol.is_loaded() and ol.ip_dict["convforge_0"]["type"] == ACCEL_VLNV
    accel = ol.convforge_0
    assert isinstance(accel, ConvforgeAccel)
    assert accel.mmio.base_addr == 0xA000_0000
    assert accel.read(csr.ADDR_ID) == csr.ID_MAGIC
    assert accel.engine_config() == get_board("ultra96v2").engine


def test_pynqz2_overlay_reports_its_own_engine(tmp_path):
    import pynq

    from convforge.sw.runtime import simdevice

    simdevice.use_simdevice("emu")
    ol = pynq.Overlay(str(simdevice.write_sim_overlay(tmp_path / "z2.bit", "pynqz2")))
    assert ol.convforge_0.mmio.base_addr == 0x4000_0000
    assert ol.convforge_0.engine_config() == get_board("pynqz2").engine


def test_buffers_are_not_coherent_until_synced(sim_overlay):
    import pynq

    dev, _ = sim_overlay
    buf = pynq.allocate((4096,), np.uint8)
    device_side, offset = dev.default_memory.device_bytes(buf.device_address + 100)
    assert offset == 100 and buf.device_address % 4096 == 0
    buf[:] = 7
    assert not device_side.any()  # a host write the driver did not flush is invisible to the device
    buf[96:104].sync_to_device()
    assert np.array_equal(np.nonzero(device_side)[0], np.arange(96, 104))
    device_side[:] = 3
    assert (buf == 7).all()
    buf[:8].sync_from_device()
    assert (buf[:8] == 3).all() and (buf[8:] == 7).all()


def test_csr_model_follows_the_register_map_access_types(sim_overlay):
    _, ol = sim_overlay
    accel = ol.convforge_0
    accel.write(csr.ADDR_ID, 0)  # const: write ignored
    assert accel.read(csr.ADDR_ID) == csr.ID_MAGIC
    accel.write(csr.ADDR_PROG_OFFSET, 0x1234)  # rw
    assert accel.read(csr.ADDR_PROG_OFFSET) == 0x1234
    accel.write(csr.ADDR_CTRL, 0b111)  # start and soft_reset pulse and read 0; irq_enable holds
    assert accel.read(csr.ADDR_CTRL) == 0b100
    dev = ol.device
    dev.csr.words[csr.ADDR_IRQ_STATUS] = 0b11
    accel.write(csr.ADDR_IRQ_STATUS, 0b01)  # w1c
    assert accel.read(csr.ADDR_IRQ_STATUS) == 0b10
    dev.csr._set64("CYCLES_LO", (5 << 32) | 9)
    assert accel.read(csr.ADDR_CYCLES_HI) == 0  # not latched yet
    assert accel.read(csr.ADDR_CYCLES_LO) == 9 and accel.read(csr.ADDR_CYCLES_HI) == 5
    with pytest.raises(SimulationError, match="0x1c.*SLVERR"):
        accel.read(0x1C)


def test_start_without_a_buffer_at_the_base_address_ends_with_decerr(sim_overlay):
    _, ol = sim_overlay
    accel = ol.convforge_0
    accel.write(csr.ADDR_BASE_ADDR_LO, 0x1234)
    accel.write(csr.ADDR_CTRL, 1)
    status = accel.read(csr.ADDR_STATUS)
    assert csr.REGISTERS["STATUS"].field("done").get(status) == 1
    assert csr.REGISTERS["STATUS"].field("error_code").get(status) == csr.ErrorCode.AXI_DECERR
    assert accel.read(csr.ADDR_IRQ_STATUS) == 0b11  # done and error events


def test_device_that_never_raises_done_times_out_naming_the_register_state(tmp_path, monkeypatch):
    import pynq

    from convforge.sw.runtime import simdevice
    from convforge.sw.runtime.driver import AcceleratorError

    class NeverDone:
        def run(self, memory, program_offset, n_descriptors):
            return None

    from convforge.sw.runtime.csr_model import CsrModel

    monkeypatch.setattr(simdevice, "make_backend",
                        lambda name, overlay, memory: CsrModel(overlay.engine, NeverDone(), memory))
    simdevice.use_simdevice("emu")
    accel = pynq.Overlay(str(simdevice.write_sim_overlay(tmp_path / "hang.bit"))).convforge_0
    buf = pynq.allocate((64,), np.uint8)
    accel.write(csr.ADDR_BASE_ADDR_LO, buf.device_address)
    ol_csr = accel.device.csr
    ol_csr.words[csr.ADDR_IRQ_STATUS] = 0b01  # an event of an earlier frame, not yet cleared
    accel.write(csr.ADDR_CTRL, 1)
    assert accel.read(csr.ADDR_IRQ_STATUS) == 0b01  # START clears STATUS, not the sticky events
    t0 = time.perf_counter()
    with pytest.raises(AcceleratorError, match=r"within 0.2 s.*STATUS=0x00000001 \(busy=1 done=0"):
        accel._wait_done(0.2, t0)
    assert time.perf_counter() - t0 < 5
    assert accel.read(csr.ADDR_STATUS) == 0  # soft-reset after the timeout


def test_sim_overlay_file_errors_name_the_file(tmp_path):
    from convforge.sw.runtime.simdevice import read_sim_overlay

    bad = tmp_path / "convforge.bit"
    bad.write_bytes(b"\x00\x09\x0f\xf0 a real bitstream")
    with pytest.raises(ConfigError, match="convforge.bit: not a convforge simulated overlay"):
        read_sim_overlay(bad)
    with pytest.raises(ConfigError, match="unknown SimDevice backend"):
        from convforge.sw.runtime.simdevice import SimDevice

        SimDevice("fpga")
