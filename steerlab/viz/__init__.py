"""Plotly figures from analysis results (built, never shown, by library code)."""

from steerlab.viz.figures import (
    METHOD_COLORS,
    combination_lines,
    cosine_heatmap,
    cross_layer_heatmap,
    layer_effects,
    layer_heatmaps,
    multiplier_curves,
    multiplier_panels,
    norms_bar,
    pca_scatter,
    training_curves,
    transfer_lines,
)

__all__ = [
    "METHOD_COLORS",
    "combination_lines",
    "cosine_heatmap",
    "cross_layer_heatmap",
    "layer_effects",
    "layer_heatmaps",
    "multiplier_curves",
    "multiplier_panels",
    "norms_bar",
    "pca_scatter",
    "training_curves",
    "transfer_lines",
]
