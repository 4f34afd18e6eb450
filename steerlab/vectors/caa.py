"""CAA (Rimsky et al.): mean difference at the answer-letter token of A/B prompts."""

from collections.abc import Iterable, Sequence
from typing import Any

from steerlab.activations.collect import collect
from steerlab.vectors.fitting import METHODS, mean_difference, vector_from_acts
from steerlab.vectors.vector import SteeringVector


def as_ab_items(data: Iterable[Any], seed: int = 0) -> list[Any]:
    """A/B items as they are, or free-form pairs turned into A/B items (seeded order)."""
    items = list(data)
    if items and hasattr(items[0], "choices"):
        return items
    from steerlab.data.pairs import PreferencePair, pairs_to_ab

    pairs = [p if isinstance(p, PreferencePair) else PreferencePair(*p) for p in items]
    return list(pairs_to_ab(pairs, seed=seed))


def fit_caa(
    model: Any,
    data: Iterable[Any],
    layers: Sequence[int],
    *,
    behavior: str = "unknown",
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    **_: Any,
) -> SteeringVector:
    """CAA vector: mean over items of act(prompt + matching letter) - act(+ other letter)
    at the letter token, at ``resid_post`` of each layer."""
    items = as_ab_items(data, seed)
    acts = collect(
        model, items, list(layers), "answer_letter", batch_size=batch_size, progress=progress
    )
    return vector_from_acts(
        acts,
        "caa",
        lambda a, s: mean_difference(a.matching[s], a.not_matching[s]),
        behavior,
        {"seed": seed},
    )


METHODS.register("caa", fit_caa)
