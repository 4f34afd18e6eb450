"""The likelihood margin through the packed-pair forward: cached lower residuals.

The same numbers as :func:`~steerlab.evaluation.likelihood.likelihood_margin` (up to float
rounding), several times cheaper when many (vector, multiplier) conditions are scored:

- each pair is packed into one row (prompt, matching, not-matching; the not-matching
  tokens cannot see the matching ones), so the prompt is computed once for both answers;
- the residual stream after the vector's (lowest) layer is computed once, unsteered, and
  every condition runs only the blocks above that layer;
- the unembedding runs at response positions only.

It applies when every site of every vector is ``resid_post`` (added at every position, as
``steer()`` does by default) and the model has a plain linear unembedding; otherwise the
call goes through :func:`~steerlab.evaluation.likelihood.likelihood_margin`. The
engine (packing, cache, upper forward) is :mod:`steerlab.activations.packed`, shared with
BiPO training.
"""

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from steerlab.activations.batch import length_sorted_batches
from steerlab.activations.packed import (
    PairCache,
    build_cache,
    sequence_logprobs,
    shared_positions,
    steered_upper_hidden,
    supports_fast_unembed,
    token_logprobs_from_hidden,
)
from steerlab.data.convert import as_pairs
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.evaluation.likelihood import LIKELIHOOD_METRICS, likelihood_margin
from steerlab.evaluation.multipliers import (
    DEFAULT_MULTIPLIERS,
    MultipliersArg,
    VectorsArg,
    as_vector_list,
    conditions,
    summarize,
)
from steerlab.evaluation.strengths import evaluate_conditions
from steerlab.models.model import SteerlabModel
from steerlab.steering.steer import Steering
from steerlab.utils.progress import progress_bar
from steerlab.vectors.vector import SteeringVector


def fast_path_applies(model: SteerlabModel, vectors: VectorsArg) -> bool:
    """True when :func:`likelihood_margin_fast` can use cached residuals for ``vectors``."""
    vecs: list[SteeringVector] = as_vector_list(vectors)
    return supports_fast_unembed(model) and all(
        s.kind == "resid_post" for v in vecs for s in v.sites
    )


@torch.no_grad()
def _steered_logprobs(
    model: SteerlabModel, cache: PairCache, deltas: dict[Any, Tensor], batch_size: int
) -> tuple[Tensor, Tensor]:
    """(log p(matching), log p(not matching)) per pair with ``deltas`` added (the cache
    holds resid_post of the lowest steered layer)."""
    n = len(cache.packed)
    lp_m = torch.zeros(n, dtype=torch.float64)
    lp_n = torch.zeros(n, dtype=torch.float64)
    for idx in length_sorted_batches(cache.lengths, batch_size):
        batch, resid = cache.batch(idx, model.pad_token_id, model.device)
        shared = shared_positions(batch, resid)  # a common system prefix: once per batch
        hidden = steered_upper_hidden(model, resid, batch, deltas, shared)
        lp = token_logprobs_from_hidden(model, hidden, batch.tgt_tok)
        m, nm = sequence_logprobs(lp.double(), batch)
        lp_m[idx], lp_n[idx] = m.cpu(), nm.cpu()
    return lp_m, lp_n


def likelihood_margin_fast(
    model: SteerlabModel,
    pairs: Iterable[Any],
    vectors: VectorsArg = None,
    multipliers: MultipliersArg = DEFAULT_MULTIPLIERS,
    *,
    batch_size: int = 8,
    progress: bool = True,
    per_item: bool = False,
    strengths: MultipliersArg | None = None,
    caches: "dict[int, PairCache] | None" = None,
) -> pd.DataFrame:
    """Mean likelihood margin of held-out pairs under steering (the tidy frame of
    :func:`~steerlab.evaluation.likelihood.likelihood_margin`), via cached residuals.

    Use it when scoring several vectors or multipliers at the same layer: the work
    below the layer and the shared prompt are computed once.

    per_item: return the per-pair log-likelihoods under each (vector, multiplier)
        instead (the columns of ``likelihood_margin(..., per_item=True)``).
    strengths: instead of ``multipliers``, strengths relative to the typical residual
        norm (see :mod:`steerlab.evaluation.strengths`); adds a ``strength`` column.
    caches: a dict to keep the per-layer residual caches in, so that further calls on
        the *same pairs* (same order, same model and batch size) reuse them.
    """
    pair_list = as_pairs(pairs)
    if not pair_list:
        raise EmptyInputError("likelihood_margin_fast() got no pairs.")
    if strengths is not None:

        def run(vecs: list[SteeringVector], mults: tuple[float, ...]) -> pd.DataFrame:
            return likelihood_margin_fast(model, pair_list, vecs, mults, batch_size=batch_size,
                                          progress=progress, per_item=True,
                                          caches=caches)  # fmt: skip

        return evaluate_conditions(
            model, vectors, multipliers, strengths, run, LIKELIHOOD_METRICS, per_item
        )
    if not fast_path_applies(model, vectors):
        return likelihood_margin(model, pair_list, vectors, multipliers, batch_size=batch_size,
                                 progress=progress, per_item=per_item)  # fmt: skip
    conds = conditions(vectors, multipliers)
    caches = {} if caches is None else caches

    def cache_at(layer: int) -> PairCache:
        if layer in caches and len(caches[layer].packed) != len(pair_list):
            raise ConfigError(
                f"likelihood_margin_fast(caches=...) holds a cache of "
                f"{len(caches[layer].packed)} pairs at layer {layer}, but {len(pair_list)} "
                "pairs were given; pass a new dict for other pairs."
            )
        if layer not in caches:
            caches[layer] = build_cache(
                model, pair_list, layer, batch_size=batch_size, progress=False
            )
        return caches[layer]

    first = min(
        (
            s.resolve(model.n_layers).layer
            for c in conds
            if c.vector is not None
            for s in c.vector.sites
        ),
        default=model.n_layers // 2,  # unsteered only: any layer gives the same numbers
    )
    base = cache_at(first)
    n = len(pair_list)
    n_tok = [(len(p.matching), len(p.not_matching)) for p in base.packed]
    frames = []
    for cond in progress_bar(conds, desc="likelihood margin (fast)", enabled=progress):
        if cond.steered:
            deltas = Steering.of(cond.vector, cond.multiplier).deltas(model)
            lp_m, lp_n = _steered_logprobs(model, cache_at(min(deltas).layer), deltas, batch_size)
        else:  # multiplier 0: the reference log-probs of the cache, shared by all vectors
            lp_m, lp_n = base.ref_matching, base.ref_not_matching
        margin = (lp_m - lp_n).numpy()
        frames.append(
            pd.DataFrame(
                {
                    "vector": [cond.label] * n,
                    "method": [cond.method] * n,
                    "layer": pd.Series([cond.layer] * n, dtype=object),
                    "multiplier": np.full(n, cond.multiplier),
                    "item": np.arange(n),
                    "logp_matching": lp_m.numpy(),
                    "logp_not_matching": lp_n.numpy(),
                    "margin": margin,
                    "prefers_matching": (margin > 0).astype(float),
                    "n_tokens_matching": [a for a, _ in n_tok],
                    "n_tokens_not_matching": [b for _, b in n_tok],
                }
            )
        )
    items = pd.concat(frames, ignore_index=True)
    return items if per_item else summarize(items, LIKELIHOOD_METRICS)
