"""BiPO: config, objective, batch plans, checkpoints and the trainer (its packed-pair
forward is :mod:`steerlab.activations.packed`); RePS, the same trainer with the RePS
objective."""

from steerlab.vectors.bipo.config import BiPOConfig, RePSConfig
from steerlab.vectors.bipo.loss import bipo_loss, cosine_with_warmup, reps_loss
from steerlab.vectors.bipo.reps import RePSTrainer
from steerlab.vectors.bipo.train import (
    BiPORun,
    fit_bipo_run,
    fit_reps_run,
    train_bipo,
    train_reps,
)
from steerlab.vectors.bipo.trainer import BiPOTrainer

__all__ = [
    "BiPOConfig",
    "BiPORun",
    "BiPOTrainer",
    "RePSConfig",
    "RePSTrainer",
    "bipo_loss",
    "cosine_with_warmup",
    "fit_bipo_run",
    "fit_reps_run",
    "reps_loss",
    "train_bipo",
    "train_reps",
]
