"""CAA (Rimsky et al.): mean difference at the answer-letter token of A/B prompts."""

import warnings
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


def warn_letter_imbalance(items: Sequence[Any], tolerance: float = 0.1) -> float:
    """Warn when the matching letter is (A) much more (or less) often than (B).

    CAA's differences contain +/-(A - B) letter identity; it cancels only when both letters
    are matching equally often. With ``nA != nB`` a share ``|nA - nB| / n`` of the letter
    axis stays in the vector (1/3 with 3 items: measured norms ~3x those of 4 items on the
    embedded model). Returns that share.
    """
    n = len(items)
    n_a = sum(1 for it in items if getattr(it, "matching", None) == "A")
    share = abs(2 * n_a - n) / n if n else 0.0
    if share > tolerance:
        warnings.warn(
            f"CAA on {n} A/B items with the matching answer as (A) in {n_a} and (B) in "
            f"{n - n_a}: {share:.0%} of the A-vs-B letter identity stays in the vector. Use "
            "an even number of pairs (pairs_to_ab balances the letters) or more items.",
            stacklevel=3,
        )
    return share


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
    warn_letter_imbalance(items)
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
