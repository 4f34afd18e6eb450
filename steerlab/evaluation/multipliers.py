"""Run one per-item evaluation for several steering vectors at several multipliers.

Every judge-free metric (A/B probability, likelihood margin...) has the same outer loop:
for each vector, for each multiplier, score the items under ``steer(model, vec, m)``.
:func:`sweep_multipliers` owns that loop and returns a per-item frame; :func:`summarize`
turns it into the tidy summary ``(vector, method, layer, multiplier, metric, value, sem,
n)``.

Multiplier 0 is the unsteered model, so it is computed once per call and shared by every
vector (and no hook is installed for it).
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.model import SteerlabModel
from steerlab.steering.steer import steer
from steerlab.utils.progress import progress_bar
from steerlab.vectors.vector import SteeringVector

#: The paper's multipliers.
DEFAULT_MULTIPLIERS: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)

VectorsArg = SteeringVector | Sequence[SteeringVector] | None
#: One multiplier or several (ints are fine: the runtime type checker is strict about float).
MultipliersArg = int | float | Sequence[int | float]
#: ``score() -> {column: per-item values}``; every column has one value per item.
ItemScorer = Callable[[], Mapping[str, Any]]

#: Columns that identify a condition, in the order they appear in every frame.
CONDITION_COLUMNS = ("vector", "method", "layer", "multiplier")
SUMMARY_COLUMNS = (*CONDITION_COLUMNS, "metric", "value", "sem", "n")


@dataclass(frozen=True)
class Condition:
    """One evaluated setting: ``vector`` (None = unsteered) added with ``multiplier``.

    ``label``, ``method`` and ``layer`` are what the result frames show.
    """

    vector: SteeringVector | None
    multiplier: float
    label: str
    method: str
    layer: int | str | None

    @property
    def steered(self) -> bool:
        return self.vector is not None and self.multiplier != 0.0


def check_multipliers(multipliers: MultipliersArg) -> tuple[float, ...]:
    """Finite multipliers as floats, duplicates dropped (first occurrence kept)."""
    if isinstance(multipliers, (int, float)) and not isinstance(multipliers, bool):
        multipliers = [multipliers]
    out: list[float] = []
    for m in multipliers:
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m):
            raise ConfigError(
                f"Multiplier {m!r} is not a finite number; pass numbers such as [-2, -1, 0, 1, 2]."
            )
        if float(m) not in out:
            out.append(float(m))
    if not out:
        raise EmptyInputError("No multipliers given; pass e.g. multipliers=[-2, -1, 0, 1, 2].")
    return tuple(out)


def as_vector_list(vectors: VectorsArg) -> list[SteeringVector]:
    """``None`` -> ``[]``, one vector -> ``[vector]``, a sequence -> a checked list."""
    if vectors is None:
        return []
    vecs = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    for v in vecs:
        if not isinstance(v, SteeringVector):
            raise ConfigError(
                f"Expected SteeringVector values, got {type(v).__name__}; load files with "
                "steerlab.load_vector(path)."
            )
    return vecs


def vector_layer(vec: SteeringVector) -> int | str:
    """The vector's layer: an int for a one-layer vector, ``'8+12'`` for several."""
    layers = sorted(set(vec.layers))
    return layers[0] if len(layers) == 1 else "+".join(str(x) for x in layers)


def vector_label(vec: SteeringVector) -> str:
    """A readable name: ``'caa:power-seeking:L12'`` (non-resid_post sites are spelled out)."""
    if all(s.kind == "resid_post" for s in vec.sites):
        where = "L" + str(vector_layer(vec))
    else:
        where = "+".join(str(s) for s in vec.sites)
    return f"{vec.method}:{vec.behavior}:{where}"


def conditions(
    vectors: VectorsArg,
    multipliers: MultipliersArg = DEFAULT_MULTIPLIERS,
    *,
    method: str | None = None,
    layer: int | str | None = None,
) -> list[Condition]:
    """Every (vector, multiplier) to evaluate, vector-major.

    ``vectors=None`` gives one unsteered condition at multiplier 0 (the multipliers are
    ignored: there is nothing to scale). ``method`` / ``layer`` override the labels taken
    from each vector's provenance. Labels of vectors that would collide get ``#2, #3...``.
    """
    mults = check_multipliers(multipliers)
    vecs = as_vector_list(vectors)
    if not vecs:
        return [Condition(None, 0.0, "unsteered", method or "none", layer)]
    out: list[Condition] = []
    seen: dict[str, int] = {}
    for vec in vecs:
        label = vector_label(vec)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        lay = vector_layer(vec) if layer is None else layer
        meth = vec.method if method is None else method
        out.extend(Condition(vec, m, label, meth, lay) for m in mults)
    return out


