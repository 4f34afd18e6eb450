"""Plain-language findings of a matched comparison (:mod:`steerlab.analysis.matched`),
the lines ``steerlab run`` and ``steerlab sweep`` reports open with, a sweep's vectors
compared that way (:func:`sweep_matched`), and the tables on disk."""

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlab.analysis.matched import MatchedComparison, compare, leader
from steerlab.utils.files import atomic_write_text

#: The damage level the findings quote first (nats/token of KL on neutral text).
HEADLINE_KL = 0.2


def matched_findings(
    comp: MatchedComparison, groups: Sequence[Sequence[str]] = (), per_vector: bool = True
) -> list[str]:
    """Plain-language lines: the leader at KL 0.2 (named only with a CI that excludes 0),
    the leader within each of ``groups`` (e.g. one method's layers), then each vector's
    effect and both answers' changes there (``per_vector``), then flagged curves."""
    lines = [f"- {leader(comp, HEADLINE_KL)}"]
    lines += [f"- Among {', '.join(g)}: {leader(comp, HEADLINE_KL, among=g)}" for g in groups]
    table = comp.table("kl", HEADLINE_KL)
    for r in table.to_dict("records") if per_vector else []:
        if r["note"].startswith("not reached"):
            lines.append(
                f"- {r['vector']}: never reaches KL {HEADLINE_KL:g} within strengths up to "
                f"{max(comp.strengths):g}."
            )
            continue
        lines.append(
            f"- {r['vector']} at KL {HEADLINE_KL:g} (strength {r['strength']:.3g}): margin "
            f"{r['margin change']}, log p(matching) {r['d log p(matching)']}, log p(not "
            f"matching) {r['d log p(not matching)']}; pairs moved the wrong way "
            f"{r['pairs moved the wrong way']} (n = {r['n']})."
        )
    flagged = [r["vector"] for r in comp.reliability.to_dict("records") if not r["monotonic"]]
    if flagged:
        lines.append(
            f"- Not monotonic in strength: {', '.join(flagged)} (flagged; read their matched "
            "numbers with care)."
        )
    return lines


def sweep_matched(
    model: Any,
    data: Any,
    result: Any,
    strengths: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.4),
    n_neutral: int = 16,
) -> Any:
    """A :class:`~steerlab.analysis.sweeps.SweepResult` with its vectors compared at
    matched KL and matched strength on the sweep's own held-out pairs (``result.matched``;
    ``result.info["matched_leader"]``: the leader at KL 0.2, named only with a CI that
    excludes 0). ``data`` and ``result.config`` must be the sweep's (the same split)."""
    from steerlab.data.splits import held_out

    cfg = result.config
    split = held_out(data, cfg.n_train, cfg.n_test, cfg.seed, cfg.n_judge)
    named = {f"{m} L{x}": v for (m, x), v in result.vectors.items()}
    comp = compare(model, list(split.test), named, strengths, neutral=n_neutral,
                   seed=cfg.seed, batch_size=cfg.batch_size)  # fmt: skip
    info = {**result.info, "matched_leader": leader(comp, HEADLINE_KL)}
    return dataclasses.replace(result, matched=comp, info=info)


def write_matched(out: Path, comp: MatchedComparison) -> None:
    """``matched_kl.csv``, ``matched_strength.csv`` and ``kl.csv`` under ``out``."""
    atomic_write_text(out / "matched_kl.csv", comp.at_kl.to_csv(index=False))
    atomic_write_text(out / "matched_strength.csv", comp.at_strength.to_csv(index=False))
    atomic_write_text(out / "kl.csv", comp.kl.to_csv(index=False))


__all__ = ["HEADLINE_KL", "matched_findings", "sweep_matched", "write_matched"]
