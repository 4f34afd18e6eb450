"""Response log-likelihoods and the likelihood margin of preference pairs, under steering.

``log p(response | prompt)`` is the sum of the log-probabilities of the response tokens
(the quantity in BiPO's objective). The margin of a pair is ``log p(matching) - log
p(not_matching)``: positive when the model prefers the behavior-matching answer. Steering
towards the behavior should raise it, steering away should lower it.

Logits are computed only where they are needed (``logits_to_keep`` when the Hugging Face
model supports it) and ``log_softmax`` runs only at response positions.
"""

import functools
import inspect
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from steerlab.activations.batch import TokenBatch, length_sorted_batches, right_pad
from steerlab.activations.prompts import encode_pair
from steerlab.data.convert import as_pairs
from steerlab.errors import EmptyInputError
from steerlab.evaluation.multipliers import (
    DEFAULT_MULTIPLIERS,
    MultipliersArg,
    VectorsArg,
    sweep_multipliers,
)
from steerlab.evaluation.strengths import evaluate_conditions
from steerlab.models.chat import EncodedText
from steerlab.models.model import SteerlabModel
from steerlab.utils.progress import progress_bar
from steerlab.vectors.vector import SteeringVector

#: metric name -> per-item column of ``likelihood_margin(..., per_item=True)``.
LIKELIHOOD_METRICS = {
    "margin": "margin",
    "logp_matching": "logp_matching",
    "logp_not_matching": "logp_not_matching",
    "prefers_matching": "prefers_matching",
}


@functools.cache
def _accepts_logits_to_keep(cls: type) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic forward signatures
        return False


def logits_at(
    model: SteerlabModel,
    ids: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"],
    positions: Int[Tensor, " k"],
) -> Float[Tensor, "batch k vocab"]:
    """Logits at sequence ``positions`` (the same ones for every row) of a full forward.

    Hooks (steering) run as in a plain forward; only the unembedding is restricted to
    ``positions`` (Hugging Face's ``logits_to_keep``), which saves time and memory.
    """
    hf = getattr(model.bridge, "original_model", None)
    if hf is not None and _accepts_logits_to_keep(type(hf)):
        return model.bridge(ids, attention_mask=attention_mask, logits_to_keep=positions)
    return model.bridge(ids, attention_mask=attention_mask)[:, positions]


def batch_response_logprobs(model: SteerlabModel, batch: TokenBatch) -> Float[Tensor, " batch"]:
    """Sum of ``log p(token)`` over each row's response tokens, for one padded batch.

    Differentiable (no ``no_grad`` here): the BiPO trainer can use it under a steering
    hook whose vector requires grad. Rows with an empty response score 0.
    """
    n_rows = batch.ids.shape[0]
    mask = batch.target_mask  # [b, pos]: positions whose next token is a response token
    if not bool(mask.any()):
        return torch.zeros(n_rows, device=batch.ids.device)
    cols = mask.any(0).nonzero().squeeze(-1)
    start, stop = int(cols.min()), int(cols.max()) + 1  # stop <= pos - 1
    positions = torch.arange(start, stop, device=batch.ids.device)
    logits = logits_at(model, batch.ids, batch.attention_mask, positions)  # [b, k, vocab]
    m = mask[:, start:stop]
    targets = batch.ids[:, start + 1 : stop + 1][m]  # [t] next tokens at the kept positions
    logp = torch.log_softmax(logits[m].float(), dim=-1)  # [t, vocab], response positions only
    token_lp = logp.gather(-1, targets[:, None]).squeeze(-1)  # [t]
    rows = m.nonzero()[:, 0]
    return torch.zeros(n_rows, dtype=token_lp.dtype, device=token_lp.device).index_add(
        0, rows, token_lp
    )


def response_logprobs(
    model: SteerlabModel,
    encoded: Sequence[EncodedText],
    batch_size: int = 16,
    *,
    progress: bool = False,
) -> Float[Tensor, " n"]:
    """``log p(response | prompt)`` (summed over response tokens) of each encoded text.

    Length-sorted right-padded batches, no gradients; fp32 on CPU, in input order.
    Under an enclosing ``with steer(...)`` the steered model is scored.
    """
    if not encoded:
        raise EmptyInputError("response_logprobs() got no sequences.")
    out = torch.empty(len(encoded))
    batches = length_sorted_batches([len(e) for e in encoded], batch_size)
    with torch.no_grad():
        for idx in progress_bar(batches, desc="logprobs", enabled=progress):
            batch = right_pad([encoded[i] for i in idx], model.pad_token_id, model.device)
            out[idx] = batch_response_logprobs(model, batch).float().cpu()
    return out


def pair_logprobs(
    model: SteerlabModel, pairs: Iterable[Any], batch_size: int = 16, *, progress: bool = False
) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    """``(log p(matching), log p(not_matching))`` of each preference pair."""
    pair_list = as_pairs(pairs)
    if not pair_list:
        raise EmptyInputError("pair_logprobs() got no pairs.")
    enc = [encode_pair(model, p) for p in pair_list]
    lp = response_logprobs(
        model, [e[0] for e in enc] + [e[1] for e in enc], batch_size, progress=progress
    )
    n = len(pair_list)
    return lp[:n], lp[n:]


def likelihood_margin(
    model: SteerlabModel,
    pairs: Iterable[Any],
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
    """Mean likelihood margin of held-out preference pairs under steering (tidy frame).

    For each vector (evaluated separately) and multiplier: metrics ``margin`` (mean of
    ``log p(matching) - log p(not_matching)``, response tokens summed), ``logp_matching``,
    ``logp_not_matching`` and ``prefers_matching`` (share of pairs with a positive
    margin). Columns: ``vector, method, layer, multiplier, metric, value, sem, n``.
    ``vectors=None`` scores the unsteered model only. Multiplier 0 is computed once.

    ``per_item=True`` returns the per-pair log-likelihoods instead: ``vector, method,
    layer, multiplier, item, logp_matching, logp_not_matching, margin,
    prefers_matching`` (1.0 where the margin is positive), ``n_tokens_matching,
    n_tokens_not_matching``.

    ``strengths=`` (instead of ``multipliers``): strengths relative to the typical
    residual norm at each vector's site (see :mod:`steerlab.evaluation.strengths`); the
    frames then also have a ``strength`` column.
    """
    pair_list = as_pairs(pairs)
    if not pair_list:
        raise EmptyInputError("likelihood_margin() got no pairs.")
    enc = [encode_pair(model, p) for p in pair_list]
    pos, neg = [e[0] for e in enc], [e[1] for e in enc]
    n = len(pair_list)
    n_tok_pos = [len(e.response_ids) for e in pos]
    n_tok_neg = [len(e.response_ids) for e in neg]

    def score() -> dict[str, Any]:
        lp = response_logprobs(model, pos + neg, batch_size)
        margin = lp[:n] - lp[n:]
        return {
            "logp_matching": lp[:n],
            "logp_not_matching": lp[n:],
            "margin": margin,
            "prefers_matching": (margin > 0).float(),
            "n_tokens_matching": n_tok_pos,
            "n_tokens_not_matching": n_tok_neg,
        }

    def run(vecs: list[SteeringVector], mults: tuple[float, ...]) -> pd.DataFrame:
        return sweep_multipliers(model, vecs, mults, score, method=method, layer=layer,
                                 progress=progress, desc="likelihood margin")  # fmt: skip

    return evaluate_conditions(
        model, vectors, multipliers, strengths, run, LIKELIHOOD_METRICS, per_item
    )
