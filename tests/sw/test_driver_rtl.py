"""The PYNQ driver on SimDevice ``rtl``: the Verilator model of the accelerator top behind the
driver's MMIO and buffers (convforge.sim.bridge). Bit-exact with the integer reference and
with SimDevice emu, counters from the RTL's CSRs, a hardware fault naming the layer, the
interrupt line, and a simulator that dies or hangs giving a SimulationError.

The CoDeNet reference tree model (zoo.CODENET_NAME) at 32x32 (the smallest input its stride-32 backbone takes), compiled
for the small engine the accelerator tests use (convforge.sim.regress_accel.ACCEL_TEST_CONFIG).
"""

import os
import signal
import time

import numpy as np
import pytest
import torch

from convforge.errors import SimulationError
from convforge.hw.layouts import csr

SIZE = 32
pytestmark = pytest.mark.simulator("verilator")


@pytest.fixture(scope="module")
def model32(tmp_path_factory):
    """``(qgraph, Program file)``: the CoDeNet reference model at SIZE x SIZE for ACCEL_TEST_CONFIG."""
    from convforge.models.quant.export import export_qgraph
    from convforge.models.train.checkpoint import load_checkpoint
    from convforge.models.train.inference import qat_model
    from convforge.models.train.zoo import CODENET_NAME, get_model
    from convforge.sim.regress_accel import ACCEL_TEST_CONFIG
    from convforge.sw.compiler import compile as compile_program

    path = get_model(CODENET_NAME).checkpoint
    graph = export_qgraph(qat_model(load_checkpoint(path), path).eval(), (SIZE, SIZE))
    program = compile_program(graph, ACCEL_TEST_CONFIG)
    return graph, program.save(tmp_path_factory.mktemp("prog") / f"trees{SIZE}.cfprog")


def _overlay(tmp_path, backend, device=None):
    """(device, overlay) of a simulated Ultra96-V2 overlay whose engine is ACCEL_TEST_CONFIG."""
    import pynq

    from convforge.sim.regress_accel import ACCEL_TEST_CONFIG
    from convforge.sw.runtime import simdevice
    from convforge.sw.runtime.driver import ConvforgeAccel  # noqa: F401  (registers the driver)

    dev = device or simdevice.use_simdevice(backend)
    pynq.Device.active_device = dev
    path = simdevice.write_sim_overlay(tmp_path / f"{backend}.bit", "ultra96v2", engine=ACCEL_TEST_CONFIG)
    return dev, pynq.Overlay(str(path), device=dev)


@pytest.fixture(scope="module")
def rtl(tmp_path_factory):
    """``(device, driver)``: SimDevice rtl with the overlay loaded (one simulation for the module)."""
    dev, ol = _overlay(tmp_path_factory.mktemp("rtl"), "rtl")
    yield dev, ol.convforge_0
    dev.close()


@pytest.fixture(autouse=True)
def _active(request):
    # pynq.allocate places buffers on the active device; other tests switch it.
    if "rtl" in request.fixturenames:
        import pynq

        pynq.Device.active_device = request.getfixturevalue("rtl")[0]


def _image():
    from convforge.models.data import get_dataset

    return get_dataset("trees:test", input_size=SIZE)[0].image


def test_rtl_driver_equals_the_integer_reference_and_emu_with_counters_from_the_rtl(rtl, model32, tmp_path):
    from convforge.models.eval import decode_int
    from convforge.models.quant.executor import run_qgraph
    from convforge.models.train.evaluate import head_scales

    dev, accel = rtl
    from convforge.sw.runtime.program import Program

    graph, program_file = model32
    program = Program.load(program_file)
    image = _image()
    accel.load(program)
    before = dev.csr.cycle
    frame = accel.run(image, timeout_s=900)
    simulated = dev.csr.cycle - before
    want = {h: v[0].numpy() for h, v in run_qgraph(graph, image).items() if h in ("hm", "wh", "reg")}
    for head in ("hm", "wh", "reg"):
        assert np.array_equal(frame.outputs[head], want[head]), head
    scales = head_scales(graph)
    got_d, want_d = (decode_int(*(torch.as_tensor(np.asarray(heads[h])).reshape(1, *heads[h].shape[-3:])
                                  for h in ("hm", "wh", "reg")), scales)[0] for heads in (frame.outputs, want))
    assert np.array_equal(got_d.boxes, want_d.boxes) and np.array_equal(got_d.scores, want_d.scores)

    # the counters are the RTL's: the frame's cycles fit in the clock cycles the simulation ran
    c = frame.counters
    assert 0 < c["cycles"] <= simulated, (c["cycles"], simulated)
    assert all(0 <= b <= c["cycles"] for b in c["busy_cycles"].values())
    assert c["busy_cycles"]["pointwise"] > 0 and c["busy_cycles"]["dma"] > 0
    assert c["ddr_read_bytes"] >= program.n_descriptors * 64 and c["ddr_write_bytes"] > 0
    assert frame.wait == "poll"

    # SimDevice emu, same driver code, same integers
    _, ol = _overlay(tmp_path, "emu")
    emu = ol.convforge_0
    emu.load(program)
    emu_frame = emu.run(image)
    assert all(np.array_equal(emu_frame.outputs[h], frame.outputs[h]) for h in ("hm", "wh", "reg"))