def sweep_multipliers(
    model: SteerlabModel,
    vectors: VectorsArg,
    multipliers: MultipliersArg,
    score: ItemScorer,
    *,
    method: str | None = None,
    layer: int | str | None = None,
    progress: bool = True,
    desc: str = "evaluate",
) -> pd.DataFrame:
    """Call ``score()`` under each condition and stack its per-item values.

    Returns one row per (condition, item): the :data:`CONDITION_COLUMNS`, ``item`` (the
    item's index) and the columns ``score()`` returned. ``score()`` runs with no hook at
    multiplier 0 (once, shared by all vectors) and inside ``steer(model, vec,
    multiplier=m)`` otherwise.
    """
    conds = conditions(vectors, multipliers, method=method, layer=layer)
    baseline: dict[str, np.ndarray] | None = None
    frames: list[pd.DataFrame] = []
    for cond in progress_bar(conds, desc=desc, enabled=progress):
        if cond.vector is not None and cond.multiplier != 0.0:
            with steer(model, cond.vector, multiplier=cond.multiplier):
                cols = _as_columns(score())
        else:
            if baseline is None:
                baseline = _as_columns(score())
            cols = baseline
        frames.append(condition_frame(cond, cols))
    return pd.concat(frames, ignore_index=True)


def condition_frame(cond: Condition, raw: Mapping[str, Any]) -> pd.DataFrame:
    """One condition's per-item rows: the :data:`CONDITION_COLUMNS`, ``item`` (the item's
    index) and the scorer's columns ``raw`` (tensors, arrays or lists of one length)."""
    cols = _as_columns(raw)
    n = len(next(iter(cols.values())))
    head = {
        "vector": [cond.label] * n,
        "method": [cond.method] * n,
        "layer": pd.Series([cond.layer] * n, dtype=object),
        "multiplier": np.full(n, cond.multiplier),
        "item": np.arange(n),
    }
    return pd.DataFrame({**head, **cols})


def _as_columns(raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not raw:
        raise EmptyInputError("The item scorer returned no columns.")
    cols = {}
    for k, v in raw.items():
        arr = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        cols[k] = arr
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) != 1:
        raise ConfigError(f"Item scorer columns have different lengths: {lengths}.")
    return cols


def summarize(items: pd.DataFrame, metrics: Mapping[str, str]) -> pd.DataFrame:
    """Tidy summary of a per-item frame: mean (``value``), standard error of the mean
    (``sem``) and count (``n``) of each metric per condition.

    ``metrics`` maps a metric name to the per-item column it averages.
    """
    missing = [c for c in metrics.values() if c not in items.columns]
    if missing:
        raise ConfigError(
            f"Columns {missing} are not in the item frame; it has {list(items.columns)}."
        )
    rows: list[dict[str, Any]] = []
    keys = list(CONDITION_COLUMNS)
    for _, group in items.groupby(keys, sort=False, dropna=False):
        cond = {k: group[k].iloc[0] for k in keys}  # the group's own values (None stays None)
        for metric, col in metrics.items():
            vals = group[col].to_numpy(dtype=float)
            n = int(np.isfinite(vals).sum())
            mean = float(np.nanmean(vals)) if n else float("nan")
            sem = float(np.nanstd(vals, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
            rows.append({**cond, "metric": metric, "value": mean, "sem": sem, "n": n})
    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    out["layer"] = pd.Series([r["layer"] for r in rows], dtype=object)  # ints stay ints
    return out


def pivot_metric(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One metric as a table: a row per vector, a column per multiplier."""
    sub = summary[summary["metric"] == metric]
    if sub.empty:
        raise ConfigError(
            f"No metric {metric!r} in the summary; it has {sorted(summary['metric'].unique())}."
        )
    return sub.pivot_table(
        index=["vector", "method"], columns="multiplier", values="value", sort=False
    )
