"""The classifier judge's file format: plain JSON (weights, intercept, metadata, gate).

Loading never unpickles; a malformed file raises :class:`~steerlab.errors.JudgeError`
saying what is wrong and how to re-create it.
"""

import json
import math
import os
from pathlib import Path
from typing import Any

from steerlab.errors import ConfigError, JudgeError
from steerlab.evaluation.coherence import CoherenceGate
from steerlab.evaluation.judges.embedder import MINILM_NAME, Embedder, MiniLMEmbedder

FORMAT = "steerlab.classifier-judge"
FORMAT_VERSION = 1


def write_judge_file(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON, atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_judge_file(
    path: str | os.PathLike[str],
    *,
    embedder: Embedder | None,
    device: str,
    default_gate: CoherenceGate | None,
) -> dict[str, Any]:
    """The :class:`ClassifierJudge` constructor arguments stored in ``path``."""
    import numpy as np

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JudgeError(
            f"Classifier judge file {str(path)!r} does not exist; save one with ClassifierJudge.save()."
        ) from None
    except (OSError, ValueError) as exc:
        raise JudgeError(f"Cannot read classifier judge file {str(path)!r}: {exc}") from None

    def bad(why: str) -> JudgeError:
        return JudgeError(
            f"{str(path)!r} is not a valid classifier judge file: {why}. "
            "Re-create it with ClassifierJudge.fit(...).save(path)."
        )

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f"'format' should be {FORMAT!r}")
    if data.get("version") != FORMAT_VERSION:
        raise bad(f"version {data.get('version')!r} is not supported (expected {FORMAT_VERSION})")
    try:
        coef = np.asarray(data["coef"], dtype=np.float64)
        intercept = float(data["intercept"])
        accuracy = float(data["heldout_accuracy"])
        n_train, n_test = int(data["n_train"]), int(data["n_test"])
        embedder_name = str(data["embedder_name"])
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"missing or malformed field ({type(exc).__name__}: {exc})") from None
    if (
        coef.ndim != 1
        or coef.size == 0
        or not np.isfinite(coef).all()
        or not math.isfinite(intercept)
    ):
        raise bad(f"'coef' must be a non-empty list of finite numbers (shape {coef.shape})")
    if embedder is None:
        if embedder_name != MINILM_NAME:
            raise JudgeError(
                f"{str(path)!r} was fitted with embedder {embedder_name!r}; pass that embedder "
                "as ClassifierJudge.load(path, embedder=...)."
            )
        embedder = MiniLMEmbedder(device=device)
    behavior = data.get("behavior")
    gate = data.get("gate", None if default_gate is None else default_gate.to_dict())
    try:
        gate = None if gate is None else CoherenceGate(**gate)
    except (TypeError, ConfigError) as exc:
        raise bad(f"malformed 'gate' ({exc})") from None

    pairs = data.get("pairs")
    if pairs is not None and not isinstance(pairs, dict):
        raise bad("'pairs' must be an object (where the judge's training pairs came from)")
    return dict(
        coef=coef,
        intercept=intercept,
        heldout_accuracy=accuracy,
        n_train=n_train,
        n_test=n_test,
        embedder_name=embedder_name,
        behavior=None if behavior is None else str(behavior),
        test_fraction=float(data.get("test_fraction", 0.2)),
        seed=int(data.get("seed", 0)),
        features=str(data.get("features", "answer")),
        gate=gate,
        pairs=pairs,
        embedder=embedder,
    )
