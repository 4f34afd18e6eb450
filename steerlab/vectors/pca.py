"""PCA: first principal component of pair differences, sign fixed to favour matching."""

from collections.abc import Iterable, Sequence
from typing import Any

from steerlab.activations.collect import collect
from steerlab.vectors.caa import as_ab_items
from steerlab.vectors.fitting import METHODS, pca_direction, vector_from_acts
from steerlab.vectors.freeform import as_pairs
from steerlab.vectors.vector import SteeringVector


def fit_pca(
    model: Any,
    data: Iterable[Any],
    layers: Sequence[int],
    *,
    behavior: str = "unknown",
    positions: str = "answer_letter",
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    **_: Any,
) -> SteeringVector:
    """PCA of (matching - not_matching) activation differences.

    ``positions='answer_letter'`` (default) uses A/B prompts like CAA;
    ``'response_mean'`` uses free-form responses like freeform.
    """
    items = as_ab_items(data, seed) if positions == "answer_letter" else as_pairs(data)
    acts = collect(model, items, list(layers), positions, batch_size=batch_size, progress=progress)
    return vector_from_acts(
        acts, "pca", lambda a, s: pca_direction(a.differences(s)), behavior, {"seed": seed}
    )


METHODS.register("pca", fit_pca)
