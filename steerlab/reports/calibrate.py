"""The HTML report of a calibration: findings first, then figures, tables, settings."""

from typing import Any

from steerlab.reports.html import Report
from steerlab.viz.calibrate import (
    anti_steerable_bars,
    effect_by_layer,
    effect_kl_frontier,
    test_curves,
)


def calibration_report(result: Any, title: str | None = None) -> Report:
    """A :class:`~steerlab.reports.html.Report` of a
    :class:`~steerlab.analysis.calibrate.CalibrationResult`."""
    cfg = result.config
    rep = Report(
        title or f"Calibration: {result.behavior}",
        f"{result.model_id}; methods {', '.join(cfg.methods)}; layers "
        f"{', '.join(map(str, cfg.layers or ()))}; KL cap {cfg.kl_cap:g} nats/token",
    )
    rep.add_text("\n".join(f"- {line}" for line in result.findings()), title="Findings")
    rep.add_figure(
        effect_kl_frontier(result),
        title="Effect vs damage",
        caption="Each point is one (layer, strength) on the validation pairs; the line is "
        "the chosen layer. Points right of the cap were not eligible.",
    )
    rep.add_figure(effect_by_layer(result), title="Effect vs layer")
    rep.add_figure(anti_steerable_bars(result), title="Anti-steerable share")
    rep.add_figure(
        test_curves(result),
        title="Test curves",
        caption="A margin that rises while both answers become less likely is damage.",
    )
    for frame, name in (
        (result.choices, "Chosen layer and strength per method"),
        (result.test, "Test split at the recommended strength (95% CIs)"),
        (result.matched, "Matched damage (target = KL level, nats/token)"),
        (result.matched_norm, "Matched relative norm (target = strength)"),
        (result.comparison, "Paired comparison at the KL cap"),
        (result.prompting, "Prompting baseline (one point, not calibrated)"),
        (result.versus_prompt, "Each vector minus prompting at prompting's KL (95% CIs)"),
        (result.reliability, "Per-item reliability on the test split"),
    ):
        if not frame.empty:
            rep.add_table(frame, title=name)
    rep.add_config({"config": cfg.to_dict(), "timings_seconds": dict(result.timings)})
    return rep
