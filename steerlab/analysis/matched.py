"""Compare named steering vectors at matched damage and matched strength, in one call.

Raw multipliers compare lengths as much as directions (at layer 14 of the embedded model a
freeform vector is about 7x longer than a BiPO one). :func:`compare` puts every vector in
norm units (multiplier = strength = ``|k v| / mean ||h||`` at its sites, see
:mod:`steerlab.steering.strength`) and sweeps the strengths

- on the evaluation pairs: per pair, the likelihood margin and the change of
  ``log p(matching)`` and of ``log p(not matching)`` versus the unsteered model
  (:func:`~steerlab.evaluation.damage.logprob_changes`; cached lower residuals);
- on the neutral text: ``KL(steered || unsteered)`` per token
  (:func:`~steerlab.evaluation.damage.kl_damage`).

From these it tabulates, with paired bootstrap CIs over the pairs
(:mod:`steerlab.analysis.reliability`): the effect ``margin(s) - margin(0)`` at matched KL
(towards positive strengths, and negative ones with ``sides=(1, -1)``) and at matched
strength, both answers' log-probability changes at the same points (a margin won by making
*both* answers less likely is damage as much as steering), the anti-steerable share and
the shape of each curve (non-monotonic curves are flagged).

:func:`difference` gives the paired difference of two vectors' effects;
:func:`verdict` and :func:`leader` turn it into a sentence that names a winner only when
the CI of the difference excludes 0 and at least ``min_items`` pairs were scored.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from steerlab.analysis.reliability import (
    DEFAULT_KL_LEVELS,
    bootstrap_ci,
    bootstrap_indices,
    curves,
    matched_kl,
    matched_strength,
    reliability,
    strength_at_kl,
)
from steerlab.errors import ConfigError, EmptyInputError

#: Strengths swept by default (0, the unsteered model, is always added).
DEFAULT_STRENGTHS: tuple[float, ...] = (-0.4, -0.2, 0.0, 0.1, 0.2, 0.4)
#: Fewer scored pairs than this and :func:`verdict` / :func:`leader` name no winner.
MIN_ITEMS = 20
#: The per-item columns whose change is tabulated at every matched point.
LOGP_COLUMNS = ("d_logp_matching", "d_logp_not_matching")
_TRIO = ("effect", "effect_low", "effect_high")


@dataclass(frozen=True, eq=False)
class MatchedComparison:
    """What :func:`compare` measured. Vectors are named by the keys given to it.

    items: per (vector, strength, pair): ``logp_matching, logp_not_matching, margin`` and
        their changes ``d_logp_matching, d_logp_not_matching, d_margin``.
    kl: per (vector, strength): ``kl`` (nats/token on the neutral text), ``n_tokens``.
    norms: per (vector, site): the vector's ``norm``, the ``typical`` residual norm there
        and ``strength_at_1`` (the strength of multiplier 1 = norm / typical).
    at_kl: :func:`~steerlab.analysis.reliability.matched_kl` rows with a ``side`` column
        (+1: positive strengths, -1: negative) and ``d_logp_matching_effect`` /
        ``_low`` / ``_high`` (likewise ``d_logp_not_matching_*``) at the same strengths.
    at_strength: :func:`~steerlab.analysis.reliability.matched_strength` rows, the same
        extra columns (``target`` = the strength).
    reliability: :func:`~steerlab.analysis.reliability.reliability` per vector.
    """

    items: pd.DataFrame
    kl: pd.DataFrame
    norms: pd.DataFrame
    at_kl: pd.DataFrame
    at_strength: pd.DataFrame
    reliability: pd.DataFrame
    kl_levels: tuple[float, ...]
    strengths: tuple[float, ...]
    n_boot: int = 2000
    seed: int = 0
    level: float = 0.95

    @property
    def vectors(self) -> list[str]:
        return list(dict.fromkeys(self.items["vector"]))

    @property
    def n_items(self) -> int:
        """Pairs scored per vector (the same pairs for every vector: paired)."""
        return int(self.items.groupby("vector")["item"].nunique().min())

    def curve_means(self) -> pd.DataFrame:
        """Per (vector, strength): mean ``d_margin``, both ``d_logp`` columns and the KL
        (for effect-vs-KL and effect-vs-strength figures)."""
        cols = ["d_margin", *LOGP_COLUMNS]
        means = self.items.groupby(["vector", "strength"], sort=False)[cols].mean()
        kl = self.kl.set_index(["vector", "strength"])["kl"]
        out = means.join(kl).reset_index()
        meta = self.items.drop_duplicates("vector").set_index("vector")[["method", "layer"]]
        return out.join(meta, on="vector").sort_values(["vector", "strength"], kind="stable")

    def effects(self, vector: str, target: float, by: str = "kl", side: int = 1) -> np.ndarray:
        """Per-pair margin change of ``vector`` at KL ``target`` (``by='kl'``, walking
        towards ``side``) or at strength ``side * target`` (``by='strength'``); empty
        when the sweep never reaches it."""
        curve = _curve(self, vector)
        if by == "kl":
            assert curve.kl is not None
            s = strength_at_kl(curve.x, curve.kl, float(target), side)
        elif by == "strength":
            s = side * float(target)
            s = s if curve.x[0] <= s <= curve.x[-1] else math.nan
        else:
            raise ConfigError(f"by={by!r}; use 'kl' (matched damage) or 'strength'.")
        return np.empty(0) if math.isnan(s) else curve.effects_at(s)

    def table(self, by: str = "kl", target: float | None = None, side: int = 1) -> pd.DataFrame:
        """A readable table: per vector (and target), strength, effect, both answers'
        changes (each ``mean [low, high]``), anti-steerable share, curve shape and a note
        (not reached / both answers fall / not monotonic)."""
        if by not in ("kl", "strength"):
            raise ConfigError(f"by={by!r}; use 'kl' (matched damage) or 'strength'.")
        frame = self.at_kl[self.at_kl["side"] == side] if by == "kl" else self.at_strength
        if target is not None:
            frame = frame[np.isclose(frame["target"], target)]
        rows = []
        for r in frame.itertuples():
            rows.append(
                {
                    "vector": r.vector,
                    **({"side": side} if by == "kl" else {}),
                    "KL" if by == "kl" else "strength": r.target,
                    **({"strength": round(r.strength, 4)} if by == "kl" else {}),
                    "margin change": fmt_ci(r.effect, r.effect_low, r.effect_high),
                    "d log p(matching)": fmt_ci(
                        r.d_logp_matching_effect,
                        r.d_logp_matching_effect_low,
                        r.d_logp_matching_effect_high,
                    ),
                    "d log p(not matching)": fmt_ci(
                        r.d_logp_not_matching_effect,
                        r.d_logp_not_matching_effect_low,
                        r.d_logp_not_matching_effect_high,
                    ),
                    "pairs moved the wrong way": _wrong_way(r),
                    "shape": r.shape,
                    "n": r.n_items,
                    "note": _note(r),
                }
            )
        return pd.DataFrame(rows)


def _curve(comp: MatchedComparison, vector: str) -> Any:
    if vector not in comp.vectors:
        raise ConfigError(f"No vector {vector!r}; this comparison has {comp.vectors}.")
    sub = comp.items[comp.items["vector"] == vector]
    return curves(sub, "strength", "margin", kl=comp.kl[comp.kl["vector"] == vector])[0]


def _wrong_way(r: Any) -> str:
    """The share of pairs moved against the strength's direction (``anti_share``)."""
    return fmt_ci(r.anti_share, r.anti_low, r.anti_high, "{:.2f}")