def test_rtl_hardware_fault_names_the_layer_and_raises_the_interrupt_line(rtl, model32):
    from convforge.hw.layouts import DESCRIPTOR_BYTES, descriptor_layout
    from convforge.sw.runtime.driver import AcceleratorError
    from convforge.sw.runtime.program import Program

    dev, accel = rtl
    bad = Program.load(model32[1])
    k = 3
    layer = bad.descriptors[k]["layer"]
    width = descriptor_layout(bad.config)["opcode"].width
    bad.image[bad.program_offset + k * DESCRIPTOR_BYTES] |= (1 << width) - 1  # no such opcode
    accel.load(bad)
    with pytest.raises(AcceleratorError, match=rf"descriptor {k} \(layer '{layer}'\) with error BAD_OPCODE"):
        accel.run(_image(), timeout_s=120)
    # The driver soft-reset the engine after the error (IRQ_STATUS cleared). The same frame
    # started by hand with CTRL.irq_enable: the irq output rises through the bridge when it
    # ends, with IRQ_STATUS done|error, and falls when IRQ_STATUS is written 1 to clear.
    assert accel.read(csr.ADDR_IRQ_STATUS) == 0 and not dev.csr.irq
    base = int(accel._buffer.device_address)
    for reg, value in ((csr.ADDR_BASE_ADDR_LO, base), (csr.ADDR_BASE_ADDR_HI, 0),
                       (csr.ADDR_BUF_BYTES, bad.buffer_bytes), (csr.ADDR_PROG_OFFSET, bad.program_offset),
                       (csr.ADDR_PROG_LENGTH, bad.n_descriptors)):
        accel.write(reg, value)
    ctrl = csr.REGISTERS["CTRL"]
    accel.write(csr.ADDR_CTRL, ctrl.field("irq_enable").mask | ctrl.field("start").mask)
    deadline = time.monotonic() + 60
    while not dev.csr.irq:
        assert time.monotonic() < deadline, "irq never rose"
    assert accel.read(csr.ADDR_IRQ_STATUS) == 0b11 and accel.read(csr.ADDR_ERR_INDEX) == k
    status = accel.read(csr.ADDR_STATUS)
    assert csr.REGISTERS["STATUS"].field("error_code").get(status) == csr.ErrorCode.BAD_OPCODE
    accel.write(csr.ADDR_IRQ_STATUS, 0b11)
    assert not dev.csr.irq and accel.read(csr.ADDR_IRQ_STATUS) == 0
    accel.write(csr.ADDR_CTRL, 0)


def test_rtl_simulator_that_hangs_or_dies_gives_a_simulation_error_naming_the_log(tmp_path):
    from convforge.sw.runtime.simdevice import SimDevice

    dev, ol = _overlay(tmp_path, "rtl", device=SimDevice("rtl"))
    accel = ol.convforge_0
    try:
        sim = dev.csr
        assert accel.read(csr.ADDR_ID) == csr.ID_MAGIC
        # hung: stopped, it answers nothing; the request times out and the child is killed
        sim.request_timeout_s = 1.0
        os.kill(sim.pid, signal.SIGSTOP)
        with pytest.raises(SimulationError, match=r"did not answer read within 1 s and was killed.*; log: .*sim\.log"):
            accel.read(csr.ADDR_STATUS)
        with pytest.raises(SimulationError, match="earlier"):
            accel.read(csr.ADDR_STATUS)
        # died: a fresh simulation, killed under the driver
        _, ol = _overlay(tmp_path, "rtl", device=dev)
        accel = ol.convforge_0
        os.kill(dev.csr.pid, signal.SIGKILL)
        with pytest.raises(SimulationError, match=r"closed the connection during read .*killed by signal 9.*sim\.log"):
            accel.engine_config()
    finally:
        dev.close()
