"""Effect sizes: how strongly a vector steers a metric, from a tidy summary frame."""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from steerlab.errors import ConfigError
from steerlab.evaluation.metrics import primary_metric

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


__all__ = ["EFFECT_COLUMNS", "effect_sizes"]
