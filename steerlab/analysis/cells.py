"""Where a sweep keeps its finished cells on disk, so that a rerun resumes.

Layout under ``root``::

    sweep.json                 fingerprint (what the numbers depend on) and config; at
                               the end also methods, layers, multipliers and info
    baseline-METRIC.csv        the unsteered model's scores, once per metric
    fit.json                   seconds of the shared activation passes
    cells/METHOD-LLAYER/       vector.safetensors, summary.csv (written last: the cell
                               is done), cell.json (seconds), training.csv, bipo/ (checkpoint)
    results.csv, effects.csv, training.csv

A store without a root keeps nothing and finds nothing.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from steerlab.errors import ConfigError
from steerlab.utils.files import atomic_write_text
from steerlab.vectors.vector import SteeringVector

VECTOR_FILE = "vector.safetensors"
SUMMARY_FILE = "summary.csv"
TRAINING_FILE = "training.csv"


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def write_json(obj: Any, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))


def read_csv(path: Path) -> pd.DataFrame:
    """A frame written by :func:`write_csv` (``layer`` stays an object column)."""
    frame = pd.read_csv(path)
    if "layer" in frame:
        frame["layer"] = frame["layer"].astype(object)
    return frame


@dataclass(frozen=True)
class CellStore:
    """The files of one sweep under ``root`` (None: nothing is written or read).

    With ``resume`` a finished cell, a saved vector and a saved baseline are read back
    instead of computed again; without it they are overwritten.
    """

    root: Path | None
    resume: bool = True

    def open(self, fingerprint: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        """Create ``root`` and record the settings; refuse, when resuming, a root that
        holds a sweep with other settings."""
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        meta_path = self.root / "sweep.json"
        if meta_path.exists() and self.resume:
            old = json.loads(meta_path.read_text()).get("fingerprint")
            if old != json.loads(json.dumps(fingerprint, default=str)):
                raise ConfigError(
                    f"{self.root} holds a sweep with other settings ({old}); this one is "
                    f"{dict(fingerprint)}. Fix: use another out_dir, delete {self.root}, or "
                    "pass SweepConfig(resume=False) to overwrite its cells."
                )
        write_json({"fingerprint": fingerprint, "config": config}, meta_path)

    def cell_dir(self, method: str, layer: int) -> Path | None:
        return self.root / "cells" / f"{method}-L{layer}" if self.root else None

    def _file(self, method: str, layer: int, name: str, resume: bool = False) -> Path | None:
        """The cell's file ``name`` when it exists (and, with ``resume``, when resuming)."""
        d = self.cell_dir(method, layer)
        if d is None or (resume and not self.resume) or not (d / name).exists():
            return None
        return d / name

    def is_done(self, method: str, layer: int) -> bool:
        return self._file(method, layer, SUMMARY_FILE, resume=True) is not None

    def vector(self, method: str, layer: int) -> SteeringVector | None:
        """The cell's saved vector, when resuming."""
        path = self._file(method, layer, VECTOR_FILE, resume=True)
        return SteeringVector.load(path) if path else None

    def save_vector(self, method: str, layer: int, vec: SteeringVector) -> None:
        d = self.cell_dir(method, layer)
        if d is not None:
            vec.save(d / VECTOR_FILE)

    def training(self, method: str, layer: int) -> pd.DataFrame | None:
        """The cell's saved training history (a trained method's)."""
        path = self._file(method, layer, TRAINING_FILE)
        return read_csv(path) if path else None

    def save_training(self, method: str, layer: int, frame: pd.DataFrame) -> None:
        d = self.cell_dir(method, layer)
        if d is not None:
            write_csv(frame, d / TRAINING_FILE)

    def cell(self, method: str, layer: int) -> tuple[pd.DataFrame, float]:
        """A finished cell's summary and the seconds it took when it was computed."""
        d = self.cell_dir(method, layer)
        assert d is not None and self.is_done(method, layer)
        seconds = 0.0
        if (d / "cell.json").exists():
            seconds = float(json.loads((d / "cell.json").read_text()).get("seconds", 0.0))
        return read_csv(d / SUMMARY_FILE), seconds

    def save_cell(self, method: str, layer: int, frame: pd.DataFrame, seconds: float) -> None:
        d = self.cell_dir(method, layer)
        if d is not None:
            write_json({"seconds": seconds}, d / "cell.json")
            write_csv(frame, d / SUMMARY_FILE)

    def baseline(self, key: str) -> pd.DataFrame | None:
        """The unsteered scores of metric ``key``, when resuming."""
        path = self.root / f"baseline-{key}.csv" if self.root else None
        return read_csv(path) if path and self.resume and path.exists() else None

    def save_baseline(self, key: str, frame: pd.DataFrame) -> None:
        if self.root is not None:
            write_csv(frame, self.root / f"baseline-{key}.csv")

    def fit_seconds(self) -> float | None:
        """The seconds of the shared passes recorded by an earlier run."""
        path = self.root / "fit.json" if self.root else None
        return float(json.loads(path.read_text())["seconds"]) if path and path.exists() else None

    def save_fit(self, seconds: float, layers: list[int]) -> None:
        if self.root is not None:
            write_json({"seconds": seconds, "layers": layers}, self.root / "fit.json")

    def save_result(
        self,
        frame: pd.DataFrame,
        effects: pd.DataFrame,
        training: pd.DataFrame,
        meta: Mapping[str, Any],
    ) -> None:
        """The whole sweep: results, effects, training history and ``sweep.json``."""
        if self.root is None:
            return
        write_csv(frame, self.root / "results.csv")
        write_csv(effects, self.root / "effects.csv")
        if not training.empty:
            write_csv(training, self.root / TRAINING_FILE)
        write_json(dict(meta), self.root / "sweep.json")


__all__ = ["CellStore", "read_csv", "write_csv", "write_json"]
