"""The state of a BiPO run after an epoch: what ``checkpoint.pt`` holds, written
atomically each epoch and read back to resume."""

import io
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from steerlab.errors import TrainingError
from steerlab.utils.files import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class Checkpoint:
    """Everything a BiPO run needs to continue after epoch ``epoch``.

    config, layers: the run's settings (a resume must use the same ones).
    epoch, global_step: the last finished epoch and the optimiser steps taken so far.
    params: the vector per layer (CPU); optimizer, scheduler: their ``state_dict()``.
    steps, epochs: the history logged so far.
    best_score, since_best, best_epoch, best_params: the best validation epoch
        (``best_params`` is empty until there is one).
    """

    config: dict[str, Any]
    layers: list[int]
    epoch: int
    global_step: int
    params: list[Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    steps: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    best_score: float
    since_best: int
    best_epoch: int | None
    best_params: list[Tensor]

    def state_dict(self) -> dict[str, Any]:
        """The dict saved with ``torch.save`` (one key per field, in this order)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Checkpoint":
        return cls(**{f.name: state[f.name] for f in fields(cls)})


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> Path:
    buf = io.BytesIO()
    torch.save(checkpoint.state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(path: Path, config: dict[str, Any], layers: list[int]) -> Checkpoint:
    if not path.is_file():
        raise TrainingError(f"No checkpoint at {str(path)!r} to resume from.")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"Checkpoint {str(path)!r} is unreadable: {exc}.") from exc
    if state.get("config") != config or state.get("layers") != layers:
        raise TrainingError(
            f"Checkpoint {str(path)!r} was written with other settings (config/layers differ); "
            "resume with the same BiPOConfig and layers, or start a new run (resume=False)."
        )
    missing = [f.name for f in fields(Checkpoint) if f.name not in state]
    if missing:
        raise TrainingError(
            f"Checkpoint {str(path)!r} lacks {missing}; start a new run (resume=False)."
        )
    return Checkpoint.from_state_dict(state)
