"""Training, evaluation and the shipped models of convforge's detectors (MobileNetV2, CoDeNet).

- :mod:`~convforge.models.train.losses`: CenterNet focal / L1 losses.
- :mod:`~convforge.models.train.trainer`: float -> W4A8 QAT -> QGraph export (``convforge train``).
- :mod:`~convforge.models.train.evaluate`: AP50 with the float, QAT or integer backend (``convforge eval``).
- :mod:`~convforge.models.train.checkpoint`: checkpoint files and their errors.
- :mod:`~convforge.models.train.zoo`: the shipped tree-crown detectors (``default_model()``,
  ``get_model(name)``, ``model_names()``; ``default_checkpoint()``, ``default_qgraph()``).
"""

from convforge.models.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from convforge.models.train.evaluate import BACKENDS, EvalResult, evaluate
from convforge.models.train.inference import Loaded, load_for_backend
from convforge.models.train.losses import centernet_loss, focal_loss
from convforge.models.train.modelspec import TRAIN_CONFIGS, ModelSpec, resolve_config
from convforge.models.train.trainer import PHASES, TrainConfig, Trainer, plot_training_curve
from convforge.models.train.zoo import (
    default_checkpoint,
    default_model,
    default_qgraph,
    get_model,
    model_names,
    ship_model,
    zoo_dir,
)

__all__ = [
    "BACKENDS",
    "PHASES",
    "TRAIN_CONFIGS",
    "EvalResult",
    "Loaded",
    "ModelSpec",
    "TrainConfig",
    "Trainer",
    "centernet_loss",
    "default_checkpoint",
    "default_model",
    "default_qgraph",
    "evaluate",
    "focal_loss",
    "get_model",
    "load_checkpoint",
    "load_for_backend",
    "model_from_checkpoint",
    "model_names",
    "plot_training_curve",
    "resolve_config",
    "save_checkpoint",
    "ship_model",
    "zoo_dir",
]
