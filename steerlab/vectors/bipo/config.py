"""``BiPOConfig``: the hyperparameters of BiPO training (defaults from the paper)."""

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from steerlab.errors import ConfigError


@dataclass(frozen=True)
class BiPOConfig:
    """BiPO (Cao et al. 2024) training settings.

    beta: DPO temperature of the objective (paper: 0.1).
    lr: AdamW learning rate (paper: 5e-4).
    weight_decay: AdamW weight decay (paper declares 0.05; its code passes none, i.e. 0).
    batch_size: preference pairs per optimiser step (paper: 4).
    epochs: passes over the training pairs (paper: 20 personas, 1 TruthfulQA, 10 jailbreak).
    warmup_steps: linear warm-up steps of the cosine schedule (paper: 100).
    direction: 'bi' draws d from {-1, +1} (BiPO); 'uni' fixes d = +1 (the paper's ablation).
    direction_sampling: 'per_step' (one d per batch, as the reference code) or 'per_example'.
    seed: seeds batch order and the d draws; same seed, same data -> same vector.
    autocast_bf16: run the layers above the steering layer under bf16 autocast.
    max_grad_norm: clip the vector's gradient norm (None: no clipping, as the paper).
    early_stopping_patience: stop after this many epochs without a better validation
        score (None: never); needs validation pairs.
    select_best: return the vector of the best validation epoch instead of the last.
    bucket_size: length-sorted batching works inside random buckets of this many
        batches (1 = plain random batches).
    """

    beta: float = 0.1
    lr: float = 5e-4
    weight_decay: float = 0.05
    batch_size: int = 4
    epochs: int = 20
    warmup_steps: int = 100
    direction: Literal["bi", "uni"] = "bi"
    direction_sampling: Literal["per_step", "per_example"] = "per_step"
    seed: int = 0
    autocast_bf16: bool = False
    max_grad_norm: float | None = None
    early_stopping_patience: int | None = None
    select_best: bool = False
    bucket_size: int = 16

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.beta > 0 and math.isfinite(self.beta), f"beta={self.beta} must be > 0"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr={self.lr} must be > 0"),
            (self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0"),
            (self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1"),
            (self.epochs >= 1, f"epochs={self.epochs} must be >= 1"),
            (self.warmup_steps >= 0, f"warmup_steps={self.warmup_steps} must be >= 0"),
            (self.direction in ("bi", "uni"), f"direction={self.direction!r}: use 'bi' or 'uni'"),
            (
                self.direction_sampling in ("per_step", "per_example"),
                f"direction_sampling={self.direction_sampling!r}: use 'per_step' or 'per_example'",
            ),
            (self.bucket_size >= 1, f"bucket_size={self.bucket_size} must be >= 1"),
            (
                self.max_grad_norm is None or self.max_grad_norm > 0,
                f"max_grad_norm={self.max_grad_norm} must be > 0 or None",
            ),
            (
                self.early_stopping_patience is None or self.early_stopping_patience >= 1,
                f"early_stopping_patience={self.early_stopping_patience} must be >= 1 or None",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"BiPOConfig: {msg}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
