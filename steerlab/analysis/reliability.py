"""Per-item reliability of steering, and comparisons at matched damage or matched norm.

Input: a per-item frame (one row per vector, strength and item; e.g. from
``likelihood_margin_fast(per_item=True)`` or ``pair_logprob_changes``), optionally with the
KL damage of each condition (:func:`~steerlab.evaluation.damage.kl_damage`).

- :func:`item_slopes`: per item, the least-squares slope of its margin against strength.
- :func:`reliability`: per vector, the mean slope (the mean effect per unit strength),
  the share of anti-steerable items (slope < 0; Tan et al. 2024 report ~50% on some
  model-written-eval datasets) and paired bootstrap CIs of both, and whether the mean
  curve is monotonic in strength. The range effect ``y(x_max) - y(x_min)`` is given only
  for monotonic curves: a V-shaped curve is flagged, not summarised by its ends.
- :func:`matched_kl`: each vector's effect interpolated along its strength sweep to the
  strength where its KL reaches given levels (0.05 / 0.2 / 0.5 nats/token by default).
- :func:`matched_strength`: the effect at given strengths, i.e. at matched relative norm.

Bootstrap resamples items with one index matrix shared by every vector evaluated on the
same items, so CIs of different vectors (and their differences) are paired. Everything is
seeded and vectorised with numpy; results are tidy DataFrames.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from steerlab.errors import ConfigError, EmptyInputError

#: KL levels (nats per token) of the matched-damage comparison.
DEFAULT_KL_LEVELS: tuple[float, ...] = (0.05, 0.2, 0.5)


@dataclass(frozen=True, eq=False)
class StrengthCurve:
    """One vector's sweep: per-item values at each strength, and the KL per strength.

    x: ``[k]`` strengths (or multipliers), ascending, unique.
    values: ``[n_items, k]`` per-item metric (e.g. the margin) at each ``x``.
    kl: ``[k]`` KL(steered || unsteered) in nats/token at each ``x``, or ``None``.
    """

    vector: str
    method: str
    layer: Any
    x: np.ndarray
    values: np.ndarray
    kl: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return int(self.values.shape[0])

    @property
    def mean(self) -> np.ndarray:
        return self.values.mean(axis=0)

    def effects_at(self, x_star: float) -> np.ndarray:
        """Per-item change ``y(x_star) - y(0)`` by linear interpolation along ``x``."""
        return _interp_rows(self.x, self.values, x_star) - _interp_rows(self.x, self.values, 0.0)


def _interp_rows(x: np.ndarray, values: np.ndarray, x_star: float) -> np.ndarray:
    if not x[0] <= x_star <= x[-1]:
        raise ConfigError(
            f"x={x_star:g} is outside the swept range [{x[0]:g}, {x[-1]:g}]; include it."
        )
    j = int(np.clip(np.searchsorted(x, x_star, side="right") - 1, 0, len(x) - 2))
    t = (x_star - x[j]) / (x[j + 1] - x[j])
    return values[:, j] * (1 - t) + values[:, j + 1] * t


def curves(
    items: pd.DataFrame, x: str = "strength", y: str = "margin", kl: pd.DataFrame | None = None
) -> list[StrengthCurve]:
    """One :class:`StrengthCurve` per vector of a per-item frame (vector order kept).

    ``items`` needs ``vector, item, <x>, <y>`` (``method``, ``layer`` if present);
    every vector must have every item at every ``x``. ``kl`` (columns ``vector, <x>,
    kl``) adds the damage curve; it must cover every ``x`` of each vector.
    """
    missing = sorted({"vector", "item", x, y} - set(items.columns))
    if missing:
        raise ConfigError(f"curves() needs columns {missing}; got {list(items.columns)}.")
    if items.empty:
        raise EmptyInputError("curves() got an empty item frame.")
    out = []
    for label, group in items.groupby("vector", sort=False):
        table = group.pivot_table(index="item", columns=x, values=y, aggfunc="mean")
        if table.isna().to_numpy().any():
            raise ConfigError(
                f"Vector {label!r} lacks some (item, {x}) values; every item needs every {x}."
            )
        if table.shape[1] < 2:
            raise ConfigError(f"Vector {label!r} has one {x} only; a curve needs at least two.")
        xs = table.columns.to_numpy(dtype=float)
        kl_arr = None
        if kl is not None:
            sub = kl[kl["vector"] == label].groupby(x)["kl"].mean()
            if not set(xs) <= set(sub.index.astype(float)):
                raise ConfigError(
                    f"The KL frame lacks {x} values {sorted(set(xs) - set(sub.index))} of {label!r}."
                )
            kl_arr = sub.reindex(xs).to_numpy(dtype=float)
        first = group.iloc[0]
        out.append(
            StrengthCurve(
                vector=str(label),
                method=str(first.get("method", "")),
                layer=first.get("layer"),
                x=xs,
                values=table.to_numpy(dtype=float),
                kl=kl_arr,
            )
        )
    return out


def slopes(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of ``values`` ``[n, k]`` against ``x`` ``[k]``."""
    xc = x - x.mean()
    denom = float((xc**2).sum())
    if denom == 0.0:
        raise ConfigError("All x values are equal; a slope needs at least two strengths.")
    return (values - values.mean(axis=1, keepdims=True)) @ xc / denom


