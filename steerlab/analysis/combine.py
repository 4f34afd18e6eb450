"""Combining behavior vectors: weighted sums, evaluated on each behavior (paper's Table 6).

``combine(vectors, weights)`` builds one vector; ``combination_table`` evaluates, for each
behavior, its own vector and every combination that contains it on that behavior's
held-out data, at multipliers such as -1 / 0 / +1. A combination "keeps" a behavior
when it steers it at least as far as the behavior's own vector does.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

import pandas as pd

from steerlab.analysis.effects import effect_sizes
from steerlab.errors import ConfigError, DModelMismatchError, EmptyInputError
from steerlab.evaluation.metrics import Metric, evaluate_named, metric_items, resolve_metric
from steerlab.models.model import SteerlabModel
from steerlab.vectors.vector import Provenance, SteeringVector

COMBINE_SEP = "+"


def combine(
    vectors: "Sequence[SteeringVector] | Mapping[str, SteeringVector]",
    weights: Sequence[float] | None = None,
) -> SteeringVector:
    """``sum_i weights[i] * vectors[i]`` site by site (default weights: all 1).

    Provenance: method ``'combination'``, behavior ``'a+b'``, and the parts' provenance
    with their weights in ``hyperparameters``.
    """
    vecs = list(vectors.values()) if isinstance(vectors, Mapping) else list(vectors)
    if not vecs:
        raise EmptyInputError("combine() needs at least one vector.")
    w = [1.0] * len(vecs) if weights is None else [float(x) for x in weights]
    if len(w) != len(vecs):
        raise ConfigError(f"Got {len(w)} weights for {len(vecs)} vectors; give one per vector.")
    sizes = {v.d_model for v in vecs}
    if len(sizes) > 1:
        raise DModelMismatchError(
            f"Cannot combine vectors of different sizes (d_model {sorted(sizes)}); combine "
            "vectors of one model."
        )
    out: dict[Any, Any] = {}
    for v, k in zip(vecs, w):
        for site, t in v.directions.items():
            t = t.float().cpu() * k
            out[site] = out[site] + t if site in out else t
    first = vecs[0].provenance
    prov = Provenance(
        model_id=first.model_id,
        d_model=first.d_model,
        method="combination",
        behavior=COMBINE_SEP.join(dict.fromkeys(v.behavior for v in vecs)),
        hyperparameters={
            "weights": w,
            "parts": [v.provenance.to_dict() for v in vecs],
        },
        dataset_hash=",".join(v.provenance.dataset_hash for v in vecs),
    )
    return SteeringVector(out, prov)


@dataclass(frozen=True, eq=False)
class CombinationResult:
    """Single vs combined vectors, each scored on the behaviors it contains.

    Attributes:
        frame: tidy: ``eval_behavior, name, kind ('single' / 'combined'), vector, method,
            layer, multiplier, metric, value, sem, n``.
        metric: the row name that measures steering (e.g. ``'margin'``).
        vectors: ``{name: vector}`` of every single and combined vector evaluated.
    """

    frame: pd.DataFrame
    metric: str
    vectors: Mapping[str, SteeringVector]

    def table(self, metric: str | None = None) -> pd.DataFrame:
        """Table 6 layout: a row per (eval behavior, vector), a column per multiplier."""
        m = metric or self.metric
        sub = self.frame[self.frame["metric"] == m]
        table = sub.pivot_table(
            index=["eval_behavior", "name"], columns="multiplier", values="value", sort=False
        )
        return table.reindex(columns=sorted(table.columns))

    def effects(self) -> pd.DataFrame:
        """Effect sizes (slope, delta...) per (eval behavior, vector)."""
        rows = []
        for (beh, name, kind), g in self.frame.groupby(
            ["eval_behavior", "name", "kind"], sort=False
        ):
            eff = effect_sizes(g, self.metric)
            eff.insert(0, "kind", kind)
            eff.insert(0, "name", name)
            eff.insert(0, "eval_behavior", beh)
            rows.append(eff)
        return pd.concat(rows, ignore_index=True)

    def gains(self) -> pd.DataFrame:
        """Per behavior and combination: its effect minus the single vector's.

        Columns ``eval_behavior, name, slope, single_slope, slope_gain, delta,
        single_delta, delta_gain, keeps`` (``keeps``: the combination steers the
        behavior at least as far as its own vector, by slope).
        """
        eff = self.effects()
        single = eff[eff["kind"] == "single"].set_index("eval_behavior")
        comb = eff[eff["kind"] == "combined"].copy()
        comb["single_slope"] = comb["eval_behavior"].map(single["slope"])
        comb["single_delta"] = comb["eval_behavior"].map(single["delta"])
        comb["slope_gain"] = comb["slope"] - comb["single_slope"]
        comb["delta_gain"] = comb["delta"] - comb["single_delta"]
        comb["keeps"] = comb["slope"] >= comb["single_slope"]
        cols = ["eval_behavior", "name", "slope", "single_slope", "slope_gain", "delta",
                "single_delta", "delta_gain", "keeps"]  # fmt: skip
        return comb[cols].reset_index(drop=True)


def combination_table(
    model: SteerlabModel,
    vectors: Mapping[str, SteeringVector],
    data: Mapping[str, Any],
    combos: Sequence[Sequence[str]] | None = None,
    multipliers: Sequence[float] = (-1.0, 0.0, 1.0),
    metric: "str | Metric" = "margin",
    *,
    weights: Mapping[str, float] | None = None,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> CombinationResult:
    """Evaluate single vs combined behavior vectors on each behavior (Table 6).

    Args:
        vectors: ``{behavior: vector}``.
        data: ``{behavior: evaluation data}`` (``BehaviorData`` or pairs / A/B items).
        combos: behavior groups to sum, e.g. ``[("power-seeking", "wealth-seeking")]``;
            default every pair of behaviors.
        metric: a registered metric (``'margin'``, ``'ab'``) or a :class:`Metric`.
        weights: per-behavior weights in the sums (default 1).
        n: evaluate on the first ``n`` held-out items of each behavior.
    """
    if not vectors:
        raise EmptyInputError("combination_table() needs vectors={behavior: vector}.")
    missing = [b for b in vectors if b not in data]
    if missing:
        raise ConfigError(
            f"No evaluation data for {missing}; pass data={{behavior: pairs}} for every "
            f"vector (have data for {sorted(data)})."
        )
    m = resolve_metric(metric)
    groups = [tuple(c) for c in combos] if combos is not None else list(combinations(vectors, 2))
    for g in groups:
        unknown = [b for b in g if b not in vectors]
        if unknown:
            raise ConfigError(f"Combination {g} names {unknown}; vectors are {sorted(vectors)}.")
        if len(g) < 2:
            raise ConfigError(f"Combination {g} has fewer than two behaviors.")
    combined = {
        COMBINE_SEP.join(g): combine(
            [vectors[b] for b in g], [float((weights or {}).get(b, 1.0)) for b in g]
        )
        for g in groups
    }
    frames = []
    for beh, vec in vectors.items():
        named = {beh: vec}
        named.update({name: v for name, v in combined.items() if beh in name.split(COMBINE_SEP)})
        items = metric_items(data[beh], m, n, seed)
        f = evaluate_named(
            model, items, named, multipliers, m, batch_size=batch_size, progress=progress
        )
        f.insert(0, "kind", ["single" if x == beh else "combined" for x in f["name"]])
        f.insert(0, "eval_behavior", beh)
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)
    cols = ["eval_behavior", "name", "kind"] + [
        c for c in frame.columns if c not in ("eval_behavior", "name", "kind")
    ]
    all_vectors = {**dict(vectors), **combined}
    return CombinationResult(frame[cols], m.primary, all_vectors)


def with_behavior(vec: SteeringVector, behavior: str) -> SteeringVector:
    """The same vector with ``provenance.behavior`` set (for labels in combinations)."""
    return SteeringVector(dict(vec.directions), replace(vec.provenance, behavior=behavior))


__all__ = ["CombinationResult", "combination_table", "combine", "with_behavior"]
