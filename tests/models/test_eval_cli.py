"""``convforge eval`` on the shipped tree-crown detector, and its error paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convforge.models.quant.qgraph import QGraph
from convforge.models.train.checkpoint import load_checkpoint
from convforge.models.train.zoo import default_checkpoint, default_qgraph
from convforge.sw.cli import main

KEYS = {"ap50", "images", "backend", "detections", "gt_boxes", "input_size", "checkpoint", "data"}


def _eval_json(capsys, *argv: str) -> dict:
    rc = main(["eval", "--json", *argv])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


def test_shipped_model_files_are_consistent():
    doc = load_checkpoint(default_checkpoint())
    assert doc["phase"] == "qat" and "float_state_dict" in doc and "optimizer" not in doc
    assert default_checkpoint().stat().st_size <= 5_000_000  # issue 12: a shipped checkpoint is <= 5 MB
    graph = QGraph.load(default_qgraph())
    assert doc["qgraph"] == default_qgraph().name
    assert graph.tensors[graph.input].shape == (3, doc["train"]["export_size"], doc["train"]["export_size"])
    assert set(graph.outputs) == {"hm", "wh", "reg"}


@pytest.mark.parametrize("backend", ["float", "int"])
def test_eval_json_on_shipped_model(capsys, tmp_path, backend):
    res = _eval_json(capsys, "--backend", backend, "--limit", "1", "--plots", str(tmp_path))
    assert KEYS <= set(res)
    assert res["backend"] == backend and res["images"] == 1 and res["data"] == "trees:test"
    assert 0.0 <= res["ap50"] <= 1.0
    assert res["detections"] > 0 and res["gt_boxes"] > 0
    assert any(p.endswith(".png") and "pr_" in p for p in res["plots"])
    assert all((tmp_path / p.split("/")[-1]).is_file() for p in res["plots"])
    if backend == "int":
        assert res["qgraph"].endswith(default_qgraph().name)


def test_eval_corrupt_checkpoint_is_a_clean_error(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    rc = main(["eval", "--checkpoint", str(bad), "--backend", "float", "--limit", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "bad.pt" in err and "Traceback" not in err


def test_eval_qgraph_size_mismatch_is_refused(capsys):
    graph = QGraph.load(default_qgraph())
    _, h, _ = graph.tensors[graph.input].shape
    other = 64 if h != 64 else 96
    argv = ["eval", "--backend", "int", "--input-size", str(other), "--qgraph", str(default_qgraph()), "--limit", "1"]
    rc = main(argv)
    assert rc == 2
    assert f"{other}x{other}" in capsys.readouterr().err
