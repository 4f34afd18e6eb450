"""The HTML report of a calibration: findings first, then figures, tables, settings."""

from typing import Any

import pandas as pd

from steerlab.reports.html import Report
from steerlab.viz.calibrate import (
    anti_steerable_bars,
    effect_by_layer,
    effect_kl_frontier,
    test_curves,
)
from steerlab.viz.figures import training_curves


def _training_frames(training: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(steps, epochs) of the training histories; several learning rates per method
    (``bipo_lrs``) split into separate lines (``method`` = ``'bipo lr 0.02'``)."""
    if training.empty or "kind" not in training:
        return pd.DataFrame(), pd.DataFrame()
    frame = training.copy()
    if "base_lr" in frame and frame.groupby("method")["base_lr"].nunique().max() > 1:
        frame["method"] = frame["method"] + " lr " + frame["base_lr"].map("{:g}".format)
    steps = frame[frame["kind"] == "step"]
    cols = [c for c in ("method", "layer", "epoch", "margin@-1", "margin@0", "margin@+1",
                        "score") if c in frame]  # fmt: skip
    epochs = frame.loc[frame["kind"] == "epoch", cols].reset_index(drop=True)
    return steps, epochs


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
    steps, epochs = _training_frames(result.training)
    if not steps.empty:
        rep.add_figure(
            training_curves(steps, title="Training (BiPO / RePS): loss and vector norm per step"),
            title="Training curves",
            caption="One line per trained (method, layer[, learning rate]); the validation "
            "margins of each epoch (which pick the best epoch) are in the table below.",
        )
    for frame, name in (
        (epochs, "Validation margins per training epoch"),
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
