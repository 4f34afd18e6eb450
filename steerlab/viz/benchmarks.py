"""Figures of the benchmark summaries: value vs multiplier with 95% CIs and a chance line."""

import math

import pandas as pd
import plotly.graph_objects as go

from steerlab.viz.figures import _layout, _pick, color_of, line_trace, metric_title


def benchmark_curves(
    summary: pd.DataFrame,
    metric: str = "accuracy",
    *,
    title: str | None = None,
    chance: float | None = None,
    by: str = "vector",
) -> go.Figure:
    """``metric`` vs multiplier, one line per ``by``, error bars = the summary's 95% CI
    (``ci_low`` / ``ci_high``, else ± 1.96 sem), and a dashed chance line: ``chance``,
    else the summary's ``chance`` column (MMLU's two-choice set: 0.5), when known.

    The title defaults to the summary's ``benchmark`` label and the metric with ``n``.
    """
    sub = _pick(summary, metric)
    fig = go.Figure()
    for i, name in enumerate(dict.fromkeys(sub[by])):
        g = sub[sub[by] == name].sort_values("multiplier")
        if {"ci_low", "ci_high"} <= set(g.columns):
            up, down = g["ci_high"] - g["value"], g["value"] - g["ci_low"]
        else:
            up = down = 1.959963984540054 * g["sem"]
        color = color_of(str(g["method"].iloc[0]) if "method" in g else name, i)
        bars = dict(type="data", array=up, arrayminus=down, visible=True)
        hover = "x%{x:g}: %{y:.3f} (n=%{customdata})<extra></extra>"
        trace = line_trace(g["multiplier"], g["value"], str(name), color, error_y=bars,
                           customdata=g["n"], hovertemplate=hover)  # fmt: skip
        fig.add_trace(trace)
    if chance is None and "chance" in sub.columns:
        known = sub["chance"].dropna()
        chance = float(known.iloc[0]) if len(known) else None
    if chance is not None and not math.isnan(chance):
        fig.add_hline(
            y=chance,
            line=dict(color="#888", dash="dash"),
            annotation_text=f"chance ({chance:g})",
            annotation_position="bottom right",
        )
    fig.add_vline(x=0, line=dict(color="#bbb", dash="dot"))
    label = str(sub["benchmark"].iloc[0]) if "benchmark" in sub.columns else ""
    n = ", ".join(f"{int(x)}" for x in dict.fromkeys(sub["n"]))
    return _layout(
        fig,
        title or f"{label + ': ' if label else ''}{metric_title(metric)} (n={n}, 95% CI)",
        xaxis_title="multiplier",
        yaxis_title=metric_title(metric),
    )


__all__ = ["benchmark_curves"]
