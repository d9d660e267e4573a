"""CenterNet losses, the float -> QAT -> export -> int pipeline, resume and checkpoint errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convforge.errors import CheckpointError, DatasetError
from convforge.models.data import CenterNetTargets, get_dataset
from convforge.models.quant.qgraph import QGraph
from convforge.models.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from convforge.models.train.evaluate import evaluate
from convforge.models.train.losses import centernet_loss, focal_loss, masked_l1
from convforge.models.train.split import holdout, reach_fraction
from convforge.models.train.trainer import TrainConfig, Trainer


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# -- losses ------------------------------------------------------------------------------


def test_focal_loss_single_positive_and_negative_by_hand():
    logits = torch.tensor([1.5, -0.5]).view(1, 1, 1, 2)
    gt = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    p, q = _sig(1.5), _sig(-0.5)
    expected = -(math.log(p) * (1 - p) ** 2 + math.log(1 - q) * q**2) / 1.0
    assert focal_loss(logits, gt).item() == pytest.approx(expected, rel=1e-6)


def test_focal_loss_penalty_reduction_near_centre_and_normalisation():
    # Two centres and one neighbour at gt = 0.5: its negative term is weighted (1 - 0.5)**4.
    logits = torch.tensor([2.0, 0.3, -1.0, 0.7]).view(1, 1, 2, 2)
    gt = torch.tensor([1.0, 0.5, 1.0, 0.0]).view(1, 1, 2, 2)
    terms = [math.log(_sig(2.0)) * (1 - _sig(2.0)) ** 2, math.log(_sig(-1.0)) * (1 - _sig(-1.0)) ** 2,
             math.log(1 - _sig(0.3)) * _sig(0.3) ** 2 * 0.5**4, math.log(1 - _sig(0.7)) * _sig(0.7) ** 2]  # fmt: skip
    assert focal_loss(logits, gt).item() == pytest.approx(-sum(terms) / 2, rel=1e-6)


def test_focal_loss_without_objects_is_the_negative_sum():
    logits = torch.tensor([0.0, -3.0]).view(1, 1, 1, 2)
    gt = torch.zeros(1, 1, 1, 2)
    expected = -(math.log(0.5) * 0.25 + math.log(1 - _sig(-3.0)) * _sig(-3.0) ** 2)
    assert focal_loss(logits, gt).item() == pytest.approx(expected, rel=1e-6)


def test_focal_loss_is_finite_for_huge_logits():
    logits = torch.tensor([80.0, -80.0]).view(1, 1, 1, 2)
    gt = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    value = focal_loss(logits, gt)
    assert torch.isfinite(value) and value.item() > 50


def test_masked_l1_ignores_padding_slots():
    head = torch.arange(2 * 2 * 3 * 3, dtype=torch.float32).view(2, 2, 3, 3)
    index = torch.tensor([[4, 0], [8, 2]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    target = torch.zeros(2, 2, 2)
    # picks: image 0 cell 4 -> (4, 13); image 1 cells 8 -> (26, 35), 2 -> (20, 29)
    expected = (4 + 13 + 26 + 35 + 20 + 29) / 3
    assert masked_l1(head, index, mask, target).item() == pytest.approx(expected)


def test_perfect_predictions_give_near_zero_loss():
    targets_fn = CenterNetTargets(num_classes=2, input_size=64, max_objs=8)
    boxes = np.array([[5, 6, 25, 30], [30, 33, 58, 60], [40, 2, 50, 14]], dtype=np.float32)
    labels = np.array([0, 1, 0])
    t = {k: torch.from_numpy(v)[None] for k, v in targets_fn(boxes, labels).items()}
    hm = torch.where(t["hm"] == 1, torch.tensor(40.0), torch.tensor(-40.0))
    size = 16
    wh = torch.zeros(1, 2, size, size)
    reg = torch.zeros(1, 2, size, size)
    for k in range(int(t["mask"].sum())):
        y, x = divmod(int(t["ind"][0, k]), size)
        wh[0, :, y, x] = t["wh"][0, k]
        reg[0, :, y, x] = t["reg"][0, k]
    terms = centernet_loss({"hm": hm, "wh": wh, "reg": reg}, t)
    assert float(terms.total) < 1e-6
    # and a wrong size costs exactly 0.1 * |error| / objects
    wh[0, 0, int(t["ind"][0, 0]) // size, int(t["ind"][0, 0]) % size] += 3.0
    assert float(centernet_loss({"hm": hm, "wh": wh, "reg": reg}, t).total) == pytest.approx(0.1 * 3.0 / 3, rel=1e-4)


# -- validation split ----------------------------------------------------------------------


def test_holdout_strip_is_out_of_reach_of_augmented_training_views():
    train = get_dataset("trees:train", train=True, input_size=256)
    plain = get_dataset("trees:train", input_size=256)
    train, val = holdout(train, plain, 0.12)
    big = val.views[0].source
    val_top = min(v.y0 for v in val.views)
    reach = reach_fraction(train) * 256
    lowest = max(v.y0 + v.size for v in train.views if v.source == big)
    assert lowest + reach <= val_top
    assert all(v.source == big for v in val.views) and len(val.views) > 0


def test_training_on_the_test_split_is_refused(tmp_path):
    with pytest.raises(DatasetError):
        Trainer(TrainConfig(out=str(tmp_path), data="trees:test", model="tiny", input_size=64)).datasets()


# -- the pipeline ---------------------------------------------------------------------------


def _smoke_cfg(out, **kw) -> TrainConfig:
    base = dict(out=str(out), model="tiny", input_size=64, export_size=64, batch_size=2, float_epochs=1,
                qat_epochs=1, calib_batches=1, limit=2, val_every=1, progress=False, threads=1)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke training run (float, QAT, export) shared by the pipeline tests."""
    out = tmp_path_factory.mktemp("smoke")
    return out, Trainer(_smoke_cfg(out), log=lambda m: None).run()


