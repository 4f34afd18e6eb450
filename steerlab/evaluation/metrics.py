"""The registry of judge-free metrics, and evaluating named vectors with one of them.

A :class:`Metric` is an evaluation function with the tidy frame of
:mod:`steerlab.evaluation.multipliers` (``vector, method, layer, multiplier, metric,
value, sem, n``), the kind of held-out items it scores and the row that measures
steering. :data:`METRICS` holds ``margin`` (likelihood margin on pairs) and ``ab`` (A/B
probability on items), both through their fast paths (cached lower residuals; the same
numbers, 2-3x cheaper), ``margin_plain`` / ``ab_plain`` (the plain paths they are checked
against) and ``margin_fast`` / ``ab_fast`` (older names of the first two); sweeps,
combinations and transfer take any of them by name, or a :class:`Metric`.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from steerlab._registry import Registry
from steerlab.data.convert import as_pairs
from steerlab.data.pairs import BehaviorData, pairs_to_ab
from steerlab.errors import EmptyInputError
from steerlab.evaluation.ab import ab_probability
from steerlab.evaluation.ab_fast import ab_probability_fast
from steerlab.evaluation.likelihood import likelihood_margin
from steerlab.evaluation.likelihood_fast import likelihood_margin_fast
from steerlab.evaluation.multipliers import check_multipliers, vector_layer
from steerlab.models.model import SteerlabModel
from steerlab.utils.progress import progress_bar
from steerlab.vectors.vector import SteeringVector


@dataclass(frozen=True)
class Metric:
    """A judge-free evaluation: ``evaluate(model, data, vectors, multipliers, batch_size=,
    progress=)`` returns the tidy frame ``vector, method, layer, multiplier, metric,
    value, sem, n``. ``data`` says what it scores (``'pairs'`` or ``'ab'`` items) and
    ``primary`` is the metric row that measures steering (used for effect sizes).
    ``caches``: ``evaluate`` also takes ``caches=`` (a dict of per-layer residual caches
    of the same items, reused across calls: :func:`likelihood_margin_fast`)."""

    name: str
    data: str
    primary: str
    evaluate: Callable[..., pd.DataFrame]
    description: str
    caches: bool = False

    def items(self, split: Any) -> Any:
        """The part of a held-out split it scores: ``split.test`` pairs or
        ``split.test_ab`` items."""
        return split.test if self.data == "pairs" else split.test_ab


METRICS: Registry[Metric] = Registry("metric")


def _register(
    name: str, data: str, primary: str, fast: Any, plain: Any, what: str, caches: bool = False
) -> None:
    """``name`` runs the fast path (cached lower residuals; it falls back to the plain one
    where it does not apply), whose numbers equal the plain path's (tests check both on
    the tiny and the embedded model); ``{name}_plain`` the plain path; ``{name}_fast`` is
    the older name of ``name``; ``caches``: the fast path takes ``caches=``."""
    METRICS.register(name, Metric(name, data, primary, fast, f"{what} (fast path)", caches))
    plain_what = f"{what} (plain path: each sequence in full through the hooks)"
    METRICS.register(f"{name}_plain", Metric(f"{name}_plain", data, primary, plain, plain_what))
    older = f"the '{name}' metric (an older name)"
    METRICS.register(f"{name}_fast", Metric(f"{name}_fast", data, primary, fast, older, caches))


_register("margin", "pairs", "margin", likelihood_margin_fast, likelihood_margin,
          "likelihood margin log p(matching) - log p(not matching) of held-out pairs",
          caches=True)  # fmt: skip
_register("ab", "ab", "p_matching", ab_probability_fast, ab_probability,
          "P(matching letter) of held-out A/B items")  # fmt: skip


def primary_metric(name: str) -> str:
    """The summary row that measures steering for a metric key or a row name."""
    if name in METRICS:
        return METRICS.get(name).primary
    return name


def resolve_metric(metric: "str | Metric") -> Metric:
    """A :class:`Metric` from its registered name (or the metric itself)."""
    if isinstance(metric, Metric):
        return metric
    return METRICS.get(str(metric))


def metric_items(data: Any, metric: "str | Metric", n: int | None = None, seed: int = 0) -> Any:
    """The held-out items a metric scores: test pairs, or A/B items (``test_ab``, else
    the pairs turned into A/B items with ``pairs_to_ab(seed)``), the first ``n``."""
    m = resolve_metric(metric)
    if isinstance(data, BehaviorData):
        pairs = data.test
        ab = data.test_ab
    else:
        items = list(data)
        if not items:
            raise EmptyInputError("No evaluation items given.")
        pairs = as_pairs(items)
        ab = items if hasattr(items[0], "choices") else None
    pairs = list(pairs)[:n] if n else list(pairs)
    if m.data == "pairs":
        return pairs
    if ab is None:
        return list(pairs_to_ab(pairs, seed))
    return list(ab)[:n] if n else list(ab)


def with_baseline(
    frame: pd.DataFrame | None, baseline: pd.DataFrame, label: str, vec: SteeringVector
) -> pd.DataFrame:
    """The shared unsteered ``baseline`` rows relabelled as ``vec``'s (``vector`` =
    ``label``), in front of ``frame`` (the vector's steered rows, if any)."""
    base = baseline.copy()
    base["vector"] = label
    base["method"] = vec.method
    base["layer"] = pd.Series([vector_layer(vec)] * len(base), dtype=object)
    return base if frame is None else pd.concat([base, frame], ignore_index=True)


def evaluate_named(
    model: SteerlabModel,
    items: Any,
    vectors: Mapping[str, SteeringVector],
    multipliers: Sequence[float],
    metric: "str | Metric" = "margin",
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> pd.DataFrame:
    """Evaluate each named vector across ``multipliers`` on ``items``.

    The unsteered model (multiplier 0) is evaluated once and shared. Returns the metric's
    tidy frame plus a ``name`` column (the key in ``vectors``).
    """
    m = resolve_metric(metric)
    mults = check_multipliers(multipliers)
    nonzero = [x for x in mults if x != 0.0]
    base = (
        m.evaluate(model, items, None, [0.0], batch_size=batch_size, progress=False)
        if 0.0 in mults
        else None
    )
    frames = []
    for name, vec in progress_bar(list(vectors.items()), desc=m.name, enabled=progress):
        f = None
        if nonzero:
            f = m.evaluate(model, items, vec, nonzero, batch_size=batch_size, progress=False)
        if base is not None:
            f = with_baseline(f, base, f["vector"].iloc[0] if f is not None else name, vec)
        assert f is not None  # check_multipliers refuses an empty list
        f.insert(0, "name", name)
        frames.append(f)
    if not frames:
        raise EmptyInputError("evaluate_named() got no vectors.")
    out = pd.concat(frames, ignore_index=True)
    out["layer"] = out["layer"].astype(object)
    return out


__all__ = [
    "METRICS",
    "Metric",
    "evaluate_named",
    "metric_items",
    "primary_metric",
    "resolve_metric",
    "with_baseline",
]
