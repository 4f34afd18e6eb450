"""The run's matched comparison: its methods at matched damage, the findings it leads with.

Raw multipliers compare vector lengths as much as methods (at layer 14 of the embedded
model a freeform vector is ~7x longer than a BiPO one), so ``steerlab run`` also sweeps
every vector in strength units (``|k v| / mean ||h||``) on its held-out pairs and measures
the damage (KL on neutral text) at each strength
(:func:`steerlab.analysis.matched.compare`). Its report opens with the comparison at
matched KL, with paired bootstrap CIs; the raw-multiplier numbers follow, labelled as such.

The run's open-ended answers are generated at the same strengths, so the judge's scores
sit beside the KL the comparison measured there (:func:`judged_changes`).
"""

import math
from typing import Any

import pandas as pd

from steerlab.analysis.matched import MatchedComparison, compare
from steerlab.run.config import RunConfig


def run_matched(
    model: Any, cfg: RunConfig, pairs: list[Any], vectors: dict[str, Any]
) -> MatchedComparison:
    """The run's vectors (named by method) swept over ``cfg.strengths`` on ``pairs``."""
    return compare(
        model,
        pairs,
        vectors,
        cfg.strengths,
        neutral=cfg.n_neutral,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
    )


def judged_changes(generations: pd.DataFrame, matched: MatchedComparison | None) -> pd.DataFrame:
    """The judge score of answers generated at strengths (``run_open_ended(strengths=)``),
    per method and strength: its mean and its change versus strength 0, each question
    against itself (:func:`~steerlab.analysis.effects.paired_changes`: bootstrap CIs over
    the questions), with the KL on neutral text ``matched`` measured at that strength
    (NaN without a matched comparison)."""
    from steerlab.analysis.effects import paired_changes
    from steerlab.evaluation.open_ended import OPEN_ENDED_METRICS

    table = paired_changes(generations, {"judge_score": OPEN_ENDED_METRICS["judge_score"]})
    if matched is None:
        return table.assign(kl=math.nan)
    kl = matched.kl[["vector", "strength", "kl"]].rename(columns={"vector": "method"})
    return table.merge(kl, on=["method", "strength"], how="left")


def judged_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`judged_changes` as the report shows it: CIs in brackets, KL beside."""
    from steerlab.analysis.matched import fmt_ci

    rows = [
        {
            "method": r.method,
            "strength": r.strength,
            "multiplier": r.multiplier,
            "n": r.n,
            "judge score [95% CI]": fmt_ci(r.mean, r.low, r.high, "{:.2f}") if r.n else "-",
            "change vs strength 0": (
                "-"
                if r.strength == 0 or r.change != r.change  # nothing scored here or at 0
                else fmt_ci(r.change, r.change_low, r.change_high)
            ),
            "KL": r.kl,
        }
        for r in table.itertuples(index=False)
    ]
    return pd.DataFrame(rows)


def judged_findings(table: pd.DataFrame, n_questions: int) -> list[str]:
    """One line: each method's judge-score change at the middle positive strength of the
    grid, with its CI and KL (no method is named best: a handful of questions, one seed)."""
    from steerlab.analysis.effects import describe_change
    from steerlab.analysis.matched import MIN_ITEMS, fmt_ci

    positive = sorted({float(s) for s in table["strength"] if s > 0})
    if not positive:
        return []
    at = positive[(len(positive) - 1) // 2]
    rows = table[table["strength"] == at]
    parts = []
    for r in rows.itertuples(index=False):
        kl = "" if r.kl != r.kl else f", KL {r.kl:.3f}"
        if r.n == 0 or r.change != r.change:  # nothing scored here, or at strength 0
            parts.append(f"{r.method} no paired change (n = {r.n}{kl})")
        elif r.n < MIN_ITEMS:
            ci = fmt_ci(r.change, r.change_low, r.change_high)
            parts.append(f"{r.method} {ci} (n = {r.n}{kl})")
        else:
            parts.append(f"{r.method} {describe_change(r.change, r.change_low, r.change_high, r.n)}"
                         f"{kl}")  # fmt: skip
    few = (
        f" Fewer than {MIN_ITEMS} scored answers per condition: too few for these CIs to "
        "hold (a check of the pipeline, not a ranking)."
        if rows["n"].min() < MIN_ITEMS
        else ""
    )
    return [
        f"- Judge score (classifier, 1-4) of the open-ended answers at matched strength "
        f"{at:g}, change vs strength 0 over {n_questions} questions (paired CIs, one seed): "
        + "; ".join(parts)
        + "."
        + few
    ]


__all__ = ["judged_changes", "judged_findings", "judged_table", "run_matched"]
