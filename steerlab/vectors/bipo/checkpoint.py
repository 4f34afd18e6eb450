"""Atomic per-epoch checkpoints of a BiPO run, and resuming from them."""

import io
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import TrainingError
from steerlab.vectors.io import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(path: Path, config: dict[str, Any], layers: list[int]) -> dict[str, Any]:
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
    return state
