"""Freeform: mean difference of response-token activations, matching vs not matching."""

from collections.abc import Iterable, Sequence
from typing import Any

from steerlab.activations.collect import collect
from steerlab.vectors.fitting import METHODS, mean_difference, vector_from_acts
from steerlab.vectors.vector import SteeringVector


def as_pairs(data: Iterable[Any]) -> list[Any]:
    """Preference pairs as they are; tuples and A/B items converted."""
    out = []
    for p in data:
        if hasattr(p, "to_pair"):
            out.append(p.to_pair())
        elif isinstance(p, tuple):
            from steerlab.data.pairs import PreferencePair

            out.append(PreferencePair(*p))
        else:
            out.append(p)
    return out


def fit_freeform(
    model: Any,
    data: Iterable[Any],
    layers: Sequence[int],
    *,
    behavior: str = "unknown",
    batch_size: int = 16,
    progress: bool = True,
    **_: Any,
) -> SteeringVector:
    """Mean over pairs of [mean response-token activation with the matching answer] -
    [same with the not-matching answer], at ``resid_post`` of each layer."""
    acts = collect(
        model,
        as_pairs(data),
        list(layers),
        "response_mean",
        batch_size=batch_size,
        progress=progress,
    )
    return vector_from_acts(
        acts, "freeform", lambda a, s: mean_difference(a.matching[s], a.not_matching[s]), behavior
    )


METHODS.register("freeform", fit_freeform)
