"""A classifier judge's validation on held-out pairs (:func:`pair_accuracy`)."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from steerlab.evaluation.judges.base import JudgeRequest


def _pair_bootstrap_ci(
    values: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile CI of the mean of ``values``; rows (pairs) are resampled together."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    axes = (1, 2) if values.ndim == 2 else 1
    low, high = np.percentile(values[idx].mean(axis=axes), [2.5, 97.5])
    return float(low), float(high)


def pair_accuracy(
    judge: Any,
    questions: Sequence[str],
    matching: Sequence[str],
    not_matching: Sequence[str],
    *,
    behavior: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """A classifier judge on held-out pairs: ``accuracy`` over both answers of every pair
    (P(matching) >= 0.5 for the matching one, < 0.5 for the other) with a 95% bootstrap
    CI over pairs, ``pairwise_accuracy`` (the matching answer gets the higher P), the mean
    scores of each side, and the share of answers its coherence gate rejects (with the
    accuracy on those it passes)."""
    qs = list(questions)
    p_pos = judge.predict_proba(list(matching), qs)
    p_neg = judge.predict_proba(list(not_matching), qs)
    correct = np.stack([p_pos >= 0.5, p_neg < 0.5], axis=1).astype(float)  # [pairs, 2]
    pairwise = (p_pos > p_neg).astype(float)
    b = behavior or judge.behavior or "unknown"
    answers = [*matching, *not_matching]
    gated = judge.score([JudgeRequest(b, q, a) for q, a in zip(qs * 2, answers)])
    ok = np.array([r.status == "ok" for r in gated]).reshape(2, -1).T  # [pairs, 2]
    return {
        "n_pairs": len(qs),
        "n_answers": 2 * len(qs),
        "accuracy": round(float(correct.mean()), 4),
        "accuracy_ci95": [round(x, 4) for x in _pair_bootstrap_ci(correct, seed=seed)],
        "pairwise_accuracy": round(float(pairwise.mean()), 4),
        "pairwise_ci95": [round(x, 4) for x in _pair_bootstrap_ci(pairwise, seed=seed)],
        "mean_score_matching": round(float(1 + 3 * p_pos.mean()), 3),
        "mean_score_not_matching": round(float(1 + 3 * p_neg.mean()), 3),
        "gate_rejected_share": round(float(1 - ok.mean()), 4),
        "accuracy_on_gate_passed": round(float(correct[ok].mean()), 4) if ok.any() else None,
        "n_gate_passed": int(ok.sum()),
    }
