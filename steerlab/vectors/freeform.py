"""Freeform: mean difference of response-token activations, matching vs not matching."""

from collections.abc import Iterable, Sequence
from typing import Any

from steerlab.vectors.fitting import (
    METHODS,
    VectorMethod,
    fit_from_activations,
    mean_difference_of,
)
from steerlab.vectors.vector import SteeringVector


def fit_freeform(
    model: Any,
    data: Iterable[Any],
    layers: Sequence[int],
    *,
    behavior: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    **_: Any,
) -> SteeringVector:
    """Mean over pairs of [mean response-token activation with the matching answer] -
    [same with the not-matching answer], at ``resid_post`` of each layer."""
    return fit_from_activations(
        model, data, ["freeform"], layers, behavior=behavior, batch_size=batch_size,
        progress=progress,
    )["freeform"]  # fmt: skip


METHODS.register(
    "freeform", VectorMethod(fit_freeform, positions="response_mean", reduce=mean_difference_of)
)