def _note(r: Any) -> str:
    if not r.reached:
        return "not reached in the sweep"
    notes = []
    if r.d_logp_matching_effect_high < 0 and r.d_logp_not_matching_effect_high < 0:
        notes.append("both answers less likely (both CIs < 0): damage as much as steering")
    if r.shape == "non-monotonic":
        notes.append("margin curve not monotonic in strength")
    return "; ".join(notes)


def fmt_ci(mean: float, low: float, high: float, fmt: str = "{:+.2f}") -> str:
    """``'+1.23 [+0.40, +2.10]'``; ``'n/r'`` (not reached) when any value is NaN."""
    if any(math.isnan(float(v)) for v in (mean, low, high)):
        return "n/r"
    return f"{fmt.format(mean)} [{fmt.format(low)}, {fmt.format(high)}]"


def _with_logp(
    base: pd.DataFrame, extra: Mapping[str, pd.DataFrame], keys: Sequence[str]
) -> pd.DataFrame:
    out = base
    for y, frame in extra.items():
        cols = frame[[*keys, *_TRIO]].rename(columns={c: f"{y}_{c}" for c in _TRIO})
        out = out.merge(cols, on=list(keys), how="left")
    return out


def compare(
    model: Any,
    pairs: Iterable[Any],
    vectors: Mapping[str, Any],
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    *,
    kl_levels: Sequence[float] = DEFAULT_KL_LEVELS,
    sides: Sequence[int] = (1,),
    neutral: Any = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    batch_size: int = 8,
    progress: bool = False,
) -> MatchedComparison:
    """Sweep named vectors over strengths; tabulate them at matched KL and strength.

    Args:
        pairs: evaluation pairs (every vector is scored on the same ones: paired CIs).
        vectors: ``{name: SteeringVector}``; the names label every table.
        strengths: strengths (``|k v| / mean ||h||``; 0 is added). Negative ones are
            needed for ``sides`` containing -1.
        kl_levels: KL levels (nats/token) of the matched-damage tables.
        sides: +1 (positive strengths) and/or -1 (negative) for the matched-KL table.
        neutral: the neutral text set, or an int ``n`` for
            :func:`~steerlab.data.neutral.load_neutral_set` ``(n=n)`` (default: all).
    """
    from steerlab.data.neutral import load_neutral_set
    from steerlab.evaluation.damage import kl_damage, logprob_changes
    from steerlab.evaluation.likelihood_fast import likelihood_margin_fast
    from steerlab.evaluation.multipliers import conditions
    from steerlab.steering.strength import in_norm_units, vector_norms

    if not vectors:
        raise EmptyInputError("compare() needs at least one named vector.")
    bad = [s for s in sides if s not in (1, -1)]
    if bad:
        raise ConfigError(f"sides={list(sides)}; use 1 and/or -1.")
    xs = tuple(sorted({0.0, *(float(s) for s in strengths)}))
    if not any(x > 0 for x in xs) or (-1 in sides and not any(x < 0 for x in xs)):
        raise ConfigError(
            f"strengths={list(strengths)} need values > 0 (and < 0 for side -1), e.g. "
            "[-0.2, 0.1, 0.2, 0.4]."
        )
    if isinstance(neutral, int):
        neutral = load_neutral_set(n=neutral)
    names = list(vectors)
    norms = {n: vector_norms(model, v) for n, v in vectors.items()}
    units = [in_norm_units(vectors[n], norms[n]) for n in names]
    rename = {c.label: n for c, n in zip(conditions(units, [1.0]), names)}
    items = likelihood_margin_fast(
        model, pairs, units, xs, batch_size=batch_size, progress=progress, per_item=True
    )
    items = logprob_changes(items).rename(columns={"multiplier": "strength"})
    items["vector"] = items["vector"].map(rename)
    kl = kl_damage(model, units, xs, neutral=neutral, batch_size=batch_size, progress=progress)
    kl = kl.rename(columns={"multiplier": "strength"})
    kl["vector"] = kl["vector"].map(rename)
    site_rows = [
        {
            "vector": n,
            "site": str(site),
            "norm": length,
            "typical": norms[n][site],
            "strength_at_1": length / norms[n][site],
        }
        for n in names
        for site, length in vectors[n].norms().items()
    ]
    return tabulate(items, kl, pd.DataFrame(site_rows), kl_levels=kl_levels, sides=sides,
                    n_boot=n_boot, seed=seed, level=level)  # fmt: skip


