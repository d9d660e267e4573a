"""CenterNet training of a CoDeNet: float, then W4A8 quantisation-aware fine-tuning, then
QGraph export.

Phases (each resumable from the checkpoints it writes into ``out``):

``float``   AdamW with a linear warm-up and a cosine decay, on augmented training views;
            a MobileNetV2 detector starts from the ImageNet weights (``init``).
``qat``     starts from the float weights (the best validation epoch when a validation
            split is held out, else the last), ``prepare_qat`` (W4A8, 8-bit first layer),
            calibration on un-augmented training views, then a short fine-tune at a lower
            learning rate.
``export``  the QAT network as a QGraph (``model.json`` + ``model.npz``) at ``export_size``.

Files in ``out``: ``last.pt`` (the newest epoch, with the optimiser: what ``--resume``
continues from), ``float.pt`` / ``qat.pt`` (the phase results), ``model.pt`` (inference
checkpoint: QAT weights plus the float weights they started from), ``model.json/.npz``,
``history.json`` and ``training_curve.png``.

Determinism: every epoch reseeds torch from ``(seed, phase, epoch)``, the sample order
is a permutation drawn from the same seed, and augmentation draws from
``(seed, epoch, index)``; a resumed run repeats the epochs an uninterrupted run would
have done (up to floating-point non-associativity of multi-threaded kernels).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convforge.errors import CheckpointError, ConfigError
from convforge.models.data import DetectionDataset, get_dataset, make_collate
from convforge.models.nets import OUTPUT_STRIDE
from convforge.models.train.checkpoint import load_checkpoint, load_state, model_from_checkpoint, save_checkpoint
from convforge.models.train.evaluate import evaluate
from convforge.models.train.losses import centernet_loss
from convforge.models.train.modelspec import ModelSpec, default_quant, resolve_config
from convforge.models.train.split import holdout

PHASES = ("float", "qat", "export")


@dataclass
class TrainConfig:
    """Every option of a training run (JSON-serialisable; stored in each checkpoint).

    Attributes:
        out: output directory.
        data: training dataset spec (``trees:train``, ``voc:/path``); test splits refused.
        model: config name (see :func:`~convforge.models.train.modelspec.resolve_config`).
        width: optional width multiplier on the config.
        input_size: training input side in pixels (multiple of 32).
        batch_size: images per step.
        float_epochs, qat_epochs: epochs of each phase.
        lr, qat_lr: peak AdamW learning rates of each phase.
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up of the float phase, in epochs.
        grad_clip: gradient norm clip.
        val_fraction: share of the training data held out for validation (0: none).
        val_every: validate every this many epochs (and at each phase's end).
        ema_decay: float phase only: validate, keep and export an exponential moving average
            of the weights (and BN statistics), updated after every step with this decay
            (``torch.optim.swa_utils``; 0: off). 0.99 averages over ~100 steps (~8 epochs of
            the tree recipe). The weight EMA of modern detectors (YOLOv5, RT-DETR).
        export_size: QGraph input side in pixels (416 covers a 400x400 tree tile).
        w_bits, a_bits, first_w_bits: quantisation.
        dw_w_bits: weight width of the depthwise layers (None: ``w_bits``).
        init: ``auto`` (ImageNet weights for a MobileNetV2 backbone, random for CoDeNet, whose
            ShuffleNetV2 has none shipped), ``imagenet`` or ``random``.
        calib_batches: un-augmented batches for QAT calibration.
        seed: the random seed.
        threads: torch CPU threads. 1 by default: on a CPU shared with other jobs, OpenMP
            threads spin-waiting for busy cores made a 2-thread epoch 10-20x slower.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        limit: use only this many training (and validation) views (smoke runs).
        progress: tqdm progress bars.
    """

    out: str = "runs/trees"
    data: str = "trees:train"
    model: str = "trees"
    width: float | None = None
    input_size: int = 256
    batch_size: int = 8
    float_epochs: int = 30
    qat_epochs: int = 6
    lr: float = 2e-3
    qat_lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    grad_clip: float = 10.0
    val_fraction: float = 0.12
    val_every: int = 2
    ema_decay: float = 0.0
    export_size: int = 416
    w_bits: int = 4
    a_bits: int = 8
    first_w_bits: int = 8
    dw_w_bits: int | None = None
    init: str = "auto"
    calib_batches: int = 8
    seed: int = 0
    threads: int = 1
    device: str = "auto"
    limit: int | None = None
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return dataclasses.asdict(self)


@dataclass
class PhaseState:
    """Where a phase stands: epochs done, history, best validation AP50 and epoch."""

    epoch: int = 0
    best_ap50: float = -1.0
    best_epoch: int = -1


@dataclass
class TrainOutcome:
    """What a run produced (paths exist for the phases that ran)."""

    out: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    float_checkpoint: Path | None = None
    qat_checkpoint: Path | None = None
    model_checkpoint: Path | None = None
    qgraph: Path | None = None
    wall_s: float = 0.0


class Trainer:
    """Runs the phases of :class:`TrainConfig` (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
        if cfg.input_size % 32:
            raise ConfigError(f"--input-size {cfg.input_size} must be a multiple of 32")
        if cfg.export_size % 32:
            raise ConfigError(f"--export-size {cfg.export_size} must be a multiple of 32")
        if cfg.batch_size < 1 or cfg.float_epochs < 0 or cfg.qat_epochs < 0:
            raise ConfigError("batch size must be >= 1 and epoch counts >= 0")
        if cfg.init not in ("auto", "imagenet", "random"):
            raise ConfigError(f"--init {cfg.init!r}: choose auto, imagenet or random")
        self.cfg = cfg
        self.log = log
        self.out = Path(cfg.out)
        if cfg.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            if cfg.device == "cuda" and not torch.cuda.is_available():
                raise ConfigError("--device cuda: no CUDA device is available; use --device cpu or auto")
            self.device = torch.device(cfg.device)
        torch.set_num_threads(max(1, cfg.threads))
        self.history: list[dict[str, Any]] = []
        self._datasets: tuple[DetectionDataset, DetectionDataset | None] | None = None
        self._t0 = time.time()
        self._wall_before = 0.0

    # -- data ----------------------------------------------------------------------------
    def datasets(self) -> tuple[DetectionDataset, DetectionDataset | None]:
        """(augmented training views, deterministic validation views or None)."""
        if self._datasets is None:
            c = self.cfg
            train = get_dataset(c.data, train=True, input_size=c.input_size, seed=c.seed)
            val = None
            if c.val_fraction > 0:
                plain = get_dataset(c.data, train=False, input_size=c.input_size, stride=c.input_size * 3 // 4)
                train, val = holdout(train, plain, c.val_fraction)
            if c.limit is not None:
                train.views = _views_with_objects(train, c.limit)
                if val is not None:
                    val.views = _views_with_objects(val, c.limit)
            self._datasets = (train, val)
        return self._datasets

    def spec(self) -> ModelSpec:
        """The model this run trains."""
        c = self.cfg
        train, _ = self.datasets()
        config = resolve_config(c.model, c.width, c.input_size)
        quant = default_quant(c.w_bits, c.a_bits, c.first_w_bits, c.dw_w_bits)
        return ModelSpec(config, train.num_classes, list(train.class_names), quant)

    def _loader(self, dataset: DetectionDataset, epoch: int, shuffle: bool) -> torch.utils.data.DataLoader:
        dataset.set_epoch(epoch)
        order = list(range(len(dataset)))
        if shuffle:
            order = np.random.default_rng([self.cfg.seed, 7, epoch]).permutation(len(dataset)).tolist()
        collate = make_collate(dataset.num_classes, dataset.input_size, down=OUTPUT_STRIDE)
        return torch.utils.data.DataLoader(dataset, batch_size=self.cfg.batch_size, sampler=order, collate_fn=collate)

    # -- checkpoints ---------------------------------------------------------------------
    def _payload(self, model: nn.Module, spec: ModelSpec, phase: str, state: PhaseState, optimizer=None,
                 ema=None) -> dict:
        doc = {
            "model": spec.to_dict() if phase == "qat" else {**spec.to_dict(), "quant": None},
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "phase": phase,
            "epoch": state.epoch,
            "best_ap50": state.best_ap50,
            "best_epoch": state.best_epoch,
            "seed": self.cfg.seed,
            "train": self.cfg.to_dict(),
            "history": list(self.history),
            "wall_s": self._wall(),
        }
        if optimizer is not None:
            doc["optimizer"] = optimizer.state_dict()
        if ema is not None:
            doc["ema"] = {k: v.detach().cpu() for k, v in ema.state_dict().items()}
        return doc

    def _wall(self) -> float:
        return self._wall_before + (time.time() - self._t0)

    # -- phases --------------------------------------------------------------------------
    def run(self, phases: tuple[str, ...] = PHASES, resume: bool = False) -> TrainOutcome:
        """Run ``phases`` in order; with ``resume`` continue from ``out/last.pt``."""
        unknown = [p for p in phases if p not in PHASES]
        if unknown:
            raise ConfigError(f"unknown phase(s) {unknown}; phases are {', '.join(PHASES)}")
        self.out.mkdir(parents=True, exist_ok=True)
        resume_doc = None
        if resume:
            last = self.out / "last.pt"
            if last.is_file():
                resume_doc = load_checkpoint(last)
                self.history = list(resume_doc.get("history", []))
                self._wall_before = float(resume_doc.get("wall_s", 0.0))
                self.log(f"resuming from {last}: phase {resume_doc['phase']}, {resume_doc['epoch']} epochs done")
            else:
                self.log(f"--resume: no {last} yet, starting from scratch")
        outcome = TrainOutcome(self.out)
        (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=1) + "\n")
        if "float" in phases:
            doc = resume_doc if resume_doc is not None and resume_doc["phase"] == "float" else None
            if resume_doc is not None and resume_doc["phase"] == "qat":
                self.log("float phase already complete (resuming in the QAT phase)")
            else:
                outcome.float_checkpoint = self.train_float(doc)
        if "qat" in phases:
            doc = resume_doc if resume_doc is not None and resume_doc["phase"] == "qat" else None
            outcome.qat_checkpoint = self.train_qat(doc)
        if "export" in phases:
            outcome.model_checkpoint, outcome.qgraph = self.export()
        outcome.history = self.history
        outcome.wall_s = self._wall()
        return outcome

    def _lr(self, phase: str, epoch: int, step: int, steps: int) -> float:
        c = self.cfg
        total = c.float_epochs if phase == "float" else c.qat_epochs
        peak = c.lr if phase == "float" else c.qat_lr
        t = epoch + step / max(1, steps)
        warm = c.warmup_epochs if phase == "float" else 0.0
        if t < warm:
            return peak * (0.1 + 0.9 * t / warm)
        frac = (t - warm) / max(1e-9, total - warm)
        return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    def _fit(
        self, model: nn.Module, spec: ModelSpec, phase: str, epochs: int, state: PhaseState, optimizer,
        ema_state: dict | None = None,
    ) -> PhaseState:
        train, val = self.datasets()
        final = self.out / f"{phase}.pt"
        best_path = self.out / f"{phase}_best.pt"
        ema = None
        if phase == "float" and self.cfg.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.ema_decay), use_buffers=True)
            if ema_state is not None:
                ema.load_state_dict(ema_state)
        kept = model if ema is None else ema.module    # the weights validated, kept and exported
        while state.epoch < epochs:
            epoch = state.epoch
            torch.manual_seed(self.cfg.seed * 1000 + PHASES.index(phase) * 100 + epoch)
            model.train()
            loader = self._loader(train, epoch + (0 if phase == "float" else 10_000), shuffle=True)
            sums = {"loss": 0.0, "hm": 0.0, "wh": 0.0, "reg": 0.0}
            n = 0
            t0 = time.time()
            batches = loader
            if self.cfg.progress:
                from tqdm import tqdm

                batches = tqdm(loader, desc=f"{phase} {epoch + 1}/{epochs}", unit="batch", leave=False)
            for step, batch in enumerate(batches):
                for group in optimizer.param_groups:
                    group["lr"] = self._lr(phase, epoch, step, len(loader))
                x = batch.images.to(self.device)
                targets = {k: v.to(self.device) for k, v in batch.targets.items()}
                terms = centernet_loss(model(x), targets)
                if not torch.isfinite(terms.total):
                    raise ConfigError(
                        f"{phase} epoch {epoch + 1}: the loss became {float(terms.total)}; lower the learning "
                        f"rate (--lr / --qat-lr) and resume from the last good checkpoint"
                    )
                optimizer.zero_grad(set_to_none=True)
                terms.total.backward()
                nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
                optimizer.step()
                if ema is not None:
                    ema.update_parameters(model)
                sums["loss"] += float(terms.total.detach())
                sums["hm"] += terms.hm
                sums["wh"] += terms.wh
                sums["reg"] += terms.reg
                n += 1
                if self.cfg.progress:
                    batches.set_postfix(loss=f"{sums['loss'] / n:.3f}")
            record: dict[str, Any] = {"phase": phase, "epoch": epoch + 1}
            record.update({k: round(v / max(1, n), 5) for k, v in sums.items()})
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["seconds"] = round(time.time() - t0, 1)
            state.epoch = epoch + 1
            if val is not None and (state.epoch % self.cfg.val_every == 0 or state.epoch == epochs):
                ap = evaluate(kept, val, phase, device=self.device).ap50
                record["val_ap50"] = round(ap, 4)
                if ap > state.best_ap50:
                    state.best_ap50, state.best_epoch = ap, state.epoch
                    save_checkpoint(best_path, self._payload(kept, spec, phase, state))
            self.history.append(record)
            val_txt = f", val AP50 {record['val_ap50']:.3f}" if "val_ap50" in record else ""
            self.log(
                f"{phase} epoch {state.epoch}/{epochs}: loss {record['loss']:.4f} (hm {record['hm']:.4f}, "
                f"wh {record['wh']:.4f}, reg {record['reg']:.4f}){val_txt} [{record['seconds']:.0f} s]"
            )
            save_checkpoint(self.out / "last.pt", self._payload(model, spec, phase, state, optimizer, ema))
            self.write_history()
        result = self._payload(kept, spec, phase, state)
        if val is not None and best_path.is_file() and state.best_epoch != state.epoch:
            best = load_checkpoint(best_path)
            result["state_dict"] = best["state_dict"]
            result["selected_epoch"] = state.best_epoch
            self.log(f"{phase}: keeping epoch {state.best_epoch} (best validation AP50 {state.best_ap50:.3f})")
        else:
            result["selected_epoch"] = state.epoch
        save_checkpoint(final, result)
        return state

    def _optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr)

    def train_float(self, resume_doc: dict | None = None) -> Path:
        """The float phase; returns ``out/float.pt``."""
        spec = self.spec()
        torch.manual_seed(self.cfg.seed)
        model = spec.build(quantized=False)
        init = "random"
        if resume_doc is None:
            init = self._initialise(model, spec)
        model.to(self.device)
        optimizer = self._optimizer(model, self.cfg.lr)
        state = PhaseState()
        if resume_doc is not None:
            load_state(model, resume_doc["state_dict"], self.out / "last.pt")
            model.to(self.device)
            if "optimizer" in resume_doc:
                optimizer.load_state_dict(resume_doc["optimizer"])
            state = PhaseState(int(resume_doc["epoch"]), float(resume_doc.get("best_ap50", -1.0)),
                               int(resume_doc.get("best_epoch", -1)))  # fmt: skip
        train, val = self.datasets()
        self.log(
            f"float phase: {spec.config.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.3f} M params), "
            f"{len(train)} training views of {self.cfg.input_size} px"
            + (f", {len(val)} validation views" if val is not None else "")
            + f", batch {self.cfg.batch_size}, {self.cfg.float_epochs} epochs on {self.device}"
            + (f", backbone from {init}" if resume_doc is None else "")
        )
        self._fit(model, spec, "float", self.cfg.float_epochs, state, optimizer,
                  None if resume_doc is None else resume_doc.get("ema"))
        return self.out / "float.pt"

    def _initialise(self, model: nn.Module, spec: ModelSpec) -> str:
        """Apply ``init`` to a freshly built float model; returns what was loaded."""
        from convforge.models.nets.mobilenetv2 import MobileNetV2DetConfig, load_imagenet_backbone

        is_mbv2 = isinstance(spec.config, MobileNetV2DetConfig)
        want = self.cfg.init
        if want == "auto":
            want = "imagenet" if is_mbv2 else "random"
        if want == "random":
            return "random initialisation"
        if not is_mbv2:
            raise ConfigError(
                f"--init imagenet: no ImageNet weights ship for the {spec.config.name!r} CoDeNet backbone "
                "(ShuffleNetV2); use --init random, or a MobileNetV2 config (mbv2-trees)"
            )
        if spec.config.width != 1.0:
            raise ConfigError(
                f"--init imagenet: the shipped ImageNet weights are for MobileNetV2 width 1.0, not "
                f"{spec.config.width:g}; use --width 1.0 or --init random"
            )
        skipped = load_imagenet_backbone(model)
        self.log(f"ImageNet weights loaded into the backbone ({len(skipped)} torchvision tensors not used: "
                 "later blocks / classifier)")  # fmt: skip
        return "ImageNet (torchvision mobilenet_v2)"

    def calibration_batches(self) -> list[torch.Tensor]:
        """Un-augmented training images ``(N, 3, H, W)`` float 0..255 for calibration."""
        train, _ = self.datasets()
        plain = get_dataset(self.cfg.data, train=False, input_size=self.cfg.input_size, augment=False,
                            stride=self.cfg.input_size * 3 // 4)  # fmt: skip
        plain.views = list(train.views)
        loader = self._loader(plain, 0, shuffle=True)
        out = []
        for batch in loader:
            out.append(batch.images.to(self.device))
            if len(out) >= self.cfg.calib_batches:
                break
        return out

    def train_qat(self, resume_doc: dict | None = None) -> Path:
        """The QAT phase; returns ``out/qat.pt``."""
        from convforge.models.quant.qat import calibrate, prepare_qat

        spec = self.spec()
        state = PhaseState()
        if resume_doc is not None:
            model = spec.build(quantized=True)
            load_state(model, resume_doc["state_dict"], self.out / "last.pt")
            model.to(self.device)
            optimizer = self._optimizer(model, self.cfg.qat_lr)
            if "optimizer" in resume_doc:
                optimizer.load_state_dict(resume_doc["optimizer"])
            state = PhaseState(int(resume_doc["epoch"]), float(resume_doc.get("best_ap50", -1.0)),
                               int(resume_doc.get("best_epoch", -1)))  # fmt: skip
        else:
            float_path = self.out / "float.pt"
            if not float_path.is_file():
                raise CheckpointError(
                    f"{float_path}: no float checkpoint to fine-tune; run the float phase first "
                    "(`convforge train --phase float`)"
                )
            float_doc = load_checkpoint(float_path)
            model = model_from_checkpoint(float_doc, float_path)
            model = prepare_qat(model, **spec.quant).to(self.device)
            model.train()
            calibrate(model, self.calibration_batches())
            optimizer = self._optimizer(model, self.cfg.qat_lr)
        dw = f", depthwise {spec.quant['dw_w_bits']}-bit" if "dw_w_bits" in spec.quant else ""
        self.log(f"QAT phase: W{spec.quant['w_bits']}A{spec.quant['a_bits']} "
                 f"(first layer {spec.quant['first_w_bits']}-bit{dw}), {self.cfg.qat_epochs} epochs")  # fmt: skip
        self._fit(model, spec, "qat", self.cfg.qat_epochs, state, optimizer)
        return self.out / "qat.pt"

    def export(self) -> tuple[Path, Path]:
        """Export ``out/qat.pt`` to ``out/model.json/.npz`` and write ``out/model.pt``."""
        from convforge.models.quant.export import export_qgraph

        qat_path = self.out / "qat.pt"
        if not qat_path.is_file():
            raise CheckpointError(f"{qat_path}: no QAT checkpoint to export; run the QAT phase first (--phase qat)")
        qat_doc = load_checkpoint(qat_path)
        model = model_from_checkpoint(qat_doc, qat_path).cpu().eval()
        size = self.cfg.export_size
        family = qat_doc["model"]["config"].get("family", "codenet")
        meta = {
            "model": {"codenet": "CoDeNet", "mobilenetv2": "MobileNetV2"}.get(family, family),
            "config": qat_doc["model"]["config"]["name"],
            "num_classes": qat_doc["model"]["num_classes"],
            "class_names": qat_doc["model"].get("class_names"),
            "output_stride": OUTPUT_STRIDE,
            "trained_on": self.cfg.data,
            "seed": self.cfg.seed,
        }
        graph = export_qgraph(model, (size, size), meta)
        json_path, _ = graph.save(self.out / "model")
        inference = {k: v for k, v in qat_doc.items() if k not in ("optimizer", "format", "version")}
        float_path = self.out / "float.pt"
        if float_path.is_file():
            inference["float_state_dict"] = load_checkpoint(float_path)["state_dict"]
        inference["qgraph"] = json_path.name
        inference["history"] = list(self.history) or inference.get("history", [])
        inference["wall_s"] = self._wall()
        model_path = save_checkpoint(self.out / "model.pt", inference)
        self.log(f"exported {json_path} ({size}x{size} input) and {model_path}")
        return model_path, json_path

    # -- reporting -----------------------------------------------------------------------
    def write_history(self) -> None:
        """``history.json`` and ``training_curve.png`` from the epochs so far."""
        (self.out / "history.json").write_text(json.dumps(self.history, indent=1) + "\n")
        plot_training_curve(self.history, self.out / "training_curve.png")


def _views_with_objects(dataset: DetectionDataset, limit: int) -> list:
    """The first ``limit`` views that contain at least one (non-difficult) object; views
    without objects fill up if there are too few (quick runs still see trees)."""
    with_objects = [v for i, v in enumerate(dataset.views) if (~dataset.annotations(i).difficult).any()]
    rest = [v for v in dataset.views if v not in with_objects]
    return (with_objects + rest)[: max(1, int(limit))]


def plot_training_curve(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Loss per epoch for each phase (left axis, log scale) and validation AP50 (right axis).

    Epochs are numbered continuously across phases; a dotted line marks where QAT starts.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = {"float": "#1f77b4", "qat": "#d62728"}
    ap_x, ap_y = [], []
    for i, rec in enumerate(history):
        rec["_x"] = i + 1
        if "val_ap50" in rec:
            ap_x.append(i + 1)
            ap_y.append(rec["val_ap50"])
    for phase, colour in colours.items():
        recs = [r for r in history if r["phase"] == phase]
        if recs:
            ax.plot([r["_x"] for r in recs], [r["loss"] for r in recs], "-o", ms=3, color=colour,
                    label=f"{phase} loss")  # fmt: skip
    qat_start = next((r["_x"] for r in history if r["phase"] == "qat"), None)
    for rec in history:
        rec.pop("_x", None)
    if qat_start is not None:
        ax.axvline(qat_start - 0.5, color="grey", ls=":", lw=1)
    ax.set_xlabel("epoch (float, then QAT)")
    ax.set_ylabel("training loss (hm + 0.1 wh + reg)")
    if history and min(r["loss"] for r in history) > 0:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if ap_x:
        ax2 = ax.twinx()
        ax2.plot(ap_x, ap_y, "-s", ms=3, color="#2ca02c", label="validation AP50")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("validation AP50 (held-out training strip)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
