"""The PYNQ overlay wheel: builds offline, installs into a throwaway venv, lists its overlay and
notebook under PYNQ's entry points there, and its notebook runs from the installed package on
SimDevice."""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convforge.errors import ConfigError
from convforge.hw.boards import get_board
from convforge.sw.overlay_package import (
    DEFAULT_PROGRAM,
    NOT_BUILT,
    NOTEBOOKS_GROUP,
    OVERLAYS_GROUP,
    SAMPLE_IMAGE,
    build_command,
    package,
)

_ENTRY_POINTS = """
import importlib.metadata as md, json, pathlib
out = {}
for group in ("pynq.overlays", "pynq.notebooks"):
    for ep in md.entry_points(group=group):
        if ep.dist.name.startswith("convforge-overlay"):
            mod = ep.load()
            out[group] = {"name": ep.name, "value": ep.value, "dist": ep.dist.name,
                          "files": sorted(str(p.relative_to(pathlib.Path(mod.__path__[0])))
                                          for p in pathlib.Path(mod.__path__[0]).rglob("*") if p.is_file()
                                          and "__pycache__" not in p.parts),
                          "path": mod.__path__[0]}
print(json.dumps(out))
"""

_RUN_NOTEBOOK = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
print("".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs))
"""


@pytest.fixture(scope="module")
def overlay_wheel(small_model, tmp_path_factory):
    _, program_file = small_model
    tmp = tmp_path_factory.mktemp("overlay")
    image = tmp / "small.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (90, 110, 3), dtype=np.uint8)).save(image)
    board = get_board("ultra96v2")
    return package(board, board.engine, tmp / "dist", program_files={DEFAULT_PROGRAM: program_file}, image=image)


def _venv_with(wheel, tmp_path_factory):
    """A new venv (system site packages + this environment's, for convforge and pynq) with ``wheel`` installed."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    Path(site, "convforge_test_env.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, timeout=300)
    return python, Path(site)


@pytest.fixture(scope="module")
def throwaway_venv(overlay_wheel, tmp_path_factory):
    return _venv_with(overlay_wheel.wheel, tmp_path_factory)


def test_wheel_carries_placeholder_program_notebook_and_entry_points(overlay_wheel):
    with zipfile.ZipFile(overlay_wheel.wheel) as zf:
        names = set(zf.namelist())
        info = json.loads(zf.read("convforge_overlay/board.json"))
        placeholder = zf.read(f"convforge_overlay/overlays/convforge/{NOT_BUILT}").decode()
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert overlay_wheel.wheel.name.startswith("convforge_overlay_ultra96v2-")
    shipped = ("convforge_detect.ipynb", DEFAULT_PROGRAM, SAMPLE_IMAGE)
    assert {f"convforge_overlay/notebooks/{f}" for f in shipped} <= names
    assert not any(n.endswith(".bit") for n in names) and not overlay_wheel.built
    assert build_command(get_board("ultra96v2")) in placeholder
    assert info["board"] == "ultra96v2" and info["engine"] == get_board("ultra96v2").engine.to_dict()
    assert f"[{OVERLAYS_GROUP}]\nconvforge = convforge_overlay.overlays" in entry_points
    assert f"[{NOTEBOOKS_GROUP}]\nconvforge = convforge_overlay.notebooks" in entry_points


def test_installed_wheel_lists_overlay_and_notebook_entry_points(throwaway_venv):
    python, site = throwaway_venv
    out = json.loads(subprocess.run([str(python), "-c", _ENTRY_POINTS], capture_output=True, text=True, check=True,
                                    timeout=120).stdout.strip().splitlines()[-1])
    assert set(out) == {OVERLAYS_GROUP, NOTEBOOKS_GROUP}
    assert out[OVERLAYS_GROUP]["name"] == out[NOTEBOOKS_GROUP]["name"] == "convforge"
    assert out[OVERLAYS_GROUP]["dist"] == "convforge-overlay-ultra96v2"
    assert Path(out[NOTEBOOKS_GROUP]["path"]).is_relative_to(site)  # the copy installed in the throwaway venv
    assert "convforge_detect.ipynb" in out[NOTEBOOKS_GROUP]["files"]
    assert DEFAULT_PROGRAM in out[NOTEBOOKS_GROUP]["files"]
    assert f"convforge/{NOT_BUILT}" in out[OVERLAYS_GROUP]["files"]


def test_overlay_module_names_the_build_command_without_a_bitstream(throwaway_venv):
    python, _ = throwaway_venv
    proc = subprocess.run([str(python), "-c", "from convforge_overlay import ConvforgeOverlay, program_path\n"
                           "print(program_path())\nConvforgeOverlay()"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert DEFAULT_PROGRAM in proc.stdout
    assert "FileNotFoundError" in proc.stderr and "convforge build --board ultra96v2" in proc.stderr


def test_installed_notebook_runs_on_simdevice(throwaway_venv, tmp_path):
    from convforge.sw.runtime.simdevice import write_sim_overlay

    python, site = throwaway_venv
    notebooks = site / "convforge_overlay" / "notebooks"
    env = {**os.environ, "CONVFORGE_SIMDEVICE": "emu", "CONVFORGE_SCORE_THRESH": "0.0",
           "CONVFORGE_OVERLAY": str(write_sim_overlay(tmp_path / "convforge_sim.bit", "ultra96v2"))}
    for var in ("CONVFORGE_PROGRAM", "CONVFORGE_IMAGE"):
        env.pop(var, None)  # the notebook's defaults: the packaged trees.cfprog and trees.png
    proc = subprocess.run([str(python), "-c", _RUN_NOTEBOOK, str(notebooks / "convforge_detect.ipynb"),
                           str(notebooks)], capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "convforge SimDevice (emu) - ConvforgeAccel at 0xa0000000" in proc.stdout
    assert "detections with score >= 0.0 in" in proc.stdout


def test_package_refuses_a_build_for_another_board(tmp_path, small_model):
    _, program_file = small_model
    build = tmp_path / "build"
    build.mkdir()
    for ext in ("bit", "hwh"):
        (build / f"convforge.{ext}").write_bytes(b"x")
    (build / "manifest.json").write_text(json.dumps({"board": "kv260"}))
    board = get_board("ultra96v2")
    with pytest.raises(ConfigError, match="built for board 'kv260'"):
        package(board, board.engine, tmp_path / "dist", build_dir=build,
                program_files={DEFAULT_PROGRAM: program_file}, image=program_file)


def test_packaged_bitstream_is_found_by_pynq_through_the_overlays_entry_point(small_model, tmp_path,
                                                                             tmp_path_factory):
    """A build directory whose convforge.bit is a simulated overlay: pynq's own lookup of
    ``Overlay("convforge.bit")`` (pynq.overlays entry points) finds the packaged file."""
    from convforge.sw.runtime.simdevice import write_sim_overlay

    _, program_file = small_model
    board = get_board("ultra96v2")
    build = tmp_path / "build"
    write_sim_overlay(build / "convforge.bit", board.name)
    (build / "convforge.hwh").write_text("<!-- simulated overlay: no Vivado here -->\n")
    (build / "manifest.json").write_text(json.dumps({"board": board.name, "config": board.engine.to_dict()}))
    pkg = package(board, board.engine, tmp_path / "dist", build_dir=build,
                  program_files={DEFAULT_PROGRAM: program_file}, image=program_file)
    assert pkg.built
    python, site = _venv_with(pkg.wheel, tmp_path_factory)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    code = ("import pynq, convforge.sw.runtime.driver\n"
            "from convforge_overlay import ConvforgeOverlay\n"
            "ov = pynq.Overlay('convforge.bit')\n"
            "print(ov.bitfile_name, type(ov.convforge_0).__name__)\n"
            "print(ConvforgeOverlay().convforge_0.engine_config().pe_ci)\n")
    proc = subprocess.run([str(python), "-c", code], cwd=elsewhere, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CONVFORGE_SIMDEVICE": "emu"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = proc.stdout.strip().splitlines()[-2:]
    assert first == f"{site / 'convforge_overlay' / 'overlays' / 'convforge' / 'convforge.bit'} ConvforgeAccel"
    assert int(second) == board.engine.pe_ci
