"""Plain-language findings of a matched comparison (:mod:`steerlab.analysis.matched`),
the lines ``steerlab run`` and ``steerlab sweep`` reports open with, and its tables on
disk."""

from collections.abc import Sequence
from pathlib import Path

from steerlab.analysis.matched import MatchedComparison, leader
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


def write_matched(out: Path, comp: MatchedComparison) -> None:
    """``matched_kl.csv``, ``matched_strength.csv`` and ``kl.csv`` under ``out``."""
    atomic_write_text(out / "matched_kl.csv", comp.at_kl.to_csv(index=False))
    atomic_write_text(out / "matched_strength.csv", comp.at_strength.to_csv(index=False))
    atomic_write_text(out / "kl.csv", comp.kl.to_csv(index=False))


__all__ = ["HEADLINE_KL", "matched_findings", "write_matched"]
