"""The run's matched comparison: its methods at matched damage, the findings it leads with.

Raw multipliers compare vector lengths as much as methods (at layer 14 of the embedded
model a freeform vector is ~7x longer than a BiPO one), so ``steerlab run`` also sweeps
every vector in strength units (``|k v| / mean ||h||``) on its held-out pairs and measures
the damage (KL on neutral text) at each strength
(:func:`steerlab.analysis.matched.compare`). Its report opens with the comparison at
matched KL, with paired bootstrap CIs; the raw-multiplier numbers follow, labelled as such.
"""

from typing import Any

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


__all__ = ["run_matched"]
