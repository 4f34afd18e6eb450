"""Damage of steering, measured: KL on neutral text, and both answers' log-likelihoods.

A margin gained by breaking the model is not a steering effect. Two measures expose it:

- :func:`kl_damage`: the mean per-token ``KL(steered || unsteered)`` (nats/token) of the
  next-token distributions on the neutral text set (:mod:`steerlab.data.neutral`), every
  real token but the first of each turn (the same tokens as the typical norm). The
  unsteered distributions are computed once per batch and shared by every condition.
- :func:`pair_logprob_changes`: on evaluation pairs, the change of ``log p(matching)``
  and of ``log p(not matching)`` separately versus the unsteered model. A margin that
  grows because *both* fall (the not-matching answer faster) shows up as damage.

Both accept raw ``multipliers`` or ``strengths`` (relative to the typical residual norm).
"""

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from steerlab.activations.batch import length_sorted_batches, right_pad
from steerlab.data.neutral import NeutralSet, load_neutral_set
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.evaluation.multipliers import (
    DEFAULT_MULTIPLIERS,
    Condition,
    MultipliersArg,
    VectorsArg,
    as_vector_list,
    conditions,
)
from steerlab.evaluation.strengths import at_strengths, check_strength_args
from steerlab.models.model import SteerlabModel
from steerlab.steering.steer import steer
from steerlab.utils.progress import progress_bar
from steerlab.vectors.vector import SteeringVector

#: Columns of :func:`kl_damage`'s frame.
KL_COLUMNS = ("vector", "method", "layer", "multiplier", "kl", "n_tokens")
#: Per-item change columns added by :func:`logprob_changes`.
CHANGE_COLUMNS = ("d_logp_matching", "d_logp_not_matching", "d_margin")


def token_kl(
    logp_steered: Float[Tensor, "t vocab"], logp_ref: Float[Tensor, "t vocab"]
) -> Float[Tensor, " t"]:
    """``KL(p_steered || p_ref)`` per token from log-probabilities (fp32 or wider).

    Exactly 0 where the two rows are equal; never negative (clamped at 0 against
    rounding).
    """
    return (logp_steered.exp() * (logp_steered - logp_ref)).sum(-1).clamp_min(0.0)


def kl_frame(
    conds: Sequence[Condition], totals: np.ndarray, n_tokens: int | Sequence[int]
) -> pd.DataFrame:
    """The frame of :func:`kl_damage` (:data:`KL_COLUMNS`): per condition, the summed
    token KL ``totals[c]`` over ``n_tokens`` tokens (one count for all conditions, or
    one per condition) as a mean (nats per token)."""
    counts = [n_tokens] * len(conds) if isinstance(n_tokens, int) else list(n_tokens)
    rows = [
        {
            "vector": cond.label,
            "method": cond.method,
            "layer": cond.layer,
            "multiplier": cond.multiplier,
            "kl": totals[c] / counts[c],
            "n_tokens": counts[c],
        }
        for c, cond in enumerate(conds)
    ]
    out = pd.DataFrame(rows, columns=list(KL_COLUMNS))
    out["layer"] = pd.Series([r["layer"] for r in rows], dtype=object)
    return out


def _kl_runner(model: SteerlabModel, neutral: NeutralSet, batch_size: int, progress: bool) -> Any:
    encoded = neutral.encode(model)
    batches = length_sorted_batches([len(e) for e in encoded], batch_size)

    @torch.no_grad()
    def run(vectors: Sequence[SteeringVector], multipliers: tuple[float, ...]) -> pd.DataFrame:
        conds = conditions(list(vectors) or None, multipliers)
        totals = np.zeros(len(conds))
        n_tokens = 0
        for idx in progress_bar(batches, desc="KL damage", enabled=progress):
            batch = right_pad([encoded[i] for i in idx], model.pad_token_id, model.device)
            mask = batch.attention_mask.bool().clone()
            mask[:, 0] = False  # the attention-sink token, as in the typical norm
            n_tokens += int(mask.sum())
            ref = torch.log_softmax(
                model.bridge(batch.ids, attention_mask=batch.attention_mask)[mask].float(), -1
            )
            for c, cond in enumerate(conds):
                if not cond.steered:
                    continue  # the unsteered model: KL is 0 by definition
                with steer(model, cond.vector, multiplier=cond.multiplier):
                    logits = model.bridge(batch.ids, attention_mask=batch.attention_mask)
                lp = torch.log_softmax(logits[mask].float(), -1)
                totals[c] += float(token_kl(lp, ref).double().sum())
        return kl_frame(conds, totals, n_tokens)

    return run


