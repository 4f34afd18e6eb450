"""A/B behavioral probability: how much probability the model puts on the matching letter.

Each item is asked with its two choices in the user turn; the assistant turn starts with
``"("`` and the next token is the answer letter. ``p_matching`` is the softmax over the
logits of the ``A`` and ``B`` tokens at that position, read for the matching letter (CAA's
behavioral probability). Steering towards the behavior should raise it.
"""

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from steerlab.activations.batch import length_sorted_batches, right_pad
from steerlab.activations.prompts import encode_ab, letter_token_ids
from steerlab.data.convert import as_ab_items
from steerlab.errors import EmptyInputError
from steerlab.evaluation.likelihood import logits_at
from steerlab.evaluation.multipliers import (
    DEFAULT_MULTIPLIERS,
    MultipliersArg,
    VectorsArg,
    sweep_multipliers,
)
from steerlab.evaluation.strengths import evaluate_conditions
from steerlab.models.model import SteerlabModel
from steerlab.utils.progress import progress_bar
from steerlab.vectors.vector import SteeringVector

#: metric name -> per-item column of ``ab_probability(..., per_item=True)``.
AB_METRICS = {
    "p_matching": "p_matching",
    "matching_rate": "matched",
    "letter_mass": "letter_mass",
}


def answer_logits(
    model: SteerlabModel, items: Iterable[Any], batch_size: int = 16, *, progress: bool = False
) -> Float[Tensor, "n vocab"]:
    """Next-token logits at the answer-letter position (after ``"("``) of each A/B item.

    Length-sorted right-padded batches; each row is read at its own last real
    position, so the result does not depend on ``batch_size``. fp32 on CPU.
    """
    encoded = [encode_ab(model, it) for it in items]
    if not encoded:
        raise EmptyInputError("No A/B items to score.")
    out = torch.empty(len(encoded), model.d_vocab)
    batches = length_sorted_batches([len(e) for e in encoded], batch_size)
    with torch.no_grad():
        for idx in progress_bar(batches, desc="A/B", enabled=progress):
            batch = right_pad([encoded[i] for i in idx], model.pad_token_id, model.device)
            positions, row_col = torch.unique(batch.last_index, return_inverse=True)
            logits = logits_at(model, batch.ids, batch.attention_mask, positions)  # [b, k, V]
            rows = torch.arange(len(idx), device=logits.device)
            out[idx] = logits[rows, row_col.to(logits.device)].float().cpu()
    return out


def scores_from_letters(
    items: Sequence[Any],
    logit_a: Float[Tensor, " n"],
    logit_b: Float[Tensor, " n"],
    lse: Float[Tensor, " n"],
) -> dict[str, Any]:
    """The per-item columns of :func:`ab_scores` from each item's logits of ``A`` and
    ``B`` at the answer position and the logsumexp of all its logits there."""
    p_a, p_b = (logit_a - lse).exp(), (logit_b - lse).exp()
    pair = torch.softmax(torch.stack([logit_a, logit_b], 1), dim=-1)  # P(A), P(B) over A/B
    is_a = torch.tensor([it.matching == "A" for it in items])
    p_matching = torch.where(is_a, pair[:, 0], pair[:, 1])
    diff = logit_a - logit_b
    return {
        "matching": [it.matching for it in items],
        "p_matching": p_matching,
        "matched": (p_matching > 0.5).float(),
        "p_a": p_a,
        "p_b": p_b,
        "letter_mass": p_a + p_b,
        "logit_diff": torch.where(is_a, diff, -diff),
    }


def ab_scores(
    model: SteerlabModel, items: Iterable[Any], batch_size: int = 16, *, progress: bool = False
) -> dict[str, Any]:
    """Per-item A/B scores of the current (possibly steered) model.

    ``p_matching``: P(matching letter) normalised over the two letters; ``matched``: 1.0
    where it exceeds 0.5; ``p_a`` / ``p_b``: the letters' probabilities under the full
    next-token distribution and ``letter_mass`` their sum (low = the model would not
    answer with a letter); ``logit_diff``: logit(matching) - logit(other).
    """
    item_list = list(items)
    lid = letter_token_ids(model)
    logits = answer_logits(model, item_list, batch_size, progress=progress)
    return scores_from_letters(
        item_list, logits[:, lid.a], logits[:, lid.b], torch.logsumexp(logits, dim=-1)
    )


def ab_probability(
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
    """Behavioral probability on A/B items under steering (tidy frame).

    For each vector (evaluated separately) and multiplier: metrics ``p_matching`` (mean
    P(matching letter) normalised over A/B), ``matching_rate`` (share of items with
    ``p_matching > 0.5``) and ``letter_mass`` (mean P(A) + P(B) over the whole
    vocabulary). Columns: ``vector, method, layer, multiplier, metric, value, sem, n``.
    ``vectors=None`` scores the unsteered model only; ``method`` / ``layer`` override
    the labels from the vectors' provenance. Multiplier 0 is computed once. Free-form
    pairs are turned into A/B items first (``pairs_to_ab``, seed 0).

    ``per_item=True`` returns the per-item scores instead: ``vector, method, layer,
    multiplier, item`` and the columns of :func:`ab_scores`.

    ``strengths=`` (instead of ``multipliers``): strengths relative to the typical
    residual norm at each vector's site (see :mod:`steerlab.evaluation.strengths`); the
    frames then also have a ``strength`` column.
    """
    item_list = as_ab_items(items)
    if not item_list:
        raise EmptyInputError("ab_probability() got no items.")

    def score() -> dict[str, Any]:
        return ab_scores(model, item_list, batch_size)

    def run(vecs: list[SteeringVector], mults: tuple[float, ...]) -> pd.DataFrame:
        return sweep_multipliers(model, vecs, mults, score, method=method, layer=layer,
                                 progress=progress, desc="A/B probability")  # fmt: skip

    return evaluate_conditions(model, vectors, multipliers, strengths, run, AB_METRICS, per_item)
