"""Self-contained HTML reports: figures, tables, text and the full configuration.

``Report(title).add_text(...).add_figure(fig).add_table(df).add_config(cfg).save(path)``
writes one HTML file. With ``plotlyjs='inline'`` (default) plotly.js is embedded once,
before the first figure, so the file opens offline (no external ``<script src>``);
``'cdn'`` makes a small file that loads plotly.js from the network.

``report(result)`` builds a report from an analysis result (a sweep, a similarity
matrix, PCA projections, combinations, transfer) or from anything with a
``to_report()`` method (the ``steerlab run`` result).
"""

import datetime as _dt
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import singledispatch
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from steerlab.analysis.combine import CombinationResult
from steerlab.analysis.projections import LayerProjections, Projection
from steerlab.analysis.similarity import ReleasedVectors, SimilarityResult, cosine_matrix
from steerlab.analysis.sweeps import SweepResult
from steerlab.analysis.transfer import CrossLayerResult, TransferResult
from steerlab.errors import ConfigError
from steerlab.evaluation.metrics import primary_metric

PlotlyJS = Literal["inline", "cdn"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{font-size:1.7em;margin:.2em 0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:1.8em}
.subtitle{color:#666;margin-bottom:1em}.caption{color:#555;font-size:.92em;margin:.2em 0 1em}
table.data{border-collapse:collapse;font-size:.88em;margin:.5em 0 1em}
table.data th,table.data td{border:1px solid #ddd;padding:3px 8px;text-align:right}
table.data th{background:#f2f2f2}table.data td.txt,table.data th.txt{text-align:left}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:.82em;max-height:480px}
nav ul{columns:2;font-size:.92em}.figure{margin:.5em 0 1.2em}footer{color:#888;font-size:.8em;margin-top:3em}
"""


@dataclass(frozen=True)
class _Block:
    kind: str  # heading, text, html, figure, table, config
    payload: Any
    title: str | None = None
    caption: str | None = None


def _fmt(value: Any, float_format: str) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        return float_format.format(value)
    return html.escape(str(value))


def table_html(frame: pd.DataFrame, float_format: str = "{:.3g}", max_rows: int = 500) -> str:
    """A plain HTML table (numbers right-aligned, text left-aligned)."""
    df = frame.head(max_rows)
    numeric = {c: pd.api.types.is_numeric_dtype(df[c]) for c in df.columns}
    head = "".join(
        f'<th class="{"" if numeric[c] else "txt"}">{html.escape(str(c))}</th>' for c in df.columns
    )
    rows = []
    for rec in df.itertuples(index=False):
        cells = "".join(
            f'<td class="{"" if numeric[c] else "txt"}">{_fmt(v, float_format)}</td>'
            for c, v in zip(df.columns, rec)
        )
        rows.append(f"<tr>{cells}</tr>")
    more = (
        f'<p class="caption">showing {max_rows} of {len(frame)} rows</p>'
        if len(frame) > max_rows
        else ""
    )
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>{more}'


class Report:
    """An HTML report under construction. ``add_*`` methods return the report (chainable)."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._blocks: list[_Block] = []

    # --- building -------------------------------------------------------------------------
    def add_heading(self, text: str) -> "Report":
        """A section heading (listed in the table of contents)."""
        self._blocks.append(_Block("heading", text))
        return self

    def add_text(self, text: str, *, title: str | None = None) -> "Report":
        """Plain text; blank lines separate paragraphs, ``- `` lines become a list."""
        self._blocks.append(_Block("text", text, title))
        return self

    def add_html(self, fragment: str, *, title: str | None = None) -> "Report":
        """A trusted HTML fragment, inserted as it is."""
        self._blocks.append(_Block("html", fragment, title))
        return self

    def add_figure(
        self, fig: Any, *, title: str | None = None, caption: str | None = None
    ) -> "Report":
        """A plotly figure (interactive in the page)."""
        if not hasattr(fig, "to_html"):
            raise ConfigError(
                f"add_figure() needs a plotly Figure, got {type(fig).__name__}; build one with "
                "steerlab.viz."
            )
        self._blocks.append(_Block("figure", fig, title, caption))
        return self

    def add_table(
        self,
        frame: pd.DataFrame,
        *,
        title: str | None = None,
        caption: str | None = None,
        float_format: str = "{:.3g}",
        max_rows: int = 500,
    ) -> "Report":
        """A DataFrame as an HTML table (index dropped unless it is named)."""
        if not isinstance(frame, pd.DataFrame):
            raise ConfigError(f"add_table() needs a pandas DataFrame, got {type(frame).__name__}.")
        df = frame.reset_index() if any(n is not None for n in frame.index.names) else frame
        df = df.copy()
        df.columns = [
            " ".join(str(x) for x in c) if isinstance(c, tuple) else str(c) for c in df.columns
        ]
        self._blocks.append(_Block("table", (df, float_format, max_rows), title, caption))
        return self

    def add_config(
        self, data: Mapping[str, Any], *, title: str = "Configuration and provenance"
    ) -> "Report":
        """A mapping (configuration, provenance, timings) shown as indented JSON."""
        self._blocks.append(_Block("config", json.dumps(data, indent=2, default=str), title))
        return self

    # --- rendering ------------------------------------------------------------------------
    def _block_html(self, block: _Block, idx: int, first_fig: bool, plotlyjs: PlotlyJS) -> str:
        parts = []
        if block.kind == "heading":
            return f'<h2 id="s{idx}">{html.escape(block.payload)}</h2>'
        if block.title:
            parts.append(f"<h3>{html.escape(block.title)}</h3>")
        if block.kind == "text":
            for para in str(block.payload).strip().split("\n\n"):
                lines = para.splitlines()
                if lines and all(x.lstrip().startswith("- ") for x in lines):
                    items = "".join(f"<li>{html.escape(x.lstrip()[2:])}</li>" for x in lines)
                    parts.append(f"<ul>{items}</ul>")
                else:
                    parts.append(f"<p>{html.escape(para)}</p>")
        elif block.kind == "html":
            parts.append(block.payload)
        elif block.kind == "figure":
            include: Any = False
            if first_fig:
                include = True if plotlyjs == "inline" else "cdn"
            parts.append(
                '<div class="figure">'
                + block.payload.to_html(
                    full_html=False,
                    include_plotlyjs=include,
                    div_id=f"fig{idx}",
                    config={"displaylogo": False, "responsive": True},
                )
                + "</div>"
            )
        elif block.kind == "table":
            df, fmt, max_rows = block.payload
            parts.append(table_html(df, fmt, max_rows))
        elif block.kind == "config":
            parts.append(
                f"<details open><summary>JSON</summary><pre>{html.escape(block.payload, quote=False)}</pre></details>"
            )
        if block.caption:
            parts.append(f'<p class="caption">{html.escape(block.caption)}</p>')
        return "\n".join(parts)

    def to_html(self, plotlyjs: PlotlyJS = "inline") -> str:
        """The whole page as a string."""
        if plotlyjs not in ("inline", "cdn"):
            raise ConfigError(f"plotlyjs={plotlyjs!r}: use 'inline' (self-contained) or 'cdn'.")
        body, toc, seen_fig = [], [], False
        for i, block in enumerate(self._blocks):
            first = block.kind == "figure" and not seen_fig
            seen_fig = seen_fig or block.kind == "figure"
            body.append(self._block_html(block, i, first, plotlyjs))
            if block.kind == "heading":
                toc.append(f'<li><a href="#s{i}">{html.escape(block.payload)}</a></li>')
        nav = f"<nav><ul>{''.join(toc)}</ul></nav>" if len(toc) > 1 else ""
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body><main>"
            f"<h1>{html.escape(self.title)}</h1>"
            + (f'<div class="subtitle">{html.escape(self.subtitle)}</div>' if self.subtitle else "")
            + nav
            + "\n".join(body)
            + f"<footer>steerlab report, generated {stamp}</footer></main></body></html>\n"
        )

    def save(self, path: "str | Path", plotlyjs: PlotlyJS = "inline") -> Path:
        """Write the page atomically (temporary file + rename); returns the path."""
        from steerlab.utils.files import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, self.to_html(plotlyjs).encode("utf-8"))
        return path

    def __len__(self) -> int:
        return len(self._blocks)


# --- report(result) ---------------------------------------------------------------------


@singledispatch
def report(result: Any, title: str | None = None) -> Report:
    """A :class:`Report` for an analysis result (or anything with ``to_report()``)."""
    if hasattr(result, "to_report"):
        return result.to_report() if title is None else result.to_report(title=title)
    raise ConfigError(
        f"No report builder for {type(result).__name__}. Reports exist for SweepResult, "
        "SimilarityResult, ReleasedVectors, Projection, LayerProjections, CombinationResult, "
        "TransferResult, CrossLayerResult and objects with a to_report() method; or build "
        "one with Report(title).add_figure(...)."
    )


def _fmt_layer_best(best: pd.DataFrame) -> str:
    return "; ".join(
        f"{r.method}: L{r.layer} (slope {r.slope:.3g}, delta {r.delta:.3g}, {r.monotonic})"
        for r in best.itertuples()
    )


def _matched_lines(result: SweepResult) -> list[str]:
    """The matched comparison's findings: the leader at KL 0.2 overall and per method."""
    if result.matched is None:
        return []
    from steerlab.analysis.matched_findings import matched_findings

    groups = [[f"{m} L{x}" for x in result.layers] for m in result.methods]
    lines = matched_findings(result.matched, [g for g in groups if len(g) > 1], per_vector=False)
    return lines + ["- Every vector at KL 0.2 (paired CIs): the matched-damage table below."]


@report.register(SweepResult)
def sweep_report(result: SweepResult, title: str | None = None) -> Report:
    """Layer sweep: effect by layer, layer x multiplier heatmaps, curves at the best
    layers, cosines between methods, BiPO training, tables and provenance."""
    from steerlab.viz import figures as vf

    info = dict(result.info)
    rep = Report(
        title or f"Layer sweep: {result.behavior}",
        f"{info.get('model_id', '')} | methods {', '.join(result.methods)} | layers "
        f"{', '.join(map(str, result.layers))} | multipliers "
        f"{', '.join(f'{m:g}' for m in result.multipliers)}",
    )
    metrics = [m for m in result.config.metrics]
    rep.add_heading("Findings")
    lines = _matched_lines(result)
    for key in metrics:
        best = result.best(key)
        lines.append(
            f"- Raw multipliers (lengths differ, not a ranking): largest slope per method for "
            f"{primary_metric(key)}: {_fmt_layer_best(best)}"
        )
    lines.append(
        f"- Held-out data: {info.get('n_test')} pairs / {info.get('n_test_ab')} A/B items; "
        f"fitted on {info.get('n_train')} pairs. Compute time "
        f"{info.get('compute_seconds', info.get('seconds', 0)):.0f} s."
    )
    rep.add_text("\n".join(lines))
    if result.matched is not None:
        rep.add_table(result.matched.table("kl", 0.2), title="Matched damage: KL 0.2 nats/token")
    for key in metrics:
        metric = primary_metric(key)
        eff = result.effects(key)
        rep.add_heading(f"Steering effect by layer: {metric}")
        rep.add_figure(
            vf.layer_effects(eff),
            caption="Least-squares slope of the held-out metric over the multipliers; "
            "higher = the vector steers this metric more per unit multiplier.",
        )
        rep.add_figure(vf.layer_heatmaps(result.frame, metric))
        best = result.best(key)
        keep = [(r.method, r.layer) for r in best.itertuples()]
        at_best = result.frame[
            [
                (m, lay) in keep
                for m, lay in zip(result.frame["method"], pd.to_numeric(result.frame["layer"]))
            ]
        ].copy()
        at_best["method"] = at_best["method"] + " L" + at_best["layer"].astype(str)
        rep.add_figure(
            vf.multiplier_curves(
                at_best,
                metric,
                title=f"{metric} vs multiplier at each method's best layer",
                error_bars=metric != "margin",
            )
        )
        rep.add_table(
            eff.drop(columns=["vector"]).sort_values(["method", "layer"]),
            title=f"Effect sizes: {metric}",
        )
    if len(result.methods) > 1:
        rep.add_heading("Cosine similarity between methods")
        rows = []
        for layer in result.layers:
            vecs = {
                m: result.vectors[(m, layer)]
                for m in result.methods
                if (m, layer) in result.vectors
            }
            sim = cosine_matrix(vecs)
            for a_i, a in enumerate(sim.labels):
                for b in sim.labels[a_i + 1 :]:
                    rows.append({"layer": layer, "pair": f"{a} vs {b}",
                                 "cosine": float(sim.to_frame().loc[a, b])})  # fmt: skip
        cos = pd.DataFrame(rows)
        if not cos.empty:
            rep.add_table(cos.pivot_table(index="layer", columns="pair", values="cosine"),
                          title="Cosine between the methods' vectors at each layer")  # fmt: skip
        norms = pd.DataFrame(
            [{"method": m, "layer": x, "norm": next(iter(v.norms().values()))}
             for (m, x), v in result.vectors.items()]
        )  # fmt: skip
        table = norms.pivot_table(index="layer", columns="method", values="norm")
        resid = info.get("residual_norms") or {}
        if resid:
            table["residual norm"] = [resid.get(x, resid.get(str(x))) for x in table.index]
        rep.add_table(table, title="Vector norms (as fitted)",
                      caption=f"Evaluated rescaled to {result.config.rescale} x the residual "
                      "norm." if result.config.rescale else "Evaluated as fitted.")  # fmt: skip
    if not result.training.empty:
        rep.add_heading("BiPO training")
        rep.add_figure(vf.training_curves(result.training, title="BiPO training per layer"))
    rep.add_heading("Configuration and provenance")
    rep.add_config(
        {
            "config": result.config.to_dict(),
            "methods": list(result.methods),
            "layers": list(result.layers),
            "multipliers": list(result.multipliers),
            "info": info,
        }
    )
    return rep


@report.register(SimilarityResult)
def _similarity_report(result: SimilarityResult, title: str | None = None) -> Report:
    from steerlab.viz.figures import cosine_heatmap

    rep = Report(title or "Cosine similarity")
    rep.add_figure(cosine_heatmap(result)).add_table(result.to_frame().rename_axis("vector"))
    return rep


@report.register(ReleasedVectors)
def _released_report(result: ReleasedVectors, title: str | None = None) -> Report:
    from steerlab.viz.figures import cosine_heatmap, norms_bar

    rep = Report(title or "Released BiPO vectors")
    rep.add_table(result.table, title="Norms").add_figure(norms_bar(result.table))
    rep.add_figure(cosine_heatmap(result.similarity, "Cosines between released vectors"))
    return rep


@report.register(Projection)
def _projection_report(result: Projection, title: str | None = None) -> Report:
    from steerlab.viz.figures import pca_scatter

    rep = Report(title or f"PCA at {result.site}")
    rep.add_figure(pca_scatter(result)).add_table(result.separation, title="Separation")
    return rep


@report.register(LayerProjections)
def _layer_projection_report(result: LayerProjections, title: str | None = None) -> Report:
    from steerlab.viz.figures import pca_scatter

    rep = Report(title or "PCA projections by layer")
    rep.add_table(result.summary, title="Separation by layer")
    for p in result.projections.values():
        rep.add_figure(pca_scatter(p))
    return rep


@report.register(CombinationResult)
def _combination_report(result: CombinationResult, title: str | None = None) -> Report:
    from steerlab.viz.figures import combination_lines

    rep = Report(title or "Vector combinations")
    rep.add_figure(combination_lines(result))
    rep.add_table(result.table(), title=f"{result.metric} by multiplier (Table 6 layout)")
    rep.add_table(result.gains(), title="Combined minus single")
    return rep


@report.register(TransferResult)
def _transfer_report(result: TransferResult, title: str | None = None) -> Report:
    from steerlab.viz.figures import transfer_lines

    rep = Report(title or "Transfer")
    rep.add_figure(transfer_lines(result)).add_table(result.effects, title="Effects")
    return rep


@report.register(CrossLayerResult)
def _cross_layer_report(result: CrossLayerResult, title: str | None = None) -> Report:
    from steerlab.viz.figures import cross_layer_heatmap

    rep = Report(title or "Cross-layer transfer")
    for method in dict.fromkeys(result.effects["method"]):
        rep.add_figure(cross_layer_heatmap(result, method))
    rep.add_table(result.effects.drop(columns=["vector"]), title="Effects")
    return rep


__all__ = ["Report", "report", "sweep_report", "table_html"]