def test_smoke_train_float_qat_export_then_int_eval(smoke_run):
    run_dir, outcome = smoke_run
    assert [r["phase"] for r in outcome.history] == ["float", "qat"]
    for name in ("float.pt", "qat.pt", "model.pt", "last.pt", "model.json", "model.npz", "training_curve.png"):
        assert (run_dir / name).is_file(), name
    doc = load_checkpoint(outcome.model_checkpoint)
    assert doc["phase"] == "qat" and "float_state_dict" in doc and "optimizer" not in doc
    graph = QGraph.load(outcome.qgraph)
    assert graph.tensors[graph.input].shape == (3, 64, 64)
    test = get_dataset("trees:test", input_size=64)
    res = evaluate(graph, test, "int", limit=2)
    assert res.backend == "int" and len(res.samples) == 2
    assert 0.0 <= res.ap50 <= 1.0
    assert sum(len(d) for d in res.detections.values()) > 0
    # the integer heads decode to boxes inside a plausible range of the 64 px input
    boxes = np.concatenate([d.boxes for d in res.detections.values()])
    assert np.isfinite(boxes).all()


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_repeats_the_uninterrupted_run(tmp_path, ema_decay):
    straight = Trainer(_smoke_cfg(tmp_path / "a", float_epochs=2, val_fraction=0.0, ema_decay=ema_decay),
                       log=lambda m: None)
    straight.run(("float",))
    first = Trainer(_smoke_cfg(tmp_path / "b", float_epochs=1, val_fraction=0.0, ema_decay=ema_decay),
                    log=lambda m: None)
    first.run(("float",))
    resumed = Trainer(_smoke_cfg(tmp_path / "b", float_epochs=2, val_fraction=0.0, ema_decay=ema_decay),
                      log=lambda m: None)
    outcome = resumed.run(("float",), resume=True)
    assert [r["epoch"] for r in outcome.history] == [1, 2]
    a = load_checkpoint(tmp_path / "a" / "float.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "float.pt")["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5), k


def test_ema_keeps_the_moving_average_of_the_steps(tmp_path):
    # torch's EMA starts at the first step's weights w_1, then ema = d * ema + (1 - d) * w_n:
    # with decay 0.5, one step per epoch and two epochs, float.pt holds (w_1 + w_2) / 2 while
    # last.pt holds the raw w_2 (and a one-epoch run without EMA gives w_1).
    cfg = _smoke_cfg(tmp_path / "e", float_epochs=2, val_fraction=0.0, ema_decay=0.5, limit=2, batch_size=2)
    Trainer(cfg, log=lambda m: None).run(("float",))
    raw2 = load_checkpoint(tmp_path / "e" / "last.pt")["state_dict"]
    kept = load_checkpoint(tmp_path / "e" / "float.pt")["state_dict"]
    Trainer(_smoke_cfg(tmp_path / "r", float_epochs=1, val_fraction=0.0, limit=2, batch_size=2),
            log=lambda m: None).run(("float",))
    raw1 = load_checkpoint(tmp_path / "r" / "float.pt")["state_dict"]
    weights = [k for k, v in kept.items() if v.is_floating_point() and v.ndim == 4]
    assert weights
    for k in weights:
        assert not torch.equal(kept[k], raw2[k]), k
        assert torch.allclose(kept[k], (raw1[k] + raw2[k]) / 2, rtol=1e-5, atol=1e-7), k


