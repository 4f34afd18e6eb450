"""Checks of numeric grids given in configs (no heavy imports: configs load at CLI start)."""

import math
from collections.abc import Iterable

from steerlab.errors import ConfigError


def strength_grid(values: Iterable[float], owner: str) -> tuple[float, ...]:
    """A strength sweep (``|k v| / mean ||h||``) as sorted floats with 0 (the unsteered
    model) added; finite values, at least one > 0, else a :class:`ConfigError` naming
    ``owner`` (e.g. ``"RunConfig.strengths"``) and an example."""
    try:
        s = tuple(float(x) for x in values)
    except (TypeError, ValueError):
        s = (math.nan,)
    if not any(x > 0 for x in s) or not all(math.isfinite(x) for x in s):
        raise ConfigError(
            f"{owner}={tuple(values)!r}: give finite numbers, at least one > 0, e.g. "
            "(0.025, 0.05, 0.1, 0.2)."
        )
    return tuple(sorted({0.0, *s}))


__all__ = ["strength_grid"]
