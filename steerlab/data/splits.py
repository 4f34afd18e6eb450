"""Held-out splits of what a user passes: a behavior's data or a plain list of pairs.

:meth:`BehaviorData.split <steerlab.data.pairs.BehaviorData.split>` keeps the behavior's
own train / test splits; :func:`split_items` splits a plain sequence with a seeded
shuffle; :func:`held_out` picks the one that fits.
"""

from collections.abc import Sequence
from typing import Any

from steerlab.data.behaviors import split_indices
from steerlab.data.convert import as_pairs
from steerlab.data.pairs import BehaviorData, HeldOutSplit, pairs_to_ab
from steerlab.errors import EmptyInputError


def split_items(
    items: Sequence[Any],
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    name: str = "unknown",
    n_judge: int = 0,
) -> HeldOutSplit:
    """A seeded split of pairs or A/B items: ``n_test`` (default and at most half) held
    out, ``n_judge`` set aside to fit a judge on (minus items identical to a training
    item), ``n_train`` (default the rest) to fit
    on. Held-out A/B items are the items themselves, or the held-out pairs turned into
    A/B items with ``pairs_to_ab(seed)``."""
    items = list(items)
    if len(items) < 2:
        raise EmptyInputError(
            f"A held-out split needs at least 2 pairs (some to fit, some to evaluate); "
            f"got {len(items)}."
        )
    n = len(items)
    k_test = min(n_test or n // 2, n // 2) or 1
    if n_judge < 0 or n - k_test - n_judge < 1:
        raise EmptyInputError(
            f"Cannot set {n_judge} judge items aside from {n} items with {k_test} held out; "
            "lower n_judge."
        )
    k_train = min(n_train or n - k_test - n_judge, n - k_test - n_judge)
    tr, te, rest = split_indices(n, k_test, seed, k_train)
    train = [items[i] for i in tr]
    test_items = [items[i] for i in te]
    test = as_pairs(test_items)
    ab = test_items if hasattr(test_items[0], "choices") else list(pairs_to_ab(test, seed))
    judge = [items[i] for i in rest[len(rest) - n_judge :]] if n_judge else []
    judge = [j for j in judge if j not in train]  # repeated rows stay on the vector's side
    return HeldOutSplit(name, train, test, ab, judge)


def held_out(
    data: Any,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    n_judge: int = 0,
) -> HeldOutSplit:
    """``data.split(...)`` of a :class:`BehaviorData`, else :func:`split_items` of a
    sequence (named after its ``name`` attribute when it has one)."""
    if isinstance(data, BehaviorData):
        return data.split(n_train, n_test, seed, n_judge)
    name = str(getattr(data, "name", "unknown"))
    return split_items(data, n_train, n_test, seed, name, n_judge)


__all__ = ["held_out", "split_items"]
