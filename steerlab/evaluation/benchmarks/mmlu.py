"""MMLU under steering: does a steering vector cost general knowledge? (the paper's utility check)

**Two-choice MMLU, not MMLU**: CAA's subsample (``load_mmlu``: 57 subjects x 10 = 570
items) keeps the correct answer and *one* distractor per question, so chance is 0.5,
not the 0.25 of four-choice MMLU, and the numbers are not comparable to MMLU scores
reported elsewhere. Summaries say so (:data:`MMLU_LABEL`, a ``chance`` column) and give
accuracy with ``n`` and a 95% Wilson interval (``ci_low``, ``ci_high``). Each item
is asked like an A/B behavior item (question and choices in the user turn, the assistant
turn opened with ``"("``) and scored from the next-token logits of the two letters:

- ``accuracy``: share of items with P(correct letter) > P(other letter);
- ``p_correct``: mean P(correct letter), normalised over the two letters;
- ``letter_mass``: mean P(A) + P(B) under the full next-token distribution (low = the
  model would not answer with a letter, so the other two numbers mean less).

The paper (Mistral, Table 11) reports 0.561-0.585 at multipliers -1 / +1 vs 0.573
unsteered, with 30 questions per subject (this file has 10 per subject).
"""

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from steerlab.data import MCDataset, MCItem, load_mmlu
from steerlab.errors import EmptyInputError
from steerlab.evaluation.ab import ab_scores
from steerlab.evaluation.benchmarks.stats import add_ci
from steerlab.evaluation.multipliers import VectorsArg, summarize, sweep_multipliers
from steerlab.models.model import SteerlabModel

#: The paper's MMLU multipliers.
UTILITY_MULTIPLIERS: tuple[float, ...] = (-1.0, 0.0, 1.0)
#: metric name -> per-item column of ``mmlu_accuracy(..., per_item=True)``.
MMLU_METRICS = {"accuracy": "correct", "p_correct": "p_correct", "letter_mass": "letter_mass"}
#: What the benchmark is (shown in tables and figures).
MMLU_LABEL = "MMLU two-choice (CAA's set: correct answer vs one distractor; chance 0.5)"
#: Accuracy of guessing between the two choices.
MMLU_CHANCE = 0.5


def summarize_mmlu(items: pd.DataFrame) -> pd.DataFrame:
    """The tidy summary of a per-item MMLU frame with ``ci_low, ci_high`` (Wilson for
    accuracy), ``chance`` (0.5 for accuracy and p_correct) and ``benchmark`` (the label)."""
    out = add_ci(summarize(items, MMLU_METRICS), binary=("accuracy",))
    chance = {"accuracy": MMLU_CHANCE, "p_correct": MMLU_CHANCE}
    return out.assign(
        chance=[chance.get(m, float("nan")) for m in out["metric"]], benchmark=MMLU_LABEL
    )


def mmlu_accuracy(
    model: SteerlabModel,
    vectors: VectorsArg = None,
    multipliers: "float | Sequence[float]" = UTILITY_MULTIPLIERS,
    per_subject: int | None = None,
    *,
    data: "MCDataset | Iterable[MCItem] | None" = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    per_item: bool = False,
    fast: bool = True,
) -> pd.DataFrame:
    """Two-choice MMLU accuracy under steering, as a tidy frame (``vector, method, layer,
    multiplier, metric, value, sem, n, ci_low, ci_high, chance, benchmark``) with metrics
    ``accuracy``, ``p_correct``, ``letter_mass`` (:func:`summarize_mmlu`).

    Args:
        vectors: a vector, a list of them, or None (unsteered only).
        multipliers: the paper's -1 / 0 / +1 by default; 0 is computed once.
        per_subject: items per subject (seeded draw, 1-10); None = all 570.
        data: score these two-choice items instead of loading CAA's MMLU file.
        per_item: return the per-item scores instead: the condition columns, ``item,
            category`` (the subject), ``correct_letter, p_correct, correct, letter_mass,
            p_a, p_b``.
        fast: score through :func:`~steerlab.evaluation.ab_fast.ab_probability_fast`
            (the lower layers' residuals computed once per batch for every condition,
            the unembedding at the answer position only; the same numbers up to float
            rounding, and it falls back to the plain path where it does not apply);
            False: one full forward per condition.
    """
    items = list(data if data is not None else load_mmlu(per_subject=per_subject, seed=seed))
    if not items:
        raise EmptyInputError("No two-choice items to score.")
    ab = [it.to_ab() for it in items]  # matching letter = the correct one
    columns = ["category", "correct_letter", "p_correct", "correct", "letter_mass", "p_a", "p_b"]
    if fast:
        from steerlab.evaluation.ab_fast import ab_probability_fast

        raw = ab_probability_fast(model, ab, vectors, multipliers, batch_size=batch_size,
                                  progress=progress, per_item=True)  # fmt: skip
        idx = raw["item"].to_numpy()
        head = list(raw.columns[: list(raw.columns).index("item") + 1])
        frame = raw.rename(columns={"p_matching": "p_correct", "matched": "correct"}).assign(
            category=[items[i].category for i in idx],
            correct_letter=[items[i].correct for i in idx],
        )[[*head, *columns]]
        return frame if per_item else summarize_mmlu(frame)

    def score() -> dict[str, Any]:
        s = ab_scores(model, ab, batch_size)
        s = {**s, "p_correct": s["p_matching"], "correct": s["matched"],
             "category": [it.category for it in items],
             "correct_letter": [it.correct for it in items]}  # fmt: skip
        return {k: s[k] for k in columns}

    frame = sweep_multipliers(model, vectors, multipliers, score, progress=progress, desc="MMLU")
    return frame if per_item else summarize_mmlu(frame)