# -- checkpoint errors ----------------------------------------------------------------------


def test_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x00garbage, not a zip archive" * 10)
    with pytest.raises(CheckpointError, match="broken.pt.*corrupt"):
        load_checkpoint(bad)


def test_truncated_and_foreign_and_missing_checkpoints(tmp_path):
    good = save_checkpoint(tmp_path / "ok.pt", {"model": {}, "state_dict": {}, "phase": "float", "epoch": 0})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a convforge checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_wrong_model_checkpoint_is_a_checkpoint_error(tmp_path):
    trainer = Trainer(_smoke_cfg(tmp_path), log=lambda m: None)
    spec = trainer.spec()
    model = spec.build()
    doc = {"model": {**spec.to_dict(), "quant": None}, "state_dict": model.state_dict(), "phase": "float", "epoch": 1}
    # claim a wider network than the weights are for
    doc["model"]["config"]["head_conv"] = 48
    path = save_checkpoint(tmp_path / "wrong.pt", doc)
    with pytest.raises(CheckpointError, match="wrong.pt.*do not fit"):
        model_from_checkpoint(load_checkpoint(path), path)


def test_losses_ignore_non_finite_values_where_no_object_is():
    """Issue 13, kind 3: padded slots and unused terms are selected away, not multiplied by 0."""
    from convforge.models.train.losses import focal_loss, masked_l1

    head = torch.zeros(1, 2, 4, 4)
    head[0, :, 0, 0] = float("inf")  # the cell padded slots point at (index 0)
    index = torch.tensor([[5, 0, 0]])
    mask = torch.tensor([[1, 0, 0]])
    target = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]])
    assert masked_l1(head, index, mask, target).item() == 3.0  # |0 - 1| + |0 - 2| over one object
    logits = torch.zeros(1, 1, 3, 3)
    gt = torch.zeros(1, 1, 3, 3)
    gt[0, 0, 1, 1] = 1.0
    logits[0, 0, 1, 1] = float("inf")  # a perfectly confident centre
    assert torch.isfinite(focal_loss(logits, gt))


def test_compact_ship_keeps_qat_weights_in_float16_and_exports_their_qgraph(smoke_run, tmp_path):
    from convforge.models.quant.export import export_qgraph
    from convforge.models.train.inference import load_for_backend
    from convforge.models.train.zoo import ship_model

    run_dir, _ = smoke_run
    full, _ = ship_model(run_dir, tmp_path, name="full")
    ckpt, json_path = ship_model(run_dir, tmp_path, name="small", compact=True)
    doc = load_checkpoint(ckpt)
    assert "float_state_dict" not in doc and doc["qgraph"] == "small.json"
    model = model_from_checkpoint(doc, ckpt).eval()
    convs = {n for n, p in model.named_parameters() if p.dim() >= 2}
    assert convs and all(doc["state_dict"][n].dtype == torch.float16 for n in convs)
    assert all(v.dtype != torch.float16 for k, v in doc["state_dict"].items() if k not in convs)
    assert ckpt.stat().st_size < 0.4 * full.stat().st_size
    # the shipped QGraph is the export of the shipped (rounded) weights, layer for layer
    shipped = QGraph.load(json_path)
    again = export_qgraph(model, shipped.tensors[shipped.input].shape[1:], dict(shipped.meta))
    assert [layer.name for layer in again.layers] == [layer.name for layer in shipped.layers]
    for a, b in zip(again.layers, shipped.layers, strict=True):
        assert a.params.keys() == b.params.keys() and a.attrs == b.attrs, a.name
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params), a.name
    with pytest.raises(CheckpointError, match="holds only QAT weights"):
        load_for_backend(ckpt, "float")
