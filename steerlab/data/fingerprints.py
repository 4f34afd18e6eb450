"""Pair fingerprints: what a vector records of the pairs it was fitted on.

Each preference pair gets a 48-bit hash of its texts; a vector keeps the sorted set under
:data:`FINGERPRINTS_KEY` in its hyperparameters, so that a classifier judge's pairs can be
checked against any vector later, whatever list, subset or order it was fitted on
(:func:`steerlab.evaluation.judges.judge_pairs.judge_overlaps`).
"""

import hashlib
from typing import Any

from steerlab.data.convert import as_pairs

#: Hex digits of one pair's fingerprint: 48 bits, so a chance match between a judge's
#: 160 pairs and a vector's 642 has a probability near 4e-10.
FINGERPRINT_HEX = 12
#: The hyperparameter under which a vector records the fingerprints of its pairs.
FINGERPRINTS_KEY = "pair_fingerprints"


def pair_fingerprint(pair: Any) -> str:
    """A short hash of one preference pair's ``(question, matching, not_matching)``."""
    text = "\x1f".join((pair.question, pair.matching, pair.not_matching))
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_HEX]


def pair_fingerprints(items: Any) -> str:
    """The sorted, de-duplicated :func:`pair_fingerprint` of every item (A/B items: of the
    pairs they were made from; tuples: ``(question, matching, not_matching)``, as
    :func:`~steerlab.data.convert.as_pairs` reads them), concatenated: what a vector
    records of the pairs it saw, so that any other set of pairs (a classifier judge's)
    can be checked against them without the data or the order they came in
    (:func:`read_fingerprints` splits it again)."""
    return "".join(sorted({pair_fingerprint(p) for p in as_pairs(items)}))


def fingerprint_record(items: Any) -> dict[str, str]:
    """``{FINGERPRINTS_KEY: pair_fingerprints(items)}``, or ``{}`` for items that are not
    preference pairs, A/B items or (question, matching, not_matching) tuples."""
    try:
        return {FINGERPRINTS_KEY: pair_fingerprints(items)}
    except (AttributeError, TypeError):
        return {}


def read_fingerprints(text: Any) -> frozenset[str] | None:
    """The set of fingerprints in a :func:`pair_fingerprints` string; None when ``text``
    is not one (missing, not a string, or not whole fingerprints of hex digits)."""
    n = FINGERPRINT_HEX
    if not isinstance(text, str) or len(text) % n or any(c not in "0123456789abcdef" for c in text):
        return None
    return frozenset(text[i : i + n] for i in range(0, len(text), n))


__all__ = [
    "FINGERPRINTS_KEY",
    "FINGERPRINT_HEX",
    "fingerprint_record",
    "pair_fingerprint",
    "pair_fingerprints",
    "read_fingerprints",
]
