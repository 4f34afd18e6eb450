"""Plotly figures built from analysis results (tidy frames and result values).

Every function returns a ``plotly.graph_objects.Figure`` and never shows it; reports
(:mod:`steerlab.reports`) and notebooks decide what to do with it.
"""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from steerlab.errors import ConfigError, EmptyInputError

#: One colour per method, the same in every figure.
METHOD_COLORS = {
    "caa": "#1f77b4",
    "freeform": "#ff7f0e",
    "pca": "#2ca02c",
    "bipo": "#d62728",
    "combination": "#9467bd",
    "none": "#7f7f7f",
}
_FALLBACK = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
TEMPLATE = "plotly_white"
METRIC_TITLES = {
    "margin": "likelihood margin (log p match − log p not)",
    "p_matching": "P(matching letter)",
    "matching_rate": "share of A/B items matched",
    "judge_score": "judge score (1-4)",
    "prefers_matching": "share of pairs preferring matching",
}


def color_of(name: str, i: int = 0) -> str:
    """The method's colour (``'caa'``, ``'caa L8'``, ``'caa:behavior:L8'``), or a fallback
    colour by position."""
    key = str(name).split()[0].split(":")[0] if str(name).strip() else ""
    return METHOD_COLORS.get(key, _FALLBACK[i % len(_FALLBACK)])


def metric_title(metric: str) -> str:
    return METRIC_TITLES.get(metric, metric)