def item_slopes(items: pd.DataFrame, x: str = "strength", y: str = "margin") -> pd.DataFrame:
    """Per (vector, item): the least-squares slope of ``y`` against ``x``.

    Columns ``vector, method, layer, item, slope, anti_steerable`` (slope < 0).
    """
    rows = []
    for c in curves(items, x, y):
        s = slopes(c.x, c.values)
        rows.append(
            pd.DataFrame(
                {
                    "vector": c.vector,
                    "method": c.method,
                    "layer": pd.Series([c.layer] * c.n_items, dtype=object),
                    "item": np.arange(c.n_items),
                    "slope": s,
                    "anti_steerable": s < 0,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def bootstrap_indices(n: int, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``[n_boot, n]`` item indices drawn with replacement (seeded); share them between
    vectors evaluated on the same items to pair their bootstrap."""
    if n < 1 or n_boot < 1:
        raise ConfigError(f"Bootstrap needs n >= 1 items and n_boot >= 1 (got {n}, {n_boot}).")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(
    values: np.ndarray, idx: np.ndarray, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and its percentile bootstrap CI over the
    resampled rows ``idx`` (from :func:`bootstrap_indices`)."""
    if not 0 < level < 1:
        raise ConfigError(f"level={level}; a confidence level is in (0, 1), e.g. 0.95.")
    means = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(values.mean()), float(lo), float(hi)


def monotonicity(x: np.ndarray, y: np.ndarray, tol: float = 0.0) -> str:
    """``'increasing'``, ``'decreasing'``, ``'flat'`` or ``'non-monotonic'``: the shape of
    ``y`` along ascending ``x``; steps smaller than ``tol`` in size are ignored."""
    order = np.argsort(x)
    d = np.diff(np.asarray(y, dtype=float)[order])
    up, down = bool((d > tol).any()), bool((d < -tol).any())
    if up and down:
        return "non-monotonic"
    return "increasing" if up else "decreasing" if down else "flat"


def _paired_idx(cache: dict[int, np.ndarray], n: int, n_boot: int, seed: int) -> np.ndarray:
    if n not in cache:
        cache[n] = bootstrap_indices(n, n_boot, seed)
    return cache[n]


def reliability(
    items: pd.DataFrame,
    x: str = "strength",
    y: str = "margin",
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    tol: float = 0.0,
) -> pd.DataFrame:
    """Per vector: mean slope, anti-steerable share, their paired bootstrap CIs, shape.

    Columns: ``vector, method, layer, n_items, mean_slope, slope_low, slope_high,
    anti_share, anti_low, anti_high, shape`` (see :func:`monotonicity`), ``monotonic``,
    ``range_effect`` (mean ``y(x_max) - y(x_min)``; NaN when the mean curve is not
    monotonic), ``range_low, range_high``.
    """
    cache: dict[int, np.ndarray] = {}
    rows = []
    for c in curves(items, x, y):
        idx = _paired_idx(cache, c.n_items, n_boot, seed)
        s = slopes(c.x, c.values)
        mean_s, s_lo, s_hi = bootstrap_ci(s, idx, level)
        anti, a_lo, a_hi = bootstrap_ci((s < 0).astype(float), idx, level)
        shape = monotonicity(c.x, c.mean, tol)
        monotonic = shape != "non-monotonic"
        rng_eff, r_lo, r_hi = (
            bootstrap_ci(c.values[:, -1] - c.values[:, 0], idx, level)
            if monotonic
            else (math.nan, math.nan, math.nan)
        )
        rows.append(
            {
                "vector": c.vector,
                "method": c.method,
                "layer": c.layer,
                "n_items": c.n_items,
                "mean_slope": mean_s,
                "slope_low": s_lo,
                "slope_high": s_hi,
                "anti_share": anti,
                "anti_low": a_lo,
                "anti_high": a_hi,
                "shape": shape,
                "monotonic": monotonic,
                "range_effect": rng_eff,
                "range_low": r_lo,
                "range_high": r_hi,
            }
        )
    return _tidy(rows)


def strength_at_kl(x: np.ndarray, kl: np.ndarray, level: float, side: int = 1) -> float:
    """The strength where the KL curve first reaches ``level``, walking from 0 towards
    ``side`` (+1: positive strengths, -1: negative), interpolating ``sqrt(KL)`` linearly
    between swept points. NaN when the sweep never reaches it (no extrapolation).

    Why the square root: KL from a small added vector grows with the square of its
    strength, so ``sqrt(KL)`` is close to linear in strength and the interpolation is
    exact for ``KL = c s^2``; interpolating KL itself on a coarse grid (0, 0.1, 0.2, 0.4)
    puts the matched point at too small a strength (the chord of a convex curve reaches
    the level early) and understates the effect there.
    """
    if side not in (1, -1):
        raise ConfigError(f"side={side}; use 1 (positive strengths) or -1 (negative).")
    if level <= 0:
        raise ConfigError(f"KL level {level} must be > 0 nats/token.")
    order = np.argsort(side * x)
    xs, ks = x[order], kl[order]
    keep = side * xs >= 0
    xs, ks = xs[keep], ks[keep]
    if len(xs) == 0 or xs[0] != 0.0:
        raise ConfigError("The sweep needs strength 0 (the unsteered model) to interpolate KL.")
    roots = np.sqrt(np.clip(ks, 0.0, None))
    target = math.sqrt(level)
    for j in range(len(xs) - 1):
        k0, k1 = ks[j], ks[j + 1]
        if k0 < level <= k1:
            r0, r1 = roots[j], roots[j + 1]
            return float(xs[j] + (target - r0) / (r1 - r0) * (xs[j + 1] - xs[j]))
    return math.nan


def _matched_rows(
    c: StrengthCurve, targets: Sequence[tuple[float, float]], idx: np.ndarray, level: float
) -> list[dict[str, Any]]:
    """Rows for (target, strength) pairs of one curve (strength NaN: not reached)."""
    rows = []
    shape = monotonicity(c.x, c.mean)
    for target, s in targets:
        row: dict[str, Any] = {
            "vector": c.vector,
            "method": c.method,
            "layer": c.layer,
            "target": target,
            "strength": s,
            "reached": not math.isnan(s),
            "shape": shape,
            "n_items": c.n_items,
        }
        if math.isnan(s):
            row.update(effect=math.nan, effect_low=math.nan, effect_high=math.nan)
            row.update(anti_share=math.nan, anti_low=math.nan, anti_high=math.nan)
        else:
            eff = c.effects_at(s)
            mean, lo, hi = bootstrap_ci(eff, idx, level)
            # against the strength's direction: a fall at s > 0, a rise at s < 0
            anti, a_lo, a_hi = bootstrap_ci((np.sign(s) * eff < 0).astype(float), idx, level)
            row.update(effect=mean, effect_low=lo, effect_high=hi)
            row.update(anti_share=anti, anti_low=a_lo, anti_high=a_hi)
        rows.append(row)
    return rows


def matched_kl(
    items: pd.DataFrame,
    kl: pd.DataFrame,
    levels: Sequence[float] = DEFAULT_KL_LEVELS,
    x: str = "strength",
    y: str = "margin",
    *,
    side: int = 1,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Each vector's effect at matched damage: for each KL level, the strength where its
    KL reaches it (:func:`strength_at_kl`) and the per-item effect ``y(s) - y(0)`` there
    (linear interpolation), with paired bootstrap CIs.

    Columns: ``vector, method, layer, target`` (the KL level), ``strength, reached``
    (False: the sweep never reached that KL; effect NaN), ``shape`` (of the mean curve),
    ``n_items, effect, effect_low, effect_high, anti_share`` (items moved against the
    strength's direction: effect < 0 at a positive strength, > 0 at a negative one),
    ``anti_low, anti_high``.
    """
    cache: dict[int, np.ndarray] = {}
    rows = []
    for c in curves(items, x, y, kl=kl):
        assert c.kl is not None  # curves() was given kl
        targets = [(float(t), strength_at_kl(c.x, c.kl, float(t), side)) for t in levels]
        rows += _matched_rows(c, targets, _paired_idx(cache, c.n_items, n_boot, seed), level)
    return _tidy(rows)


def matched_strength(
    items: pd.DataFrame,
    strengths: Sequence[float],
    x: str = "strength",
    y: str = "margin",
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Each vector's effect ``y(s) - y(0)`` at given strengths (matched relative norm),
    interpolated along its sweep, with paired bootstrap CIs; the columns of
    :func:`matched_kl` (``target`` = the strength; ``reached`` False outside the sweep)."""
    cache: dict[int, np.ndarray] = {}
    rows = []
    for c in curves(items, x, y):
        targets = [(float(s), float(s) if c.x[0] <= s <= c.x[-1] else math.nan) for s in strengths]
        rows += _matched_rows(c, targets, _paired_idx(cache, c.n_items, n_boot, seed), level)
    return _tidy(rows)


def _tidy(rows: list[dict[str, Any]]) -> pd.DataFrame:
    out = pd.DataFrame(rows)
    if "layer" in out.columns:
        out["layer"] = pd.Series([r["layer"] for r in rows], dtype=object)
    return out