def kl_damage(
    model: SteerlabModel,
    vectors: VectorsArg,
    multipliers: MultipliersArg = DEFAULT_MULTIPLIERS,
    *,
    strengths: MultipliersArg | None = None,
    neutral: NeutralSet | None = None,
    batch_size: int = 8,
    fast: bool | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Mean per-token ``KL(steered || unsteered)`` on the neutral text set, per condition.

    Args:
        vectors: one vector or several (each evaluated alone).
        multipliers: raw multipliers (default -2..2), or instead
        strengths: strengths relative to the typical residual norm (e.g. [0, 0.05, 0.1]).
        neutral: the text set (default :func:`~steerlab.data.neutral.load_neutral_set`).
        fast: run only the blocks above each vector's layer from cached unsteered
            residuals (:mod:`steerlab.evaluation.damage_fast`; equal up to float rounding);
            ``None`` uses it where it applies (``resid_post`` sites, a linear unembedding).

    Returns a frame with columns ``vector, method, layer, multiplier, [strength,] kl,
    n_tokens``; ``kl`` is in nats per token, 0 at multiplier / strength 0.
    """
    from steerlab.evaluation.damage_fast import fast_kl_applies, fast_kl_runner

    if not as_vector_list(vectors):
        raise EmptyInputError("kl_damage() needs at least one steering vector.")
    neutral = load_neutral_set() if neutral is None else neutral
    use_fast = fast_kl_applies(model, vectors) if fast is None else fast
    if use_fast and not fast_kl_applies(model, vectors):
        raise ConfigError(
            "fast=True needs resid_post sites and a linear unembedding; use fast=None."
        )
    make = fast_kl_runner if use_fast else _kl_runner
    run = make(model, neutral, batch_size, progress)
    strength_list = check_strength_args(multipliers, strengths)
    if strength_list is None:
        return run(as_vector_list(vectors), tuple(float(m) for m in _as_tuple(multipliers)))
    return at_strengths(model, vectors, strength_list, run)


def _as_tuple(values: MultipliersArg) -> tuple[float, ...]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        return (float(values),)
    return tuple(float(v) for v in values)


def logprob_changes(items: pd.DataFrame) -> pd.DataFrame:
    """Per-item changes versus the unsteered condition, added as columns.

    ``items`` is a per-item likelihood frame (``vector, multiplier, item,
    logp_matching, logp_not_matching``; e.g. ``likelihood_margin_fast(per_item=True)``)
    that holds multiplier 0 for every vector. Adds ``d_logp_matching``,
    ``d_logp_not_matching`` and ``d_margin`` (steered minus unsteered, per item).
    """
    need = {"vector", "multiplier", "item", "logp_matching", "logp_not_matching"}
    missing = sorted(need - set(items.columns))
    if missing:
        raise ConfigError(f"logprob_changes() needs columns {missing}; got {list(items.columns)}.")
    base = items[items["multiplier"] == 0.0]
    lacking = sorted(set(items["vector"]) - set(base["vector"]))
    if lacking:
        raise ConfigError(
            f"No unsteered rows (multiplier 0) for {lacking}; include 0 in the multipliers."
        )
    ref = base.drop_duplicates(["vector", "item"]).set_index(["vector", "item"])
    key = pd.MultiIndex.from_arrays([items["vector"], items["item"]])
    out = items.copy()
    ref_m = ref["logp_matching"].reindex(key).to_numpy(dtype=float)
    ref_n = ref["logp_not_matching"].reindex(key).to_numpy(dtype=float)
    out["d_logp_matching"] = out["logp_matching"].to_numpy(dtype=float) - ref_m
    out["d_logp_not_matching"] = out["logp_not_matching"].to_numpy(dtype=float) - ref_n
    out["d_margin"] = out["d_logp_matching"] - out["d_logp_not_matching"]
    return out


def pair_logprob_changes(
    model: SteerlabModel,
    pairs: Iterable[Any],
    vectors: VectorsArg,
    multipliers: MultipliersArg = DEFAULT_MULTIPLIERS,
    *,
    strengths: MultipliersArg | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> pd.DataFrame:
    """Per pair and condition: both answers' log-likelihoods and their change versus the
    unsteered model (``d_logp_matching``, ``d_logp_not_matching``, ``d_margin``).

    Computed with :func:`~steerlab.evaluation.likelihood_fast.likelihood_margin_fast`
    (cached lower residuals where it applies); multiplier / strength 0 is always added.
    """
    from steerlab.evaluation.likelihood_fast import likelihood_margin_fast

    pair_list = list(pairs)

    def run(vecs: Sequence[SteeringVector], mults: tuple[float, ...]) -> pd.DataFrame:
        with_zero = mults if 0.0 in mults else (0.0, *mults)
        items = likelihood_margin_fast(
            model,
            pair_list,
            list(vecs),
            with_zero,
            batch_size=batch_size,
            progress=progress,
            per_item=True,
        )
        return logprob_changes(items)

    strength_list = check_strength_args(multipliers, strengths)
    if strength_list is None:
        return run(as_vector_list(vectors), _as_tuple(multipliers))
    return at_strengths(model, vectors, strength_list, run)
