"""Effect sizes: how strongly a vector steers a metric.

- :func:`effect_sizes`: slope, range and shape over the multipliers, from a tidy summary
  frame (point values, no uncertainty).
- :func:`paired_changes`: from a per-item frame, each condition's mean with a bootstrap CI
  and its change versus the same vector at multiplier 0 on the same items, with a paired
  bootstrap CI (what ``steerlab eval likelihood|ab|open`` prints).
- :func:`describe_change`: one such change in words, said only as far as its CI and its
  number of items allow.
"""

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from steerlab.analysis.reliability import bootstrap_ci, bootstrap_indices
from steerlab.errors import ConfigError
from steerlab.evaluation.metrics import primary_metric
from steerlab.evaluation.multipliers import CONDITION_COLUMNS

EFFECT_COLUMNS = (
    "vector",
    "method",
    "layer",
    "metric",
    "slope",
    "delta",
    "at_min",
    "at_zero",
    "at_max",
    "monotonic",
    "n_multipliers",
)


def effect_sizes(frame: pd.DataFrame, metrics: "str | Sequence[str] | None" = None) -> pd.DataFrame:
    """How strongly each vector steers each metric, from a tidy summary frame.

    One row per ``(vector, method, layer, metric)``: ``slope`` (least-squares slope of
    the value over the multipliers), ``delta`` (value at the largest minus value at the
    smallest multiplier), ``at_min / at_zero / at_max``, ``monotonic`` (``'up'``,
    ``'down'`` or ``'no'`` over the sorted multipliers) and ``n_multipliers``.
    ``metrics`` selects metric rows (``'margin'``, ``'ab'`` map to their primary rows).
    """
    sub = frame
    if metrics is not None:
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        wanted = [primary_metric(m) for m in names]
        sub = frame[frame["metric"].isin(wanted)]
        if sub.empty:
            raise ConfigError(
                f"No rows for metrics {wanted}; the frame has {sorted(frame['metric'].unique())}."
            )
    rows = []
    for key, g in sub.groupby(["vector", "method", "layer", "metric"], sort=False, dropna=False):
        g = g.sort_values("multiplier")
        x, y = g["multiplier"].to_numpy(float), g["value"].to_numpy(float)
        ok = np.isfinite(y)
        slope = float(np.polyfit(x[ok], y[ok], 1)[0]) if ok.sum() >= 2 else float("nan")
        zero = g.loc[g["multiplier"] == 0.0, "value"]
        steps = np.diff(y)
        mono = "up" if (steps > 0).all() else "down" if (steps < 0).all() else "no"
        rows.append(
            {
                **dict(zip(("vector", "method", "layer", "metric"), key)),
                "slope": slope,
                "delta": float(y[-1] - y[0]) if len(y) >= 2 else float("nan"),
                "at_min": float(y[0]),
                "at_zero": float(zero.iloc[0]) if len(zero) else float("nan"),
                "at_max": float(y[-1]),
                "monotonic": mono if len(y) >= 2 else "no",
                "n_multipliers": len(y),
            }
        )
    out = pd.DataFrame(rows, columns=list(EFFECT_COLUMNS))
    out["layer"] = out["layer"].astype(object)
    return out


PAIRED_COLUMNS = (
    *CONDITION_COLUMNS,
    "metric",
    "n",
    "mean",
    "low",
    "high",
    "change",
    "change_low",
    "change_high",
)


def paired_changes(
    items: pd.DataFrame,
    metrics: Mapping[str, str],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per condition and metric: the mean over items with a percentile bootstrap CI, and
    the change versus the same vector at multiplier 0, per item, with its CI.

    ``items`` is a per-item frame (the :data:`CONDITION_COLUMNS`, ``item`` and the metric
    columns; e.g. ``likelihood_margin_fast(per_item=True)``); ``metrics`` maps a metric
    name to its column (``LIKELIHOOD_METRICS``, ``AB_METRICS``). The change is paired:
    each item is compared with itself unsteered, and every bootstrap resample draws the
    same items for the steered and the unsteered values, so the CI of the change is not
    widened by how much items differ from one another (for the likelihood margin that
    spread is ~40 nats, the effect of a vector often under 1). Items whose value is not
    finite in either condition are left out of that condition's numbers (``n`` says how
    many were used). Without a multiplier-0 row for a vector its changes are NaN.

    A frame evaluated at ``strengths=`` (it has a ``strength`` column) is grouped by
    strength instead, the change taken versus strength 0, and the output keeps
    ``strength`` after ``multiplier`` (a vector whose sites need different multipliers
    for one strength has multiplier NaN there).
    """
    need = {*CONDITION_COLUMNS, "item", *metrics.values()}
    missing = sorted(need - set(items.columns))
    if missing:
        raise ConfigError(f"paired_changes() needs columns {missing}; got {list(items.columns)}.")
    idx_cache: dict[int, np.ndarray] = {}

    def ci(values: np.ndarray) -> tuple[float, float, float]:
        n = len(values)
        if n == 0:
            return (float("nan"),) * 3
        if n not in idx_cache:
            idx_cache[n] = bootstrap_indices(n, n_boot, seed)
        return bootstrap_ci(values, idx_cache[n], level)

    key = "strength" if "strength" in items.columns else "multiplier"
    columns = list(PAIRED_COLUMNS)
    if key == "strength":
        columns.insert(columns.index("multiplier") + 1, "strength")
    rows = []
    for _, group in items.groupby("vector", sort=False):
        base = group[group[key] == 0.0].drop_duplicates("item").set_index("item")
        for _, cond in group.groupby(key, sort=True):
            head = {k: cond[k].iloc[0] for k in (*CONDITION_COLUMNS, key)}
            for metric, col in metrics.items():
                vals = cond[col].to_numpy(dtype=float)
                ok = np.isfinite(vals)
                mean, low, high = ci(vals[ok])
                if base.empty:
                    change = (float("nan"),) * 3
                else:
                    ref = base[col].reindex(cond["item"]).to_numpy(dtype=float)
                    both = ok & np.isfinite(ref)
                    change = ci(vals[both] - ref[both])
                stats = dict(zip(PAIRED_COLUMNS[-6:], (mean, low, high, *change)))
                rows.append({**head, "metric": metric, "n": int(ok.sum()), **stats})
    out = pd.DataFrame(rows, columns=columns)
    out["layer"] = out["layer"].astype(object)
    return out


def describe_change(
    change: float, low: float, high: float, n: int, min_items: int | None = None
) -> str:
    """``change [low, high]`` and what it shows: a rise or a fall only when the CI
    excludes 0 and there are at least ``min_items`` items (default
    :data:`~steerlab.analysis.matched.MIN_ITEMS`)."""
    from steerlab.analysis.matched import MIN_ITEMS

    least = MIN_ITEMS if min_items is None else min_items
    text = f"{change:+.2f} [{low:+.2f}, {high:+.2f}] (n = {n})"
    if n < least:
        return f"{text}: too few items for the CI to hold (fewer than {least})"
    if low > 0:
        return f"{text}: rises (CI excludes 0)"
    if high < 0:
        return f"{text}: falls (CI excludes 0)"
    return f"{text}: no clear change (CI includes 0)"


__all__ = [
    "EFFECT_COLUMNS",
    "PAIRED_COLUMNS",
    "describe_change",
    "effect_sizes",
    "paired_changes",
]
