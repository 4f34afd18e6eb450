"""Transfer: a vector applied to another model, or at another layer of the same model.

- :func:`transfer` applies one vector unchanged to a source and a target model with the
  same ``d_model`` (the paper's Figure 3: Llama-2-7b-chat vectors on Vicuna) and compares
  the effect: ``ratio`` = target slope / source slope of the primary metric.
- :func:`cross_layer` moves vectors fitted at layer L to layers L' and measures the
  effect at each (``matrix()``: source layer x target layer).
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from steerlab.analysis.effects import effect_sizes
from steerlab.errors import ConfigError, DModelMismatchError, EmptyInputError, OtherModelWarning
from steerlab.evaluation.metrics import Metric, evaluate_named, metric_items, resolve_metric
from steerlab.evaluation.multipliers import DEFAULT_MULTIPLIERS, vector_label
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.vectors.vector import SteeringVector


@dataclass(frozen=True, eq=False)
class TransferResult:
    """One vector on two models.

    Attributes:
        frame: tidy, with ``role`` (``'source'`` / ``'target'``) and ``model`` columns.
        effects: :func:`effect_sizes` of the primary metric per role.
        metric: the primary metric row (e.g. ``'margin'``).
        ratio: target slope / source slope (1 = transfers fully, 0 = no effect, < 0 =
            reversed; NaN when the source slope is 0).
    """

    frame: pd.DataFrame
    effects: pd.DataFrame
    metric: str
    ratio: float


def transfer(
    vector: SteeringVector,
    source_model: SteerlabModel,
    target_model: SteerlabModel,
    data: Any,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    metric: "str | Metric" = "margin",
    *,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> TransferResult:
    """Apply ``vector`` unchanged to both models and compare its effect on ``data``."""
    for role, mdl in (("source", source_model), ("target", target_model)):
        if mdl.d_model != vector.d_model:
            raise DModelMismatchError(
                f"The {role} model {mdl.model_id} has d_model={mdl.d_model} but the vector "
                f"has {vector.d_model}; transfer needs models with the same hidden size "
                "(e.g. a fine-tune of the source model)."
            )
        vector.check_model(mdl.d_model, mdl.n_layers, mdl.model_id, other_model="allow")
    m = resolve_metric(metric)
    items = metric_items(data, m, n, seed)
    frames = []
    for role, mdl in (("source", source_model), ("target", target_model)):
        with warnings.catch_warnings():  # the transfer to another model is the point here
            warnings.simplefilter("ignore", OtherModelWarning)
            f = evaluate_named(
                mdl,
                items,
                {role: vector},
                multipliers,
                m,
                batch_size=batch_size,
                progress=progress,
            )
        f = f.rename(columns={"name": "role"})
        f.insert(1, "model", mdl.model_id)
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)
    eff_rows = []
    for (role, model_id), g in frame.groupby(["role", "model"], sort=False):
        e = effect_sizes(g, m.primary)
        e.insert(0, "model", model_id)
        e.insert(0, "role", role)
        eff_rows.append(e)
    effects = pd.concat(eff_rows, ignore_index=True)
    slopes = dict(zip(effects["role"], effects["slope"]))
    src = slopes.get("source", float("nan"))
    ratio = float(slopes.get("target", float("nan")) / src) if src else float("nan")
    return TransferResult(frame, effects, m.primary, ratio)


@dataclass(frozen=True, eq=False)
class CrossLayerResult:
    """Vectors moved between layers.

    Attributes:
        frame: tidy, with ``source_layer`` and ``target_layer`` columns.
        effects: effect sizes of the primary metric per (source, target) layer.
        metric: the primary metric row.
    """

    frame: pd.DataFrame
    effects: pd.DataFrame
    metric: str

    def matrix(self, value: str = "slope", method: str | None = None) -> pd.DataFrame:
        """``value`` as a source-layer x target-layer table (one method at a time)."""
        eff = self.effects
        if method is not None:
            eff = eff[eff["method"] == method]
        elif eff["method"].nunique() > 1:
            raise ConfigError(f"Several methods ({sorted(eff['method'].unique())}); pass method=.")
        return eff.pivot_table(
            index="source_layer", columns="target_layer", values=value, sort=True
        )

    def diagonal_share(self, method: str | None = None) -> pd.Series:
        """Per source layer: best off-diagonal slope / on-diagonal slope."""
        mat = self.matrix("slope", method)
        out = {}
        for src in mat.index:
            on = mat.loc[src].get(src, np.nan)
            off = mat.loc[src].drop(src, errors="ignore").max()
            out[src] = float(off / on) if on else float("nan")
        return pd.Series(out, name="off_over_on")


def cross_layer(
    model: SteerlabModel,
    vectors: "SteeringVector | Sequence[SteeringVector]",
    target_layers: Sequence[int],
    data: Any,
    multipliers: Sequence[float] = (-1.0, 0.0, 1.0),
    metric: "str | Metric" = "margin",
    *,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> CrossLayerResult:
    """Apply each one-site vector (fitted at layer L) at every layer L' of ``target_layers``.

    ``vectors`` may be one vector or several (e.g. a sweep's vectors of one method: the
    result is then the full source x target matrix).
    """
    vecs = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    if not vecs:
        raise EmptyInputError("cross_layer() needs at least one vector.")
    targets = [HookSite(int(t)).resolve(model.n_layers) for t in target_layers]
    if not targets:
        raise ConfigError("target_layers is empty; give layers such as [6, 10, 14].")
    m = resolve_metric(metric)
    items = metric_items(data, m, n, seed)
    named: dict[str, SteeringVector] = {}
    meta: dict[str, tuple[int, int, str]] = {}
    for vec in vecs:
        if len(vec.sites) != 1:
            raise ConfigError(
                f"{vector_label(vec)} has {len(vec.sites)} sites; cross_layer needs one-site "
                "vectors (use vec.at_site(site) first)."
            )
        src = vec.sites[0].resolve(model.n_layers)
        for t in targets:
            moved = vec if t.layer == src.layer else vec.moved_to(HookSite(t.layer, src.kind))
            name = f"{vector_label(vec)}->L{t.layer}"
            named[name] = moved
            meta[name] = (src.layer, t.layer, vec.method)
    frame = evaluate_named(
        model, items, named, multipliers, m, batch_size=batch_size, progress=progress
    )
    frame.insert(1, "source_layer", [meta[x][0] for x in frame["name"]])
    frame.insert(2, "target_layer", [meta[x][1] for x in frame["name"]])
    eff_rows = []
    for name, g in frame.groupby("name", sort=False):
        e = effect_sizes(g, m.primary)
        src, tgt, method = meta[str(name)]
        e["method"] = method
        e.insert(0, "target_layer", tgt)
        e.insert(0, "source_layer", src)
        e.insert(0, "name", name)
        eff_rows.append(e)
    return CrossLayerResult(frame, pd.concat(eff_rows, ignore_index=True), m.primary)


__all__ = ["CrossLayerResult", "TransferResult", "cross_layer", "transfer"]