def _pick(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    if "metric" not in frame.columns:
        raise ConfigError(
            f"Expected a tidy frame with a 'metric' column; got {list(frame.columns)}."
        )
    sub = frame[frame["metric"] == metric]
    if sub.empty:
        raise ConfigError(
            f"No rows for metric {metric!r}; the frame has {sorted(frame['metric'].unique())}."
        )
    return sub


def line_trace(x: Any, y: Any, name: str, color: str, **kw: Any) -> go.Scatter:
    """A ``lines+markers`` trace named ``name`` in ``color``. ``kw``: further ``go.Scatter``
    properties; ``line=`` entries (``width``, ``dash``) are merged with the colour."""
    line = {"color": color, **kw.pop("line", {})}
    return go.Scatter(x=x, y=y, mode="lines+markers", name=name, line=line, **kw)


def sem_bars(sem: Any) -> dict[str, Any]:
    """``error_y`` of a trace: ± ``sem`` (hidden where ``sem`` is None)."""
    return dict(type="data", array=sem, visible=sem is not None)


def _layout(fig: go.Figure, title: str, height: int = 420, **kw: Any) -> go.Figure:
    fig.update_layout(
        title=title, template=TEMPLATE, height=height, margin=dict(l=60, r=20, t=60, b=50), **kw
    )
    return fig


def multiplier_curves(
    frame: pd.DataFrame,
    metric: str = "margin",
    *,
    by: str = "method",
    title: str | None = None,
    error_bars: bool = True,
    x: str = "multiplier",
) -> go.Figure:
    """Behavior score vs multiplier, one line per ``by`` (the paper's Figure 1); ``x=
    "strength"`` plots a frame evaluated at strengths (matched norm) against them.

    Error bars are the standard error of the mean (``sem``) over items where the frame
    has it. They include the spread between items, which every condition shares (the
    effect of steering is paired), so ``error_bars=False`` can be clearer for metrics
    whose items differ a lot (the likelihood margin).
    """
    sub = _pick(frame, metric)
    if x not in sub.columns:
        raise ConfigError(f"x={x!r} is not a column of this frame; it has {list(sub.columns)}.")
    fig = go.Figure()
    for i, name in enumerate(dict.fromkeys(sub[by])):
        g = sub[sub[by] == name].sort_values(x)
        sem = g["sem"] if ("sem" in g and error_bars) else None
        color = color_of(str(name), i)
        fig.add_trace(line_trace(g[x], g["value"], str(name), color, error_y=sem_bars(sem)))
    fig.add_vline(x=0, line=dict(color="#bbb", dash="dot"))
    axis = "strength |k v| / mean ||h||" if x == "strength" else x
    return _layout(
        fig,
        title or f"{metric_title(metric)} vs {x}",
        xaxis_title=axis,
        yaxis_title=metric_title(metric),
    )


def multiplier_panels(
    frame: pd.DataFrame,
    metric: str = "margin",
    *,
    by: str = "method",
    facet: str = "behavior",
    title: str | None = None,
    error_bars: bool = False,
    cols: int = 4,
) -> go.Figure:
    """:func:`multiplier_curves` with one panel per ``facet`` value (the paper's Figure 1:
    one panel per behavior, one line per method). Each panel has its own y range; a
    method keeps its colour and has one legend entry across panels."""
    sub = _pick(frame, metric)
    if facet not in sub.columns:
        raise ConfigError(
            f"No column {facet!r} to facet on; the frame has {list(sub.columns)}. Add one "
            "(e.g. frame.assign(behavior=...)) or pass facet=."
        )
    panels = list(dict.fromkeys(sub[facet]))
    ncols = max(1, min(cols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig = make_subplots(
        rows=nrows, cols=ncols, subplot_titles=[str(p) for p in panels],
        horizontal_spacing=0.06, vertical_spacing=0.18,
    )  # fmt: skip
    names = list(dict.fromkeys(sub[by]))
    for k, panel in enumerate(panels):
        row, col = k // ncols + 1, k % ncols + 1
        g = sub[sub[facet] == panel]
        for i, name in enumerate(names):
            h = g[g[by] == name].sort_values("multiplier")
            if h.empty:
                continue
            sem = h["sem"] if ("sem" in h and error_bars) else None
            trace = line_trace(h["multiplier"], h["value"], str(name), color_of(str(name), i),
                               legendgroup=str(name), showlegend=k == 0,
                               error_y=sem_bars(sem))  # fmt: skip
            fig.add_trace(trace, row=row, col=col)
        fig.update_xaxes(title_text="multiplier", row=row, col=col)
    fig.update_yaxes(title_text=metric_title(metric), row=1, col=1)
    return _layout(
        fig, title or f"{metric_title(metric)} vs multiplier", height=max(380, 320 * nrows)
    )


def layer_heatmaps(
    frame: pd.DataFrame, metric: str = "margin", title: str | None = None
) -> go.Figure:
    """Layer x multiplier heatmap of ``metric``, one panel per method.

    The colour scale is centred on the unsteered value (multiplier 0) where present.
    """
    sub = _pick(frame, metric).copy()
    sub["layer"] = pd.to_numeric(sub["layer"], errors="coerce")
    methods = list(dict.fromkeys(sub["method"]))
    base = sub.loc[sub["multiplier"] == 0, "value"]
    zmid = float(base.mean()) if len(base) else None
    fig = make_subplots(
        rows=1, cols=len(methods), subplot_titles=methods, shared_yaxes=True,
        horizontal_spacing=0.03,
    )  # fmt: skip
    lo, hi = float(sub["value"].min()), float(sub["value"].max())
    for k, method in enumerate(methods, start=1):
        piv = sub[sub["method"] == method].pivot_table(
            index="layer", columns="multiplier", values="value", sort=True
        )
        fig.add_trace(
            go.Heatmap(
                z=piv.to_numpy(),
                x=[f"{m:g}" for m in piv.columns],
                y=[f"L{int(x)}" for x in piv.index],
                zmin=lo,
                zmax=hi,
                zmid=zmid if zmid is not None and lo < zmid < hi else None,
                colorscale="RdBu_r",
                showscale=k == len(methods),
                colorbar=dict(title=metric),
                hovertemplate="layer %{y}<br>multiplier %{x}<br>%{z:.3f}<extra>"
                + method
                + "</extra>",
            ),
            row=1,
            col=k,
        )
        fig.update_xaxes(title_text="multiplier", row=1, col=k, type="category")
    fig.update_yaxes(title_text="layer", row=1, col=1, type="category")
    return _layout(fig, title or f"{metric_title(metric)}: layer x multiplier", height=460)


def layer_effects(
    effects: pd.DataFrame, value: str = "slope", title: str | None = None
) -> go.Figure:
    """Steering effect (``slope`` or ``delta``) vs layer, one line per method."""
    if effects.empty:
        raise EmptyInputError("No effect sizes to plot.")
    eff = effects.copy()
    eff["layer"] = pd.to_numeric(eff["layer"], errors="coerce")
    fig = go.Figure()
    for i, method in enumerate(dict.fromkeys(eff["method"])):
        g = eff[eff["method"] == method].sort_values("layer")
        fig.add_trace(line_trace(g["layer"], g[value], str(method), color_of(str(method), i)))
    fig.add_hline(y=0, line=dict(color="#bbb", dash="dot"))
    metric = str(eff["metric"].iloc[0]) if "metric" in eff else ""
    what = "slope per unit multiplier" if value == "slope" else "change from min to max multiplier"
    return _layout(
        fig,
        title or f"Steering effect on {metric_title(metric)} by layer ({what})",
        xaxis_title="layer",
        yaxis_title=f"{value} of {metric}",
    )


def cosine_heatmap(similarity: Any, title: str = "Cosine similarity") -> go.Figure:
    """Heatmap of a :class:`~steerlab.analysis.SimilarityResult` (-1 blue .. +1 red)."""
    labels = list(similarity.labels)
    z = np.asarray(similarity.matrix, dtype=float)
    text = [[("" if math.isnan(v) else f"{v:.2f}") for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=labels, y=labels, zmin=-1, zmax=1, zmid=0, colorscale="RdBu_r",
            text=text, texttemplate="%{text}", colorbar=dict(title="cos"),
        )
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    side = max(380, 60 + 38 * len(labels))
    return _layout(fig, title, height=side)


def pca_scatter(projection: Any, title: str | None = None) -> go.Figure:
    """Matching vs not-matching activations in the PC1-PC2 plane, with vector arrows.

    Each steering direction (unit vector projected into the plane) is drawn as an arrow
    from the origin, scaled to the spread of the points.
    """
    pts = projection.points
    fig = go.Figure()
    for side, color in (("matching", "#d62728"), ("not_matching", "#1f77b4")):
        g = pts[pts["side"] == side]
        fig.add_trace(
            go.Scatter(
                x=g["pc1"], y=g["pc2"], mode="markers", name=side.replace("_", " "),
                marker=dict(color=color, size=6, opacity=0.6),
            )
        )  # fmt: skip
    scale = float(np.nanmax(np.abs(pts[["pc1", "pc2"]].to_numpy()))) * 0.8 or 1.0
    for i, (_, d) in enumerate(projection.directions.iterrows()):
        x, y = float(d["pc1"]) * scale, float(d["pc2"]) * scale
        color = color_of(str(d["method"]), i)
        fig.add_annotation(
            x=x, y=y, ax=0, ay=0, xref="x", yref="y", axref="x", ayref="y",
            showarrow=True, arrowhead=3, arrowwidth=2, arrowcolor=color,
            text=f"{d['method']} ({d['in_plane']:.2f})", font=dict(color=color),
        )  # fmt: skip
    ev = projection.explained_variance_ratio
    fig.update_xaxes(title_text=f"PC1 ({ev[0]:.0%} var)")
    fig.update_yaxes(title_text=f"PC2 ({ev[1]:.0%} var)")
    sub = (
        f"d' on PC1 {projection.d_prime('PC1'):.2f}, logistic regression accuracy "
        f"{projection.logreg_accuracy:.2f}"
    )
    return _layout(fig, title or f"PCA at {projection.site}: {sub}", height=480)


def training_curves(training: Any, title: str = "BiPO training") -> go.Figure:
    """Loss and vector norm per step (and validation margins per epoch when present).

    ``training`` is a :class:`~steerlab.vectors.bipo.BiPORun` or a frame of steps with
    ``step, loss, vector_norm`` (and optionally ``method, layer`` to split lines).
    """
    epochs = None
    if hasattr(training, "steps"):
        steps = pd.DataFrame(training.steps)
        epochs = pd.DataFrame(training.epochs)
    else:
        steps = pd.DataFrame(training)
    if steps.empty:
        raise EmptyInputError("No training steps to plot.")
    has_val = epochs is not None and "margin@+1" in epochs
    cols = 3 if has_val else 2
    names = ["loss", "vector norm"] + (["validation margin"] if has_val else [])
    fig = make_subplots(rows=1, cols=cols, subplot_titles=names)
    keys = [c for c in ("method", "layer") if c in steps]
    groups = steps.groupby(keys, sort=False) if keys else [("run", steps)]
    for i, (key, g) in enumerate(groups):
        label = " L".join(str(k) for k in key) if isinstance(key, tuple) else str(key)
        color = _FALLBACK[i % len(_FALLBACK)] if keys else METHOD_COLORS["bipo"]
        for col, y in ((1, "loss"), (2, "vector_norm")):
            fig.add_trace(
                go.Scatter(
                    x=g["step"], y=g[y], mode="lines", name=label, legendgroup=label,
                    showlegend=col == 1, line=dict(color=color),
                ),
                row=1, col=col,
            )  # fmt: skip
    if has_val:
        assert epochs is not None
        for name, color in (
            ("margin@+1", "#d62728"),
            ("margin@0", "#7f7f7f"),
            ("margin@-1", "#1f77b4"),
        ):
            if name in epochs:
                trace = line_trace(epochs["epoch"] + 1, epochs[name], name, color)
                fig.add_trace(trace, row=1, col=3)
        fig.update_xaxes(title_text="epoch", row=1, col=3)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="step", row=1, col=2)
    return _layout(fig, title, height=380)


def combination_lines(result: Any, title: str = "Single vs combined vectors") -> go.Figure:
    """One panel per evaluated behavior: its own vector vs the combinations containing it."""
    frame = _pick(result.frame, result.metric)
    behaviors = list(dict.fromkeys(frame["eval_behavior"]))
    fig = make_subplots(rows=1, cols=len(behaviors), subplot_titles=behaviors)
    for k, beh in enumerate(behaviors, start=1):
        g = frame[frame["eval_behavior"] == beh]
        for i, (name, h) in enumerate(g.groupby("name", sort=False)):
            h = h.sort_values("multiplier")
            trace = line_trace(h["multiplier"], h["value"], f"{name} on {beh}", _FALLBACK[i % 5],
                               line=dict(dash="solid" if name == beh else "dash"),
                               error_y=sem_bars(h["sem"]))  # fmt: skip
            fig.add_trace(trace, row=1, col=k)
        fig.update_xaxes(title_text="multiplier", row=1, col=k)
    fig.update_yaxes(title_text=metric_title(result.metric), row=1, col=1)
    return _layout(fig, title)


def transfer_lines(result: Any, title: str = "Transfer: source vs target model") -> go.Figure:
    """The same vector's effect on the source and the target model."""
    frame = _pick(result.frame, result.metric)
    fig = multiplier_curves(frame, result.metric, by="model", title=title)
    fig.add_annotation(
        text=f"target/source slope = {result.ratio:.2f}", xref="paper", yref="paper",
        x=0.01, y=0.99, showarrow=False,
    )  # fmt: skip
    return fig


def cross_layer_heatmap(
    result: Any, method: str | None = None, title: str | None = None
) -> go.Figure:
    """Source layer x target layer heatmap of the steering slope."""
    mat = result.matrix("slope", method)
    fig = go.Figure(
        go.Heatmap(
            z=mat.to_numpy(), x=[f"L{c}" for c in mat.columns], y=[f"L{r}" for r in mat.index],
            colorscale="RdBu_r", zmid=0, colorbar=dict(title="slope"),
        )
    )  # fmt: skip
    fig.update_xaxes(title_text="applied at layer", type="category")
    fig.update_yaxes(title_text="fitted at layer", type="category")
    return _layout(fig, title or f"Cross-layer effect on {result.metric}")


def norms_bar(table: pd.DataFrame, title: str = "Vector norms") -> go.Figure:
    """Bar chart of a table with ``name`` and ``norm`` columns."""
    fig = go.Figure(go.Bar(x=table["name"], y=table["norm"], marker_color="#9467bd"))
    return _layout(fig, title, yaxis_title="L2 norm")


def figures_for(frame: pd.DataFrame, metrics: Sequence[str]) -> list[go.Figure]:
    """Multiplier curves for each metric present in ``frame``."""
    present = set(frame["metric"])
    return [multiplier_curves(frame, m) for m in metrics if m in present]


__all__ = [
    "METHOD_COLORS",
    "color_of",
    "combination_lines",
    "cosine_heatmap",
    "cross_layer_heatmap",
    "figures_for",
    "layer_effects",
    "layer_heatmaps",
    "line_trace",
    "metric_title",
    "multiplier_curves",
    "multiplier_panels",
    "norms_bar",
    "pca_scatter",
    "sem_bars",
    "training_curves",
    "transfer_lines",
]
