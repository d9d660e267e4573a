"""`convforge detect` end to end: the driver on SimDevice emu gives the integer reference's boxes."""

import json

import numpy as np
import pytest
from PIL import Image

from convforge.sw.cli import main


def _run(capsys, *argv):
    rc = main(["detect", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured


def _detect_json(capsys, image, toml, backends, *, size, overlap, out):
    """``convforge detect --json`` on ``image`` per backend (exit 0 asserted) -> {backend: JSON}."""
    results = {}
    for backend in backends:
        options = ["--input-size", size, "--config", toml, "--overlap", overlap, "--score-thresh", 0.01]
        rc, cap = _run(capsys, image, "--backend", backend, *options, "--out", out / backend, "--json")
        assert rc == 0, cap.err
        results[backend] = json.loads(cap.out)
    return results


def test_detect_on_simdevice_emu_equals_the_integer_reference(tmp_path, capsys):
    rng = np.random.default_rng(3)
    image = tmp_path / "field.jpg"
    Image.fromarray(rng.integers(0, 256, (240, 330, 3), dtype=np.uint8)).save(image)
    results = {}
    for backend in ("emu", "int"):
        rc, cap = _run(capsys, image, "--backend", backend, "--out", tmp_path / backend, "--score-thresh", "0.05",
                       "--json")  # fmt: skip
        assert rc == 0, cap.err
        results[backend] = json.loads(cap.out)
        assert json.loads((tmp_path / backend / "detections.json").read_text()) == results[backend]
        assert (tmp_path / backend / "field_detections.png").stat().st_size > 0
    emu, ref = results["emu"]["images"][0], results["int"]["images"][0]
    assert (emu["width"], emu["height"], emu["views"]) == (330, 240, 1)
    assert emu["detections"] and emu["detections"] == ref["detections"]
    assert all(0 <= d["box"][0] <= d["box"][2] <= 330 and 0 <= d["box"][1] <= d["box"][3] <= 240
               for d in emu["detections"])  # fmt: skip
    counters = emu["frames"][0]["counters"]
    assert counters["cycles"] > 0 and counters["ddr_write_bytes"] > 0 and counters["fps_at_clock"] > 0
    assert results["emu"]["session"]["device"] == "convforge SimDevice (emu)"


def test_a_file_that_is_not_an_image_is_a_clear_error_naming_it(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not pixels")
    rc, cap = _run(capsys, bad, "--backend", "int", "--out", tmp_path)
    assert rc == 2
    assert "cannot read image" in cap.err and "notes.png" in cap.err and len(cap.err.strip().splitlines()) == 1


def test_pynq_backend_without_a_board_says_what_is_missing(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    rc, cap = _run(capsys, image, "--backend", "pynq", "--out", tmp_path)
    assert rc == 2
    assert "found no programmable-logic device" in cap.err and "--overlay" in cap.err


def _small_config(tmp_path):
    from convforge.sim.regress_accel import ACCEL_TEST_CONFIG

    path = tmp_path / "small_engine.toml"
    path.write_text(ACCEL_TEST_CONFIG.to_toml())
    return ACCEL_TEST_CONFIG, path


def test_input_size_and_config_reach_the_network_and_the_simulated_overlay(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (70, 50, 3), dtype=np.uint8)).save(image)
    engine, toml = _small_config(tmp_path)
    # an overlap the input cannot take is refused before any backend opens
    rc, cap = _run(capsys, image, "--backend", "rtl", "--input-size", "32", "--out", tmp_path)
    assert rc == 2 and "--overlap 64 px must be below the network input side 32 px" in cap.err
    results = _detect_json(capsys, image, toml, ("emu", "int"), size=64, overlap=8, out=tmp_path)
    assert results["emu"]["session"]["engine"] == engine.to_dict()
    assert results["emu"]["images"][0]["detections"] == results["int"]["images"][0]["detections"]


@pytest.mark.slow  # ~1 min: one 32x32 frame of the small engine in Verilator
@pytest.mark.simulator("verilator")
def test_detect_on_simdevice_rtl_equals_the_integer_reference(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(image)
    engine, toml = _small_config(tmp_path)
    results = _detect_json(capsys, image, toml, ("rtl", "int"), size=32, overlap=0, out=tmp_path)
    rtl = results["rtl"]
    assert rtl["session"]["device"] == "convforge SimDevice (rtl)" and rtl["session"]["engine"] == engine.to_dict()
    assert rtl["images"][0]["detections"] == results["int"]["images"][0]["detections"]
    assert rtl["images"][0]["frames"][0]["counters"]["cycles"] > 0
