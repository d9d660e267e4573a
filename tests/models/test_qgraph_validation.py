"""QGraph.validate (INTEGER_SPEC v1.1 §6): a hand-edited or damaged QGraph is refused with a
QGraphFormatError naming the layer and field, at load and at export -- never a silent result."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from convforge.errors import ExportError, QGraphFormatError
from convforge.models.quant.qgraph import QGraph
from convforge.models.quant.validate import ATTRS, validate_graph
from convforge.models.train.zoo import CODENET_NAME, get_model


@pytest.fixture(scope="module")
def shipped() -> QGraph:
    return QGraph.load(get_model(CODENET_NAME).qgraph)


def _first(graph: QGraph, op: str):
    return next(layer for layer in graph.layers if layer.op == op)


def _edit_json(src: Path, dst: Path, edit) -> Path:
    """Copy the shipped QGraph to ``dst`` with ``edit(doc)`` applied to its JSON only."""
    doc = json.loads(src.read_text())
    edit(doc)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / doc["params_file"]).write_bytes(src.with_suffix(".npz").read_bytes())
    path = dst / "edited.json"
    path.write_text(json.dumps(doc))
    return path


def _layer_doc(doc: dict, op: str) -> dict:
    return next(entry for entry in doc["layers"] if entry["op"] == op)


def _drop(d: dict, key: str) -> None:
    del d[key]


# (what the issue tried / its siblings, JSON edit, expected message)
JSON_EDITS = [
    ("conv without stride", lambda d: _drop(_layer_doc(d, "conv")["attrs"], "stride"),
     r"layer 'backbone.*\(conv\): required attribute 'stride' is missing"),
    ("lo=200, hi=10", lambda d: _layer_doc(d, "conv")["attrs"].update(lo=200, hi=10),
     r"\(conv\): fields 'lo' = 200 and 'hi' = 10: lo must not exceed hi"),
    ("hi beyond uint8", lambda d: _layer_doc(d, "conv")["attrs"].update(hi=300),
     r"fields 'lo'/'hi' = \[0, 300\] leave the output type uint8 \[0, 255\]"),
    ("stride as a string", lambda d: _layer_doc(d, "conv")["attrs"].update(stride="2"),
     r"field 'stride' must be an integer or a pair \[h, w\], got '2'"),
    ("stride 0", lambda d: _layer_doc(d, "conv")["attrs"].update(stride=[0, 0]),
     r"field 'stride' = 0 is outside \[1, inf\]"),
    ("boolean groups", lambda d: _layer_doc(d, "conv")["attrs"].update(groups=True),
     r"field 'groups' must be an integer"),
    ("unknown attribute", lambda d: _layer_doc(d, "conv")["attrs"].update(activation="relu6"),
     r"unknown attribute\(s\) \['activation'\]"),
    ("w_bits 4 -> 2 (weights now outside)", lambda d: _layer_doc(d, "square_deform_dw")["attrs"].update(w_bits=2),
     r"\(square_deform_dw\): param 'weight' spans .* outside \[-1, 1\] \(w_bits = 2"),
    ("d_max 300", lambda d: _layer_doc(d, "square_deform_dw")["attrs"].update(d_max=300),
     r"field 'd_max' = 300 is outside \[0, 255\]"),
    ("tensor bits as a string", lambda d: d["tensors"]["input"].update(bits="8"),
     r"tensor 'input': field 'bits' must be an integer"),
    ("negative scale", lambda d: next(iter(d["tensors"].values())).update(scale=-1.0),
     r"field 'scale' must be a finite positive number"),
    ("wrong output shape", lambda d: d["tensors"][_layer_doc(d, "conv")["outputs"][0]].update(shape=[24, 7, 7]),
     r"has shape \(24, 7, 7\), the input .* give"),
    ("unknown op", lambda d: d["layers"][3].update(op="avgpool"), r"unknown op 'avgpool'"),
    ("missing head tensor", lambda d: d["outputs"].update(hm="nowhere"), r"output 'hm': names tensor 'nowhere'"),
    ("layer reads a later tensor", lambda d: d["layers"].reverse(), r"before any layer writes it"),
    ("missing 'layers'", lambda d: _drop(d, "layers"), r"required field 'layers' is missing"),
    ("a param shape edited", lambda d: _layer_doc(d, "conv")["params"].update(bias=[3]),
     r"has shape \[\d+\], the graph says \[3\]"),
]


@pytest.mark.parametrize("what,edit,match", JSON_EDITS, ids=[e[0] for e in JSON_EDITS])
def test_edited_json_is_refused_naming_layer_and_field(tmp_path, what, edit, match):
    path = _edit_json(Path(get_model(CODENET_NAME).qgraph), tmp_path, edit)
    with pytest.raises(QGraphFormatError, match=match) as info:
        QGraph.load(path)
    assert str(tmp_path) in str(info.value)  # the file is named


def _set_param(graph: QGraph, op: str, key: str, fn) -> QGraph:
    g = copy.deepcopy(graph)
    layer = _first(g, op)
    layer.params[key] = fn(layer.params[key].copy())
    return g


def _put(arr: np.ndarray, value) -> np.ndarray:
    arr.reshape(-1)[0] = value
    return arr


# Damage the .npz values as a tool that re-saves (and so re-checksums) the file would.
PARAM_EDITS = [
    ("S = 70", "conv", "S", lambda a: _put(a, 70), r"param 'S' spans \[\d+, 70\] .* outside \[0, 62\]"),
    ("weight 100 in a w_bits=4 layer", "square_deform_dw", "weight", lambda a: _put(a, 100),
     r"\(square_deform_dw\): param 'weight' spans \[-?\d+, 100\] "
     r"\(e.g. 100 at index \(0, 0, 0, 0\)\), outside \[-7, 7\]"),
    ("M below 2**14", "conv", "M", lambda a: _put(a, 1000),
     r"param 'M' holds 1000; multipliers are 0 or in \[16384, 32767\]"),
    ("bias beyond int32", "conv", "bias", lambda a: _put(a, 2**40),
     r"param 'bias' spans .* outside \[-2147483648, 2147483647\]"),
    ("float weights", "conv", "weight", lambda a: a.astype(np.float32),
     r"param 'weight' must be an integer NumPy array, got float32"),
    ("weight shape", "conv", "weight", lambda a: a[:, :1], r"param 'weight' has shape .* the tensor table implies"),
]


@pytest.mark.parametrize("what,op,key,fn,match", PARAM_EDITS, ids=[e[0] for e in PARAM_EDITS])
def test_out_of_spec_params_are_refused_in_memory_and_at_load(tmp_path, shipped, what, op, key, fn, match):
    g = _set_param(shipped, op, key, fn)
    with pytest.raises(QGraphFormatError, match=match):
        g.validate()
    if g.layers and _first(g, op).params[key].dtype.kind in "iu":
        g.save(tmp_path / "damaged")  # save re-checksums: only validation can catch it
        with pytest.raises(QGraphFormatError, match=match):
            QGraph.load(tmp_path / "damaged")


def test_shipped_graph_is_valid_and_round_trips(tmp_path, shipped):
    shipped.validate()
    shipped.save(tmp_path / "again")
    assert len(QGraph.load(tmp_path / "again").layers) == len(shipped.layers)


def test_map_producers_must_clamp_to_the_spec_ranges(shipped):
    g = copy.deepcopy(shipped)
    sq = _first(g, "square_deform_dw")
    producer = g.producer(sq.inputs[1])
    producer.attrs["hi"] = int(sq.attrs["d_max"]) + 1
    with pytest.raises(QGraphFormatError, match=r"dilation map comes from layer .* not inside \[0, d_max\]"):
        g.validate()


def test_int64_bound_rule_refuses_accumulators_that_would_wrap():
    """§6 on its own. With the value rules (w_bits weights, int32 bias, 15-bit M, <= 16-bit
    tensors) the worst case stays far below 2**63, so the rule is checked directly: a
    channel whose |acc + bias| * M + 2**(S-1) reaches 2**63 is refused, one below passes."""
    import convforge.models.quant.validate as v

    weight = np.full((2, 1, 1, 1), 1, dtype=np.int64)
    bias = np.zeros(2, dtype=np.int64)
    m, s = np.array([2**14, 2**14]), np.array([0, 0])
    ok = v._acc_bound(weight, bias, (2**63 - 1) // 2**14)
    v._check_bound(v._Checker(None), "layer 'x'", ok, m, s, "|acc + bias|")
    bad = v._acc_bound(weight, bias, 2**49)
    msg = r"layer 'x': worst-case \|acc \+ bias\| = 562949953421312 \* M = 16384 .* >= 2\*\*63 at channel 0"
    with pytest.raises(QGraphFormatError, match=msg):
        v._check_bound(v._Checker(None), "layer 'x'", bad, m, s, "|acc + bias|")


def test_every_op_has_an_attribute_schema():
    from convforge.models.quant.qgraph import OPS

    assert set(ATTRS) == set(OPS)
    assert validate_graph  # the one place QGraph.validate delegates to


def test_export_refuses_weights_outside_w_bits_naming_the_layer(monkeypatch):
    from convforge.models.nets import build_codenet
    from convforge.models.quant import calibrate, export_qgraph, prepare_qat
    from convforge.models.quant.layers import QSquareDeformDW

    torch.manual_seed(0)
    model = build_codenet("tiny", num_classes=1)
    prepare_qat(model)
    calibrate(model, [torch.randint(0, 256, (1, 3, 64, 64)).float()])
    model.eval()
    original = QSquareDeformDW.integer_params

    def bad_params(self):
        p = original(self)
        p.weight[0, 0, 0, 0] = 100
        return p

    monkeypatch.setattr(QSquareDeformDW, "integer_params", bad_params)
    with pytest.raises(ExportError, match=r"export refused: layer '.*' \(square_deform_dw\): param 'weight'.*100"):
        export_qgraph(model, (64, 64))


def test_codenet_refuses_inputs_that_are_not_multiples_of_32_instead_of_exporting_a_wrong_graph():
    from convforge.errors import ShapeError
    from convforge.models.nets import build_codenet

    model = build_codenet("tiny", num_classes=1).eval()
    with torch.no_grad(), pytest.raises(ShapeError, match=r"multiples of 32 .* got \(1, 3, 8, 8\).* \(32, 32\)"):
        model(torch.zeros(1, 3, 8, 8))
