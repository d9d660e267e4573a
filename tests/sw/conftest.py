"""Fixtures for the driver tests: a SimDevice with an overlay loaded."""

import pytest


@pytest.fixture
def sim_overlay(tmp_path):
    """``(device, overlay)``: the emu SimDevice active in pynq and the Ultra96-V2 simulated overlay loaded."""
    import pynq

    from convforge.sw.runtime import simdevice
    from convforge.sw.runtime.driver import ConvforgeAccel  # noqa: F401  (registers the driver)

    dev = simdevice.use_simdevice("emu")
    path = simdevice.write_sim_overlay(tmp_path / "convforge_sim.bit", "ultra96v2")
    return dev, pynq.Overlay(str(path))
