"""Turn what a user passes (pairs, tuples, A/B items) into the values a stage reads.

- :func:`as_pairs`: preference pairs (A/B items become pairs, tuples are converted);
- :func:`as_ab_items`: A/B items (free-form pairs get a balanced, seeded A/B order);
- :func:`behavior_of`: the behavior a vector fitted on some data is for.
"""

from collections.abc import Iterable
from typing import Any

from steerlab.data.pairs import PreferencePair, pairs_to_ab


def as_pairs(data: Iterable[Any]) -> list[Any]:
    """Preference pairs as they are; tuples and A/B items converted."""
    out = []
    for p in data:
        if hasattr(p, "to_pair"):
            out.append(p.to_pair())
        elif isinstance(p, tuple):
            out.append(PreferencePair(*p))
        else:
            out.append(p)
    return out


def as_ab_items(data: Iterable[Any], seed: int = 0) -> list[Any]:
    """A/B items as they are, or free-form pairs turned into A/B items (seeded order)."""
    items = list(data)
    if items and hasattr(items[0], "choices"):
        return items
    pairs = [p if isinstance(p, PreferencePair) else PreferencePair(*p) for p in items]
    return list(pairs_to_ab(pairs, seed=seed))


def behavior_of(data: Any, behavior: str | None = None) -> str:
    """``behavior`` when given, else the name of the dataset ``data`` (a
    :class:`~steerlab.data.pairs.PairDataset` or slice of one, from ``load_pairs``), else
    ``"unknown"``: what a fitted vector records as its behavior."""
    if behavior:
        return behavior
    name = getattr(data, "name", None)
    return name if isinstance(name, str) and name.strip() else "unknown"


__all__ = ["as_ab_items", "as_pairs", "behavior_of"]
