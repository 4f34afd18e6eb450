"""The run's matched comparison: its methods at matched damage, the findings it leads with.

Raw multipliers compare vector lengths as much as methods (at layer 14 of the embedded
model a freeform vector is ~7x longer than a BiPO one), so ``steerlab run`` also sweeps
every vector in strength units (``|k v| / mean ||h||``) on its held-out pairs and measures
the damage (KL on neutral text) at each strength
(:func:`steerlab.analysis.matched.compare`). Its report opens with the comparison at
matched KL, with paired bootstrap CIs; the raw-multiplier numbers follow, labelled as such.
"""

from pathlib import Path
from typing import Any

from steerlab.analysis.matched import MatchedComparison, compare, leader
from steerlab.run.config import RunConfig
from steerlab.utils.files import atomic_write_text

#: The damage level the findings quote first (nats/token of KL on neutral text).
HEADLINE_KL = 0.2


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


def matched_findings(comp: MatchedComparison) -> list[str]:
    """Plain-language lines: the leader at KL 0.2 (named only with a CI that excludes 0),
    then each method's effect and both answers' changes there, then flagged curves."""
    lines = [f"- {leader(comp, HEADLINE_KL)}"]
    table = comp.table("kl", HEADLINE_KL)
    for r in table.to_dict("records"):
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
