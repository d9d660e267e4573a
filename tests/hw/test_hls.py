"""HLS generation through hls4ml: bit-exact C simulation against the integer reference.

Each compiled C simulation is cached under ``build/hls`` by a hash of its sources, so a
second run of these tests loads the libraries instead of compiling them (~1 min each).
"""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from convforge.hw.hls.cases import KINDS, layer_case, random_images
from convforge.hw.hls.convert import HLSConversionError, qgraph_to_spec
from convforge.hw.hls.csim import csim_check
from convforge.hw.hls.project import write_project
from convforge.models.quant.executor import run_qgraph
from convforge.models.quant.qgraph import Layer, QGraph, TensorType
from convforge.models.train.zoo import CODENET_NAME, get_model
from convforge.sw.cli import main

N_IMAGES = 16


def _grouped_graph(groups: int = 2, dilation: int = 1) -> QGraph:
    """uint8 RGB image -> 1x1 stem to 4 channels -> a 3x3 conv with ``groups``/``dilation``."""
    t = {"image": TensorType((3, 6, 6)), "x": TensorType((4, 6, 6)), "y": TensorType((4, 6, 6))}
    requant = {"bias": np.zeros(4, dtype=np.int64), "M": np.full(4, 1 << 14), "S": np.full(4, 20)}
    stem = Layer("stem", "conv", ["image"], ["x"],
                 {"kernel": [1, 1], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1,
                  "w_bits": 4, "lo": 0, "hi": 255},
                 {"weight": np.ones((4, 3, 1, 1), dtype=np.int64), **requant})
    w = np.ones((4, 4 // groups, 3, 3), dtype=np.int64)
    layer = Layer("body.grouped", "conv", ["x"], ["y"],
                  {"kernel": [3, 3], "stride": [1, 1], "padding": [dilation, dilation],
                   "dilation": [dilation, dilation], "groups": groups, "w_bits": 4, "lo": 0, "hi": 255},
                  {"weight": w, **requant})
    return QGraph("image", t, [stem, layer], {"y": "y"})


@pytest.mark.parametrize("stride,signed,strategy,reuse", [(1, False, "Latency", 1), (2, True, "Resource", 4)])
def test_every_layer_kind_is_bit_exact_in_csim(tmp_path, stride, signed, strategy, reuse):
    """One compiled model holds a layer of every kind (plus the producers of its inputs);
    16 random frames; every tensor of every layer equals the integer reference, with
    hls4ml's Latency and Resource strategies for its own convolutions."""
    graph = layer_case(list(KINDS), seed=10 + stride, stride=stride, signed=signed)
    images = random_images(graph, N_IMAGES, seed=stride)
    ref = run_qgraph(graph, images, keep_all=True)
    # INTEGER_SPEC §7 coverage of the random case: full ranges, maps at 0 and D_max,
    # offsets at +-R*2**F and fractional
    lo, hi = (-128, 127) if signed else (0, 255)
    assert int(ref["pre"].min()) == lo and int(ref["pre"].max()) == hi
    dmap = ref["square_deform_dw.dilation"]
    assert int(dmap.min()) == 0 and int(dmap.max()) == 8
    offs = ref["bilinear_deform.offsets"]
    assert int(offs.min()) == -112 and int(offs.max()) == 112 and bool(((offs % 16) != 0).any())

    model_spec = write_project(graph, tmp_path / "prj", strategy=strategy, reuse_factor=reuse)
    report = csim_check(graph, images, tmp_path / "prj", model_spec=model_spec)
    assert [c.layer for c in report.checks] == [layer.name for layer in graph.layers]
    failed = [(c.layer, c.first_mismatch) for c in report.checks if not c.ok]
    assert not failed, failed
    assert report.summary() == f"{len(graph.layers)} passed, 0 failed"
    assert report.images == N_IMAGES
    # every kind produced integers (not a vacuous comparison)
    assert all(c.elements > 0 for c in report.checks)


def test_csim_check_reports_the_layer_whose_integers_differ(tmp_path):
    """Simulate a model, compare it with the reference of a graph whose requant multiplier
    of one layer differs: that layer (and only layers downstream of it) fail."""
    graph = layer_case(["conv3x3", "upsample2x"], seed=3, stride=2)
    images = random_images(graph, 2)
    model_spec = write_project(graph, tmp_path / "prj")
    graph.layer("conv3x3.test").params["M"] = graph.layer("conv3x3.test").params["M"] - 1000
    report = csim_check(graph, images, tmp_path / "prj", model_spec=model_spec)
    bad = {c.layer for c in report.checks if not c.ok}
    assert bad == {"conv3x3.test"}
    check = next(c for c in report.checks if not c.ok)
    assert check.mismatches > 0 and "C-sim" in check.first_mismatch and "reference" in check.first_mismatch
    assert report.summary() == f"{len(graph.layers) - 1} passed, 1 failed"


def test_extension_layers_survive_hls4ml_write_and_compile(tmp_path):
    """hls4ml's own write() + compile() (its build_lib.sh) + predict() on a model of
    convforge layers: the project carries nnet_convforge.h and the heads are exact."""
    graph = layer_case(["square_deform_dw", "split"], seed=5, stride=1, h=7, w=6, c=4)
    model_spec = write_project(graph, tmp_path / "prj")
    model, spec = model_spec
    header = tmp_path / "prj" / "firmware" / "nnet_utils" / "nnet_convforge.h"
    assert header.is_file()
    top = (tmp_path / "prj" / "firmware" / "convforge_hls.cpp").read_text()
    for call in ("nnet::cf_square_deform_dw<", "nnet::cf_requant<", "nnet::cf_slice<"):
        assert call in top
    classes = {layer.class_name for layer in model.get_layers()}
    assert {"CfSquareDeformDW", "CfRequant", "CfSlice", "PointwiseConv2D"} <= classes  # hls4ml's own 1x1 conv
    manifest = json.loads((tmp_path / "prj" / "convforge_hls.json").read_text())
    assert manifest["layers"]["square_deform_dw_test"]["written_by"] == "convforge"
    assert manifest["layers"]["pre_acc"]["written_by"] == "hls4ml"

    model.compile()  # hls4ml's own g++ build (-O3), not convforge's cache
    images = random_images(graph, 3, seed=9)
    outs = model.predict(np.ascontiguousarray(images.astype(np.float64)))
    ref = run_qgraph(graph, images)
    heads = list(graph.outputs)
    for head, out in zip(heads, outs, strict=True):
        expected = ref[head].numpy().transpose(0, 2, 3, 1).reshape(len(images), -1)
        assert np.array_equal(np.asarray(out).reshape(len(images), -1), expected), head


def test_one_compiled_library_serves_every_model_of_one_structure(tmp_path):
    """Weights are read at run time, so a model with other weights (same widths) reuses
    the compiled library, in the same process, and both are bit-exact."""
    cache = tmp_path / "cache"
    graph = layer_case(["shuffle", "conv3x3"], seed=1, h=5, w=4, c=3)
    first = csim_check(graph, random_images(graph, 2, seed=1), tmp_path / "a", cache_root=cache)
    for layer in graph.layers:  # same bounds (|w|, |bias|), other integers
        if layer.op == "conv":
            layer.params["weight"] = -layer.params["weight"][::-1].copy()
            layer.params["bias"] = -layer.params["bias"]
    second = csim_check(graph, random_images(graph, 2, seed=2), tmp_path / "b", cache_root=cache)
    assert not first.compile.cached and second.compile.cached
    assert first.compile.library == second.compile.library
    assert first.failed == 0 and second.failed == 0, [c.first_mismatch for c in first.checks + second.checks]


@pytest.mark.parametrize("groups,dilation,needle", [(2, 1, "groups=2"), (1, 2, "dilation")])
def test_converter_refuses_layers_it_cannot_express_naming_them(tmp_path, groups, dilation, needle):
    with pytest.raises(HLSConversionError) as err:
        qgraph_to_spec(_grouped_graph(groups, dilation), tmp_path)
    assert "body.grouped" in str(err.value) and needle in str(err.value)


def test_cli_error_is_one_line_exit_2(tmp_path, capsys):
    _grouped_graph().save(tmp_path / "g")
    rc = main(["hls", "--qgraph", str(tmp_path / "g.json"), "--out", str(tmp_path / "prj")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "body.grouped" in err


def test_cli_synth_prints_command_without_vitis_and_runs_it_when_present(tmp_path, capsys, monkeypatch):
    graph = layer_case("upsample2x", seed=2, h=5, w=4, c=3)
    graph.save(tmp_path / "g")
    monkeypatch.setenv("PATH", str(tmp_path / "nobin") + os.pathsep + "/usr/bin:/bin")
    out = tmp_path / "prj"
    assert main(["hls", "--qgraph", str(tmp_path / "g.json"), "--out", str(out), "--synth"]) == 0
    text = capsys.readouterr().out
    assert f"cd {out.resolve()} && vitis_hls -f build_prj.tcl" in text
    assert "synth      1" in text and "csim       0" in text
    assert (out / "build_opt.tcl").read_text().count("synth      1") == 1
    # a stand-in vitis_hls that writes a csynth report, like the real tool
    fake = tmp_path / "bin" / "vitis_hls"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nmkdir -p convforge_hls_prj/solution1/syn/report\n"
                    "echo \"$@\" > convforge_hls_prj/solution1/syn/report/convforge_hls_csynth.rpt\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + "/usr/bin:/bin")
    assert main(["hls", "--qgraph", str(tmp_path / "g.json"), "--out", str(out), "--synth"]) == 0
    assert "C synthesis report:" in capsys.readouterr().out
    assert (out / "convforge_hls_prj/solution1/syn/report/convforge_hls_csynth.rpt").read_text().strip() == (
        "-f build_prj.tcl")


@pytest.mark.slow
def test_tiny_codenet_whole_network_is_bit_exact_in_csim(tmp_path):
    rc = main(["export", "--config", "tiny", "--classes", "2", "--input", "64", "64",
               "--out", str(tmp_path / "tiny")])
    assert rc == 0
    graph = QGraph.load(tmp_path / "tiny.json")
    assert {"square_deform_dw", "split", "shuffle", "concat", "upsample2x"} <= {la.op for la in graph.layers}
    report = csim_check(graph, random_images(graph, 2), tmp_path / "prj")
    assert report.failed == 0 and report.passed == len(graph.layers)


@pytest.mark.slow
def test_shipped_tree_model_every_layer_bit_exact_through_cli(tmp_path, capsys):
    rc = main(["hls", "--qgraph", str(get_model(CODENET_NAME).qgraph), "--out", str(tmp_path / "prj"), "--csim"])
    lines = capsys.readouterr().out.strip().splitlines()
    graph = QGraph.load(get_model(CODENET_NAME).qgraph)
    assert rc == 0 and lines[-1] == f"{len(graph.layers)} passed, 0 failed"
