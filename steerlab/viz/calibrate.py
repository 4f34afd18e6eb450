"""Figures of a calibration (:class:`~steerlab.analysis.calibrate.CalibrationResult`).

- :func:`effect_kl_frontier`: validation effect against damage, per method (all layers
  and strengths as points, the chosen layer as a line, the KL cap as a vertical line);
- :func:`effect_by_layer`: the best admissible validation effect at each layer;
- :func:`anti_steerable_bars`: the share of anti-steerable test pairs with its CI;
- :func:`test_curves`: on the test pairs, the change of the margin and of both answers'
  log-likelihoods against strength, at each method's chosen layer.
"""

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from steerlab.analysis.calibrate import admissible
from steerlab.viz.figures import _layout, color_of, line_trace


def effect_kl_frontier(result: Any) -> go.Figure:
    val, cap = result.validation, result.config.kl_cap
    chosen = {r.method: r.layer for r in result.choices.itertuples() if r.status == "ok"}
    fig = go.Figure()
    for i, (method, g) in enumerate(val.groupby("method", sort=False)):
        color = color_of(str(method), i)
        fig.add_trace(
            go.Scatter(
                x=g["kl"],
                y=g["effect"],
                mode="markers",
                name=f"{method} (all layers)",
                marker=dict(color=color, size=6, opacity=0.35),
                legendgroup=str(method),
                text=[f"L{r.layer} s={r.strength:g}" for r in g.itertuples()],
                hovertemplate="%{text}<br>KL %{x:.3f}<br>effect %{y:.2f}<extra></extra>",
            )
        )
        if method in chosen:
            line = g[(g["layer"] == chosen[method]) & _chosen_lr(g, result.choices, method)]
            line = line.sort_values("strength")
            name = f"{method} L{chosen[method]} (chosen)"
            fig.add_trace(line_trace(line["kl"], line["effect"], name, color,
                                     legendgroup=str(method), line=dict(width=2)))  # fmt: skip
    fig.add_vline(x=cap, line_dash="dash", line_color="gray", annotation_text=f"cap {cap:g}")
    return _layout(
        fig,
        "Validation effect vs damage",
        xaxis_title="KL(steered || unsteered) on neutral text, nats/token",
        yaxis_title="margin change vs unsteered",
    )


def _chosen_lr(val: pd.DataFrame, choices: pd.DataFrame, method: str) -> pd.Series:
    """Rows of ``val`` at the learning rate chosen for ``method`` (all: none chosen)."""
    lr = choices.set_index("method")["lr"].get(method) if "lr" in choices else None
    if lr is None or pd.isna(lr) or "lr" not in val:
        return pd.Series(True, index=val.index)
    return val["lr"] == lr


def best_admissible(validation: pd.DataFrame, kl_cap: float) -> pd.DataFrame:
    """Per (method, layer): the largest admissible validation effect (NaN if none)."""
    ok = admissible(validation, kl_cap)
    eff = validation["effect"].where(ok)
    table = validation.assign(effect=eff).groupby(["method", "layer"], sort=False)["effect"]
    return table.max().reset_index()


def effect_by_layer(result: Any) -> go.Figure:
    table = best_admissible(result.validation, result.config.kl_cap)
    fig = go.Figure()
    for i, (method, g) in enumerate(table.groupby("method", sort=False)):
        fig.add_trace(line_trace(g["layer"], g["effect"], str(method), color_of(str(method), i)))
    return _layout(
        fig,
        f"Best validation effect under KL {result.config.kl_cap:g}, by layer",
        xaxis_title="layer",
        yaxis_title="margin change vs unsteered",
    )


def anti_steerable_bars(result: Any) -> go.Figure:
    rel = result.reliability
    fig = go.Figure()
    if not rel.empty:
        fig.add_trace(
            go.Bar(
                x=rel["method"],
                y=100 * rel["anti_share"],
                marker_color=[color_of(str(m), i) for i, m in enumerate(rel["method"])],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=100 * (rel["anti_high"] - rel["anti_share"]),
                    arrayminus=100 * (rel["anti_share"] - rel["anti_low"]),
                ),
            )
        )
    return _layout(
        fig,
        "Anti-steerable test pairs (slope of the margin vs strength < 0)",
        yaxis_title="% of test pairs (95% CI)",
        yaxis_range=[0, 100],
    )


def test_curves(result: Any) -> go.Figure:
    items = result.test_items
    cols = (
        ("d_margin", "margin"),
        ("d_logp_matching", "log p(matching)"),
        ("d_logp_not_matching", "log p(not matching)"),
    )
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in cols])
    if not items.empty:
        means = (
            items.groupby(["method", "layer", "strength"], sort=False)[[c for c, _ in cols]]
            .mean()
            .reset_index()
        )
        for i, (method, g) in enumerate(means.groupby("method", sort=False)):
            for j, (col, _) in enumerate(cols):
                trace = line_trace(g["strength"], g[col], f"{method} L{g['layer'].iloc[0]}",
                                   color_of(str(method), i), legendgroup=str(method),
                                   showlegend=j == 0)  # fmt: skip
                fig.add_trace(trace, row=1, col=j + 1)
    fig.update_xaxes(title_text="strength")
    return _layout(fig, "Test pairs: change vs unsteered, by strength", height=380)
