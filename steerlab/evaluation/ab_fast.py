"""A/B probability through cached lower residuals, read at the answer position only.

The numbers of :func:`~steerlab.evaluation.ab.ab_probability` (up to float rounding),
cheaper when several multipliers or vectors are scored: per batch of items, the
unsteered ``resid_post`` of each steered layer is computed once; the unsteered answer
(multiplier 0) and every steered condition run only the blocks above it (the batch's
common prefix, the chat template's system turn, once: the packed-pair engine of
:mod:`steerlab.activations.packed`), and the unembedding runs at one position per item,
reduced at once to the two letters' logits and the log-normaliser.

It applies where the fast likelihood margin does (``resid_post`` sites, a plain linear
unembedding); elsewhere :func:`ab_probability_fast` is :func:`ab_probability`.
"""

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from steerlab.activations.batch import length_sorted_batches
from steerlab.activations.packed import (
    PackedBatch,
    lower_residuals,
    shared_positions,
    steered_upper_hidden,
    unembed_linear,
    upper_hidden,
)
from steerlab.activations.prompts import LetterIds, encode_ab, letter_token_ids
from steerlab.data.convert import as_ab_items
from steerlab.errors import EmptyInputError
from steerlab.evaluation.ab import AB_METRICS, ab_probability, scores_from_letters
from steerlab.evaluation.damage_fast import plain_batch
from steerlab.evaluation.likelihood_fast import fast_path_applies
from steerlab.evaluation.multipliers import (
    DEFAULT_MULTIPLIERS,
    MultipliersArg,
    VectorsArg,
    condition_frame,
    conditions,
    summarize,
)
from steerlab.evaluation.strengths import evaluate_conditions
from steerlab.models.chat import EncodedText
from steerlab.models.model import SteerlabModel
from steerlab.steering.steer import Steering
from steerlab.utils.gemm import linear
from steerlab.utils.progress import progress_bar
from steerlab.vectors.vector import SteeringVector


def answer_batch(encoded: Sequence[EncodedText], pad_id: int) -> PackedBatch:
    """Right-padded prompts (causal attention within each row) read at one position per
    row: its last real token, whose next token is the answer letter."""
    batch = plain_batch(encoded, pad_id)
    rows = torch.arange(batch.batch)
    zeros = torch.zeros(batch.batch, dtype=torch.long)
    return dataclasses.replace(
        batch, tgt_row=rows, tgt_pos=batch.lengths - 1, tgt_tok=zeros, tgt_seg=zeros
    )


def _letters(
    model: SteerlabModel, hidden: Float[Tensor, "n d_model"], lid: LetterIds
) -> Float[Tensor, "n 3"]:
    """(logit of A, logit of B, logsumexp of all logits) at each read position."""
    lin = unembed_linear(model)
    assert lin is not None  # fast_path_applies() checked it
    logits = linear(hidden, lin.weight, lin.bias).float()
    return torch.stack([logits[:, lid.a], logits[:, lid.b], logits.logsumexp(-1)], 1).cpu()


@torch.no_grad()
def _letter_logits(
    model: SteerlabModel,
    encoded: Sequence[EncodedText],
    deltas: dict[int, dict[Any, Tensor]],
    batch_size: int,
    progress: bool,
    unsteered: bool = True,
) -> tuple[Tensor, dict[int, Tensor]]:
    """Unsteered ``[n, 3]`` letters (left empty when ``unsteered`` is False: no condition
    reads them) and, per steered condition, its ``[n, 3]``."""
    lid = letter_token_ids(model)
    by_layer: dict[int, list[int]] = {}
    for c, d in deltas.items():
        by_layer.setdefault(min(d).layer, []).append(c)
    base = min(by_layer, default=model.n_layers // 2)  # unsteered only: any layer serves
    n = len(encoded)
    ref = torch.empty(n, 3)
    out = {c: torch.empty(n, 3) for c in deltas}
    batches = length_sorted_batches([len(e) for e in encoded], batch_size)
    for idx in progress_bar(batches, desc="A/B probability (fast)", enabled=progress):
        batch = answer_batch([encoded[i] for i in idx], model.pad_token_id).to(model.device)
        rows = torch.as_tensor(idx)
        for layer in sorted({base, *by_layer}):
            resid = lower_residuals(model, batch, layer)
            shared = shared_positions(batch, resid)  # a common system prefix: once
            if layer == base and unsteered:
                hidden = upper_hidden(model, resid, batch, layer, shared=shared)
                ref[rows] = _letters(model, hidden, lid)
            for c in by_layer.get(layer, []):
                hidden = steered_upper_hidden(model, resid, batch, deltas[c], shared)
                out[c][rows] = _letters(model, hidden, lid)
    return ref, out


def ab_probability_fast(
    model: SteerlabModel,
    items: Iterable[Any],
    vectors: VectorsArg = None,
    multipliers: MultipliersArg = DEFAULT_MULTIPLIERS,
    *,
    batch_size: int = 16,
    progress: bool = True,
    method: str | None = None,
    layer: int | str | None = None,
    per_item: bool = False,
    strengths: MultipliersArg | None = None,
) -> pd.DataFrame:
    """:func:`~steerlab.evaluation.ab.ab_probability` (same arguments, same frames) via
    cached lower residuals; it falls back to that function where they do not apply."""
    item_list = as_ab_items(items)
    if not item_list:
        raise EmptyInputError("ab_probability_fast() got no items.")
    kw: dict[str, Any] = {"batch_size": batch_size, "progress": progress, "method": method,
                          "layer": layer}  # fmt: skip
    if strengths is not None:

        def run(vecs: list[SteeringVector], mults: tuple[float, ...]) -> pd.DataFrame:
            return ab_probability_fast(model, item_list, vecs, mults, per_item=True, **kw)

        return evaluate_conditions(
            model, vectors, multipliers, strengths, run, AB_METRICS, per_item
        )
    if not fast_path_applies(model, vectors):
        return ab_probability(model, item_list, vectors, multipliers, per_item=per_item, **kw)
    conds = conditions(vectors, multipliers, method=method, layer=layer)
    deltas = {
        c: Steering.of(cond.vector, cond.multiplier).deltas(model)
        for c, cond in enumerate(conds)
        if cond.steered
    }
    encoded = [encode_ab(model, it) for it in item_list]
    unsteered = len(deltas) < len(conds)  # some condition reads the unsteered letters
    ref, steered = _letter_logits(model, encoded, deltas, batch_size, progress, unsteered)
    frames = [
        condition_frame(cond, scores_from_letters(item_list, *steered.get(c, ref).unbind(1)))
        for c, cond in enumerate(conds)
    ]
    items_frame = pd.concat(frames, ignore_index=True)
    return items_frame if per_item else summarize(items_frame, AB_METRICS)
