"""Analysis of vectors and steering results: similarity, PCA projections, effect sizes,
layer sweeps (plan, cell store, sweep), combinations and transfer. Everything returns
data; figures live in :mod:`steerlab.viz`."""

from steerlab.analysis.combine import CombinationResult, combination_table, combine
from steerlab.analysis.effects import describe_change, effect_sizes, paired_changes
from steerlab.analysis.matched_findings import sweep_matched
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
from steerlab.analysis.sweep_plan import SweepConfig
from steerlab.analysis.sweeps import SweepResult, sweep
from steerlab.analysis.transfer import CrossLayerResult, TransferResult, cross_layer, transfer

__all__ = [
    "CombinationResult",
    "CrossLayerResult",
    "LayerProjections",
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
    "describe_change",
    "effect_sizes",
    "load_released_bipo",
    "paired_changes",
    "pca_by_layer",
    "pca_projection",
    "released_bipo_table",
    "separation",
    "sweep",
    "sweep_matched",
    "transfer",
]
