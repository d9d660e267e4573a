"""The PYNQ notebook in notebooks/ runs unchanged on SimDevice emu (executed with nbclient)."""

from pathlib import Path

import numpy as np
from PIL import Image

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "convforge_detect.ipynb"


def test_board_notebook_executes_on_simdevice(tmp_path, small_model, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from convforge.sw.runtime.simdevice import write_sim_overlay

    _, program_file = small_model
    image = tmp_path / "trees.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (100, 120, 3), dtype=np.uint8)).save(image)
    monkeypatch.setenv("CONVFORGE_SIMDEVICE", "emu")
    monkeypatch.setenv("CONVFORGE_OVERLAY", str(write_sim_overlay(tmp_path / "convforge_sim.bit")))
    monkeypatch.setenv("CONVFORGE_PROGRAM", str(program_file))
    monkeypatch.setenv("CONVFORGE_IMAGE", str(image))
    monkeypatch.setenv("CONVFORGE_SCORE_THRESH", "0.0")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "convforge SimDevice (emu) - ConvforgeAccel at 0xa0000000" in text
    assert "detections with score >= 0.0 in 1 frame(s)" in text
    assert "fps at 250 MHz" in text
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 2  # the boxes, the per-layer / per-unit plot
