"""BiPO: config, objective, batch plans, checkpoints and the trainer (its packed-pair
forward is :mod:`steerlab.activations.packed`)."""

from steerlab.vectors.bipo.config import BiPOConfig
from steerlab.vectors.bipo.loss import bipo_loss, cosine_with_warmup
from steerlab.vectors.bipo.train import BiPORun, fit_bipo_run, train_bipo
from steerlab.vectors.bipo.trainer import BiPOTrainer

__all__ = [
    "BiPOConfig",
    "BiPORun",
    "BiPOTrainer",
    "bipo_loss",
    "cosine_with_warmup",
    "fit_bipo_run",
    "train_bipo",
]
