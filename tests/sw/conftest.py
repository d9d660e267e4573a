"""Fixtures for the sw tests: helper modules beside the tests on sys.path; for the driver tests,
the CoDeNet reference model (zoo.CODENET_NAME) compiled small and a SimDevice with an overlay loaded."""

import sys
from pathlib import Path

import pytest

from convforge.hw.boards import get_board

sys.path.insert(0, str(Path(__file__).parent))

SIZE = 96  # the CoDeNet reference tree model, re-exported at a small input so the test stays fast


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """``(qgraph, program file)``: the CoDeNet reference model at SIZE x SIZE, compiled for the Ultra96-V2 engine."""
    from convforge.models.quant.export import export_qgraph
    from convforge.models.train.checkpoint import load_checkpoint
    from convforge.models.train.inference import qat_model
    from convforge.models.train.zoo import CODENET_NAME, get_model
    from convforge.sw.compiler import compile as compile_program

    path = get_model(CODENET_NAME).checkpoint
    graph = export_qgraph(qat_model(load_checkpoint(path), path).eval(), (SIZE, SIZE))
    program = compile_program(graph, get_board("ultra96v2").engine)
    return graph, program.save(tmp_path_factory.mktemp("prog") / "trees96.cfprog")


@pytest.fixture
def sim_overlay(tmp_path):
    """``(device, overlay)``: the emu SimDevice active in pynq and the Ultra96-V2 simulated overlay loaded."""
    import pynq

    from convforge.sw.runtime import simdevice
    from convforge.sw.runtime.driver import ConvforgeAccel  # noqa: F401  (registers the driver)

    dev = simdevice.use_simdevice("emu")
    path = simdevice.write_sim_overlay(tmp_path / "convforge_sim.bit", "ultra96v2")
    return dev, pynq.Overlay(str(path))
