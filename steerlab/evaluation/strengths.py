"""Evaluating at strengths instead of raw multipliers.

Every evaluation entry point sweeps ``(vector, multiplier)``. A sweep in strength units
(``strength = |k v| / mean ||h||``, :mod:`steerlab.steering.strength`) is the same sweep
over the vectors rescaled to *norm units* (each site's direction as long as the typical
residual there), on which the multiplier equals the strength. :func:`at_strengths` runs
an entry point that way and labels the result: a ``strength`` column, and ``multiplier``
converted back to the original vector's multiplier (NaN for a multi-site vector whose
sites need different multipliers). Rows of the unsteered model have strength 0.
"""

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from steerlab.errors import ConfigError
from steerlab.evaluation.multipliers import (
    DEFAULT_MULTIPLIERS,
    MultipliersArg,
    VectorsArg,
    as_vector_list,
    check_multipliers,
    conditions,
    summarize,
)
from steerlab.models.model import SteerlabModel
from steerlab.steering.strength import in_norm_units, site_multipliers, vector_norms
from steerlab.vectors.vector import SteeringVector

#: ``run(vectors, multipliers) -> frame`` with the condition columns.
Runner = Callable[[list[SteeringVector], tuple[float, ...]], pd.DataFrame]


def check_strength_args(
    multipliers: MultipliersArg | None, strengths: MultipliersArg | None
) -> tuple[float, ...] | None:
    """The strengths as floats, or ``None`` when ``multipliers`` are used.

    Entry points default ``multipliers`` to :data:`DEFAULT_MULTIPLIERS`; passing other
    multipliers together with ``strengths`` is an error.
    """
    if strengths is None:
        return None
    if multipliers is not None and multipliers is not DEFAULT_MULTIPLIERS:
        raise ConfigError(
            f"Got both multipliers={multipliers!r} and strengths={strengths!r}; pass exactly "
            "one (strengths are |k v| / mean ||h|| at the hook site, e.g. [0, 0.05, 0.1])."
        )
    return check_multipliers(strengths)


def _multiplier_of(vec: SteeringVector, norms: Mapping, strength: float) -> float:
    per_site = list(site_multipliers(vec, strength, norms).values())
    same = all(math.isclose(m, per_site[0], rel_tol=1e-9, abs_tol=1e-12) for m in per_site)
    return per_site[0] if same else float("nan")


def at_strengths(
    model: SteerlabModel,
    vectors: VectorsArg,
    strengths: Sequence[float],
    run: Runner,
) -> pd.DataFrame:
    """``run`` over the vectors in norm units with ``multipliers=strengths``, relabelled.

    The result has the columns of ``run``'s frame plus ``strength`` (after
    ``multiplier``); ``multiplier`` is the original vector's equivalent multiplier.
    """
    originals = as_vector_list(vectors)
    norms = [vector_norms(model, v) for v in originals]
    scaled = [in_norm_units(v, n) for v, n in zip(originals, norms)]
    frame = run(scaled, tuple(strengths))
    labels = {c.label: i for i, c in enumerate(conditions(originals, [1.0]))}
    strength = frame["multiplier"].to_numpy(dtype=float)
    mult = strength.copy()
    for k, (label, s) in enumerate(zip(frame["vector"], strength)):
        i = labels.get(label)
        if i is not None and s != 0.0:
            mult[k] = _multiplier_of(originals[i], norms[i], float(s))
    out = frame.drop(columns=["strength"], errors="ignore")  # rows that stored their own
    out["multiplier"] = mult
    out.insert(list(out.columns).index("multiplier") + 1, "strength", strength)
    return out


def summarize_by_strength(
    items: pd.DataFrame, summarizer: Callable[[pd.DataFrame], pd.DataFrame]
) -> pd.DataFrame:
    """``summarizer`` (any summary grouped by ``multiplier``: ``summarize``,
    ``summarize_mmlu``...) of a per-item frame that has a ``strength`` column, grouped by
    strength instead (multipliers may be NaN); the summary has both columns."""
    if "strength" not in items.columns:
        raise ConfigError("A summary by strength needs a 'strength' column; use summarize().")
    mults = items.groupby(["vector", "strength"], sort=False)["multiplier"].first()
    by_strength = items.drop(columns=["multiplier"]).rename(columns={"strength": "multiplier"})
    summary = summarizer(by_strength)
    out = summary.rename(columns={"multiplier": "strength"})
    out.insert(
        list(out.columns).index("strength"),
        "multiplier",
        np.array([mults.get(k, np.nan) for k in zip(out["vector"], out["strength"])], dtype=float),
    )
    out.attrs.update(summary.attrs)
    return out


def summarize_strengths(items: pd.DataFrame, metrics: Mapping[str, str]) -> pd.DataFrame:
    """:func:`~steerlab.evaluation.multipliers.summarize` of a per-item frame that has a
    ``strength`` column: grouped by strength (multipliers may be NaN), both kept."""
    return summarize_by_strength(items, lambda frame: summarize(frame, metrics))


def evaluate_conditions(
    model: SteerlabModel,
    vectors: VectorsArg,
    multipliers: MultipliersArg,
    strengths: MultipliersArg | None,
    run: Runner,
    metrics: Mapping[str, str],
    per_item: bool,
) -> pd.DataFrame:
    """The evaluation of an entry point: ``run(vectors, multipliers)`` must return its
    per-item frame. Without ``strengths``, that frame at the multipliers; with them, at
    the strengths (:func:`at_strengths`: vectors in norm units, a ``strength`` column).
    Returns the frame, or its summary of ``metrics`` (grouped by strength with them)."""
    strength_list = check_strength_args(multipliers, strengths)
    if strength_list is None:
        frame = run(as_vector_list(vectors), check_multipliers(multipliers))
        return frame if per_item else summarize(frame, metrics)
    items = at_strengths(model, vectors, strength_list, run)
    return items if per_item else summarize_strengths(items, metrics)
