"""CAA (Rimsky et al.): mean difference at the answer-letter token of A/B prompts."""

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from steerlab.vectors.fitting import (
    METHODS,
    VectorMethod,
    fit_from_activations,
    mean_difference_of,
)
from steerlab.vectors.vector import SteeringVector


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
            stacklevel=4,
        )
    return share


def fit_caa(
    model: Any,
    data: Iterable[Any],
    layers: Sequence[int],
    *,
    behavior: str | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    **_: Any,
) -> SteeringVector:
    """CAA vector: mean over items of act(prompt + matching letter) - act(+ other letter)
    at the letter token, at ``resid_post`` of each layer."""
    return fit_from_activations(
        model, data, ["caa"], layers, behavior=behavior, batch_size=batch_size, seed=seed,
        progress=progress,
    )["caa"]  # fmt: skip


METHODS.register(
    "caa",
    VectorMethod(
        fit_caa,
        positions="answer_letter",
        reduce=mean_difference_of,
        seeded=True,
        check_items=warn_letter_imbalance,
    ),
)
