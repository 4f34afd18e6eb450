"""Analysis of vectors and steering results: similarity, PCA projections, layer sweeps,
combinations and transfer. Everything returns data; figures live in :mod:`steerlab.viz`."""

from steerlab.analysis.combine import CombinationResult, combination_table, combine
from steerlab.analysis.projections import (
    LayerProjections,
    Projection,
    pca_by_layer,
    pca_projection,
    separation,
)
from steerlab.analysis.similarity import (
    ReleasedVectors,
    SimilarityResult,
    cosine_matrix,
    load_released_bipo,
    released_bipo_table,
)
from steerlab.analysis.sweeps import (
    METRICS,
    Metric,
    SweepConfig,
    SweepResult,
    effect_sizes,
    evaluate_named,
    fit_vectors,
    residual_norms,
    sweep,
)
from steerlab.analysis.transfer import CrossLayerResult, TransferResult, cross_layer, transfer

__all__ = [
    "METRICS",
    "CombinationResult",
    "CrossLayerResult",
    "LayerProjections",
    "Metric",
    "Projection",
    "ReleasedVectors",
    "SimilarityResult",
    "SweepConfig",
    "SweepResult",
    "TransferResult",
    "combination_table",
    "combine",
    "cosine_matrix",
    "cross_layer",
    "effect_sizes",
    "evaluate_named",
    "fit_vectors",
    "load_released_bipo",
    "pca_by_layer",
    "pca_projection",
    "released_bipo_table",
    "residual_norms",
    "separation",
    "sweep",
    "transfer",
]
