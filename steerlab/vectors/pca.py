"""PCA: first principal component of pair differences, sign fixed to favour matching."""

from collections.abc import Iterable, Sequence
from typing import Any

from steerlab.vectors.fitting import (
    METHODS,
    VectorMethod,
    fit_from_activations,
    pca_direction_of,
)
from steerlab.vectors.vector import SteeringVector


def fit_pca(
    model: Any,
    data: Iterable[Any],
    layers: Sequence[int],
    *,
    behavior: str | None = None,
    positions: str = "response_mean",
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    **_: Any,
) -> SteeringVector:
    """PCA of (matching - not_matching) activation differences.

    ``positions='response_mean'`` (default) uses the mean over the free-form response
    tokens, like freeform; ``'answer_letter'`` uses A/B prompts like CAA. The default is
    not the letter because there the first component of the (uncentred) differences is the
    A-vs-B letter axis: its sign flips with the answer order, so the sign-fixed vector
    points at "the letter A" and its mean projection (its length) is ~0. Measured on the
    embedded model (power-seeking, layers 8-18): cosine +/-1.000 with the letter axis and
    no effect on any metric, while CAA's mean difference cancels the letter axis.
    """
    return fit_from_activations(
        model, data, ["pca"], layers, positions=positions, behavior=behavior,
        batch_size=batch_size, seed=seed, progress=progress,
    )["pca"]  # fmt: skip


METHODS.register(
    "pca",
    VectorMethod(fit_pca, positions="response_mean", reduce=pca_direction_of, seeded=True),
)