def tabulate(
    items: pd.DataFrame,
    kl: pd.DataFrame,
    norms: pd.DataFrame | None = None,
    *,
    kl_levels: Sequence[float] = DEFAULT_KL_LEVELS,
    sides: Sequence[int] = (1,),
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> MatchedComparison:
    """The tables of :func:`compare` from measured frames: ``items`` (``vector, item,
    strength, margin`` and the ``d_logp_*`` columns; strength 0 included) and ``kl``
    (``vector, strength, kl``)."""
    need = {"vector", "item", "strength", "margin", *LOGP_COLUMNS}
    missing = sorted(need - set(items.columns))
    if missing:
        raise ConfigError(f"tabulate() needs item columns {missing}; got {list(items.columns)}.")
    common: dict[str, Any] = {"n_boot": n_boot, "seed": seed, "level": level}
    levels = tuple(float(x) for x in kl_levels)
    at_kl = []
    for side in sides:
        base = matched_kl(items, kl, levels, side=side, **common)
        extra = {y: matched_kl(items, kl, levels, y=y, side=side, **common) for y in LOGP_COLUMNS}
        at_kl.append(_with_logp(base, extra, ("vector", "target")).assign(side=side))
    xs = tuple(sorted(float(x) for x in items["strength"].unique()))
    targets = [x for x in xs if x != 0.0]
    at_s = matched_strength(items, targets, **common)
    extra = {y: matched_strength(items, targets, y=y, **common) for y in LOGP_COLUMNS}
    return MatchedComparison(
        items=items,
        kl=kl,
        norms=pd.DataFrame() if norms is None else norms,
        at_kl=pd.concat(at_kl, ignore_index=True),
        at_strength=_with_logp(at_s, extra, ("vector", "target")),
        reliability=reliability(items, **common),
        kl_levels=levels,
        strengths=xs,
        n_boot=n_boot,
        seed=seed,
        level=level,
    )


def difference(
    comp: MatchedComparison, a: str, b: str, target: float, by: str = "kl", side: int = 1
) -> dict[str, Any]:
    """``side * (effect(a) - effect(b))`` at matched KL / strength ``target``: its mean
    and paired bootstrap CI over the pairs (positive: ``a`` steers further towards
    ``side``). ``reached`` is False (and the numbers NaN) when either vector's sweep
    never reaches the target."""
    ea, eb = comp.effects(a, target, by, side), comp.effects(b, target, by, side)
    out: dict[str, Any] = {"a": a, "b": b, "by": by, "target": target, "side": side}
    out["n_items"] = comp.n_items
    if ea.size == 0 or eb.size == 0:
        return {**out, "reached": False, "difference": math.nan, "low": math.nan,
                "high": math.nan}  # fmt: skip
    idx = bootstrap_indices(len(ea), comp.n_boot, comp.seed)
    d, lo, hi = bootstrap_ci(side * (ea - eb), idx, comp.level)
    return {**out, "reached": True, "difference": d, "low": lo, "high": hi}


def _where(by: str, target: float, side: int) -> str:
    if by == "strength":
        return f"strength {side * target:g}"
    return f"KL {target:g} nats/token" + (" (negative strengths)" if side == -1 else "")


def verdict(
    comp: MatchedComparison,
    a: str,
    b: str,
    target: float,
    by: str = "kl",
    side: int = 1,
    min_items: int = MIN_ITEMS,
) -> str:
    """One sentence on ``a`` versus ``b`` at a matched point: a winner only when the
    paired CI of the difference excludes 0 and ``n >= min_items``."""
    d = difference(comp, a, b, target, by, side)
    where, n = _where(by, target, side), d["n_items"]
    if not d["reached"]:
        return f"{a} vs {b} at {where}: not reached by both sweeps, no comparison."
    diff = fmt_ci(d["difference"], d["low"], d["high"])
    if n < min_items:
        return f"{a} - {b} at {where}: {diff}; n = {n} pairs is too few for a verdict."
    if d["low"] > 0 or d["high"] < 0:
        win, lose = (a, b) if d["low"] > 0 else (b, a)
        return (
            f"At {where}, {win} moves the margin further than {lose}: difference {diff} (n = {n})."
        )
    return f"At {where}, {a} and {b} cannot be told apart: difference {diff} includes 0 (n = {n})."


def leader(
    comp: MatchedComparison,
    target: float,
    by: str = "kl",
    side: int = 1,
    among: Sequence[str] | None = None,
    min_items: int = MIN_ITEMS,
) -> str:
    """Which of ``among`` (default: all) steers furthest at a matched point, said only
    when its paired lead over the runner-up has a CI that excludes 0."""
    names = list(among) if among is not None else comp.vectors
    means = {}
    for name in names:
        e = comp.effects(name, target, by, side)
        if e.size:
            means[name] = side * float(e.mean())
    where = _where(by, target, side)
    missed = [n for n in names if n not in means]
    tail = f" ({', '.join(missed)}: not reached)" if missed else ""
    if len(means) < 2:
        return f"At {where}: fewer than two vectors reach it, no ranking{tail}."
    first, second = sorted(means, key=means.__getitem__, reverse=True)[:2]
    d = difference(comp, first, second, target, by, side)
    diff = fmt_ci(d["difference"], d["low"], d["high"])
    if d["n_items"] < min_items:
        return (
            f"At {where}: largest mean {first}, ahead of {second} by {diff}; n = "
            f"{d['n_items']} pairs is too few for a verdict{tail}."
        )
    if d["low"] > 0:
        return f"At {where}, {first} moves the margin furthest: ahead of {second} by {diff} (n = {d['n_items']}){tail}."
    return (
        f"At {where}, no single best: {first} leads {second} by {diff}, a CI that "
        f"includes 0 (n = {d['n_items']}){tail}."
    )


def direction_verdict(
    comp: MatchedComparison, vector: str, target: float, min_items: int = MIN_ITEMS
) -> str:
    """Does ``vector`` steer both ways at KL ``target``: up at positive strengths, down
    at negative ones? Each side is described only by what its CI shows (the comparison
    needs ``sides=(1, -1)``); fewer than ``min_items`` pairs: no verdict at all."""
    at = comp.at_kl
    rows = at[(at["vector"] == vector) & np.isclose(at["target"], target)].set_index("side")
    if set(rows.index) != {1, -1}:
        raise ConfigError(
            f"No rows for {vector!r} at KL {target:g} on both sides; run compare() with "
            "sides=(1, -1), strengths on both sides of 0 and that KL in kl_levels."
        )
    up, down, n = rows.loc[1], rows.loc[-1], comp.n_items
    if not (up["reached"] and down["reached"]):
        return f"{vector}: KL {target:g} is not reached on both sides of 0; no verdict."
    if n < min_items:
        return f"{vector}: n = {n} pairs is too few for a verdict."

    def said(r: Any, sign: int) -> str:
        if sign * r["effect"] > 0 and min(sign * r["effect_low"], sign * r["effect_high"]) > 0:
            return "move the margin the intended way (CI excludes 0)"
        if r["effect_low"] > 0 or r["effect_high"] < 0:
            return "move the margin the wrong way (CI excludes 0)"
        return "give no clear change (CI includes 0)"

    return (
        f"{vector} at KL {target:g}: positive strengths {said(up, 1)}; negative strengths "
        f"{said(down, -1)} (n = {n})."
    )


__all__ = [
    "DEFAULT_STRENGTHS",
    "MIN_ITEMS",
    "MatchedComparison",
    "compare",
    "difference",
    "direction_verdict",
    "fmt_ci",
    "leader",
    "tabulate",
    "verdict",
]
