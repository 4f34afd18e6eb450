"""KL damage through cached lower residuals: the blocks below a vector's layer run once.

The same numbers as the plain path of :func:`~steerlab.evaluation.damage.kl_damage` (up
to float rounding), several times cheaper when many conditions are measured:

- the unsteered next-token distributions of the neutral tokens are computed once;
- per layer, the unsteered ``resid_post`` of every neutral batch is computed once, and
  each condition at that layer adds its vector there and runs only the blocks above
  (the packed-pair engine of :mod:`steerlab.activations.packed`: its batch type with a
  4-D mask and target positions, :func:`~steerlab.activations.packed.lower_residuals`,
  :func:`~steerlab.activations.packed.steered_upper_hidden`).

It applies when every site is ``resid_post`` (added at every position) and the model has
a plain linear unembedding; the KL positions are those of the plain path (every real
token but the first of each turn).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from steerlab.activations.batch import length_sorted_batches
from steerlab.activations.packed import (
    PackedBatch,
    common_prefix,
    final_hidden_only,
    lower_residuals,
    shared_positions,
    steered_upper_hidden,
    unembed_linear,
)
from steerlab.data.neutral import NeutralSet
from steerlab.evaluation.damage import kl_frame, token_kl
from steerlab.evaluation.likelihood_fast import fast_path_applies
from steerlab.evaluation.multipliers import VectorsArg, conditions
from steerlab.models.chat import EncodedText
from steerlab.models.model import SteerlabModel
from steerlab.steering.steer import Steering
from steerlab.utils.gemm import linear
from steerlab.utils.progress import progress_bar
from steerlab.vectors.vector import SteeringVector


def fast_kl_applies(model: SteerlabModel, vectors: VectorsArg) -> bool:
    """True when the cached-residual KL applies to ``vectors`` on ``model``: where the
    fast likelihood margin does (:func:`~steerlab.evaluation.likelihood_fast.fast_path_applies`:
    ``resid_post`` sites, a plain linear unembedding)."""
    return fast_path_applies(model, vectors)


def plain_batch(encoded: Sequence[EncodedText], pad_id: int) -> PackedBatch:
    """Plain (unpacked) sequences as a right-padded :class:`PackedBatch`: causal
    attention within each row, targets at every position but the first."""
    width = max(len(e) for e in encoded)
    b = len(encoded)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    allowed = torch.tril(torch.ones(width, width, dtype=torch.bool)).repeat(b, 1, 1)
    rows, poss = [], []
    for i, e in enumerate(encoded):
        n = len(e)
        ids[i, :n] = torch.tensor(e.ids)
        allowed[i, :, n:] = False  # padding keys are never attended to
        allowed[i, n:, n:] = torch.eye(width - n, dtype=torch.bool)  # pad rows: themselves
        rows += [i] * (n - 1)
        poss += list(range(1, n))
    pos_ids = torch.arange(width).repeat(b, 1)
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
    n_tok = len(rows)
    return PackedBatch(
        ids,
        pos_ids,
        allowed,
        lengths,
        torch.tensor(rows, dtype=torch.long),
        torch.tensor(poss, dtype=torch.long),
        torch.zeros(n_tok, dtype=torch.long),
        torch.zeros(n_tok, dtype=torch.long),
        shared=common_prefix([e.ids for e in encoded]),
    )


def _logprobs(model: SteerlabModel, hidden: Float[Tensor, "n d"]) -> Float[Tensor, "n vocab"]:
    lin = unembed_linear(model)
    assert lin is not None  # fast_kl_applies() checked it
    return linear(hidden, lin.weight, lin.bias).float().log_softmax(-1)


def _full_hidden(model: SteerlabModel, batch: PackedBatch) -> Float[Tensor, "n d"]:
    mask = batch.attention_mask(model.dtype)
    with final_hidden_only(model):
        hidden = model.bridge(batch.ids, attention_mask=mask, position_ids=batch.position_ids)
    return hidden[batch.tgt_row, batch.tgt_pos]


def fast_kl_runner(
    model: SteerlabModel, neutral: NeutralSet, batch_size: int, progress: bool
) -> Any:
    """``run(vectors, multipliers) -> frame`` with the columns of ``kl_damage``."""
    encoded = neutral.encode(model)
    batches = [
        plain_batch([encoded[i] for i in idx], model.pad_token_id).to(model.device)
        for idx in length_sorted_batches([len(e) for e in encoded], batch_size)
    ]
    n_tokens = sum(int(b.tgt_row.numel()) for b in batches)

    @torch.no_grad()
    def run(vectors: Sequence[SteeringVector], multipliers: tuple[float, ...]) -> pd.DataFrame:
        conds = conditions(list(vectors) or None, multipliers)
        by_layer: dict[int, list[tuple[int, dict[Any, Tensor]]]] = {}
        for c, cond in enumerate(conds):
            if cond.steered:
                deltas = Steering.of(cond.vector, cond.multiplier).deltas(model)
                by_layer.setdefault(min(deltas).layer, []).append((c, deltas))
        totals = np.zeros(len(conds))
        if by_layer:
            refs = [_logprobs(model, _full_hidden(model, b)) for b in batches]
            work = [(layer, b, ref) for layer in sorted(by_layer) for b, ref in zip(batches, refs)]
            for layer, batch, ref in progress_bar(work, desc="KL damage (fast)", enabled=progress):
                resid = lower_residuals(model, batch, layer)
                shared = shared_positions(batch, resid)  # a common system prefix: once
                for c, deltas in by_layer[layer]:
                    hidden = steered_upper_hidden(model, resid, batch, deltas, shared)
                    lp = _logprobs(model, hidden)
                    totals[c] += float(token_kl(lp, ref).double().sum())
        return kl_frame(conds, totals, n_tokens)

    return run
