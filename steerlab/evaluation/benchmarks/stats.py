"""Confidence intervals for the benchmark summaries (accuracy with n and a CI).

:func:`wilson_interval` for shares of binary outcomes (accuracy, attack success, MC1):
it stays inside [0, 1] and behaves at 0% / 100%, unlike the normal approximation.
:func:`add_ci` adds ``ci_low`` / ``ci_high`` to a tidy summary (``value, sem, n``):
Wilson for the binary metrics named, ``value ± z * sem`` for the others.
"""

import math
from collections.abc import Iterable

import pandas as pd

from steerlab.errors import ConfigError

#: Two-sided 95% normal quantile.
Z95 = 1.959963984540054


def wilson_interval(successes: int | float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a share ``successes / n`` (NaN, NaN when ``n == 0``)."""
    if n < 0 or successes < 0 or successes > n:
        raise ConfigError(f"wilson_interval({successes!r}, {n!r}): need 0 <= successes <= n.")
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def add_ci(summary: pd.DataFrame, binary: Iterable[str] = (), z: float = Z95) -> pd.DataFrame:
    """A copy of a tidy summary with ``ci_low`` and ``ci_high`` (95% by default):
    Wilson intervals for the metrics in ``binary`` (their ``value`` is a share of ``n``
    binary outcomes), ``value ± z * sem`` for the rest (NaN where ``sem`` is)."""
    binary = set(binary)
    lo, hi = [], []
    for r in summary.itertuples():
        n = int(r.n) if r.n == r.n else 0
        if r.metric in binary and n and r.value == r.value:
            a, b = wilson_interval(round(float(r.value) * n), n, z)
        else:
            a, b = float(r.value) - z * float(r.sem), float(r.value) + z * float(r.sem)
        lo.append(a)
        hi.append(b)
    return summary.assign(ci_low=lo, ci_high=hi)


__all__ = ["Z95", "add_ci", "wilson_interval"]
