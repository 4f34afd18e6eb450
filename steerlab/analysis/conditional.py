"""Conditional steering measured: the effect on on-topic prompts and the leakage into
unrelated ones, unsteered vs always steered vs steered only where the condition passes.

Per prompt set (``on_topic``, ``unrelated``) and mode (``unsteered``, ``always``,
``conditional``), :func:`conditional_effect` reports

- ``steered_share``: share of prompts the mode steers (the gate's pass rate for
  ``conditional``);
- ``kl``: mean per-token ``KL(mode || unsteered)`` of the next-token distributions over
  the answer tokens (the matching answer of a pair, the answer of a neutral text):
  how much the mode changes the model there;
- ``d_margin`` (pairs only): mean change of ``log p(matching) - log p(not matching)``
  versus unsteered: the steering effect, and on unrelated pairs its leakage;
- ``margin`` (pairs only): the mean margin itself.

Per-prompt gating makes each conditional result exactly the steered or the unsteered
one, so the modes share two scoring passes.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from steerlab.activations.batch import length_sorted_batches, right_pad
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.evaluation.damage import token_kl
from steerlab.evaluation.likelihood import pair_logprobs
from steerlab.evaluation.multipliers import vector_label, vector_layer
from steerlab.models.chat import EncodedText
from steerlab.models.model import SteerlabModel
from steerlab.steering.conditional import ConditionalSteering
from steerlab.steering.steer import steer

#: Columns of :func:`conditional_effect`'s frame.
CONDITIONAL_COLUMNS = ("set", "mode", "vector", "method", "layer", "multiplier", "metric",
                       "value", "sem", "n")  # fmt: skip
MODES = ("unsteered", "always", "conditional")


def _kind(item: Any) -> str:
    if all(hasattr(item, a) for a in ("question", "matching", "not_matching")):
        return "pair"
    if all(hasattr(item, a) for a in ("question", "answer")):
        return "text"
    raise ConfigError(
        f"Items must be preference pairs (question, matching, not_matching) or neutral "
        f"texts (question, answer); got a {type(item).__name__}."
    )


@torch.no_grad()
def answer_kl(
    model: SteerlabModel, items: Sequence[EncodedText], steering: Any, batch_size: int = 8
) -> Tensor:
    """Per item, mean ``KL(steered || unsteered)`` over the positions predicting its
    response tokens (``steering``: what ``steer(model, steering)`` accepts)."""
    out = torch.zeros(len(items), dtype=torch.float64)
    for idx in length_sorted_batches([len(e) for e in items], batch_size):
        batch = right_pad([items[i] for i in idx], model.pad_token_id, model.device)
        ref = model.bridge(batch.ids, attention_mask=batch.attention_mask)
        with steer(model, steering):
            got = model.bridge(batch.ids, attention_mask=batch.attention_mask)
        for j, i in enumerate(idx):
            p, n = items[i].prompt_len, len(items[i])
            lp = torch.log_softmax(got[j, p - 1 : n - 1].float(), -1)
            lr = torch.log_softmax(ref[j, p - 1 : n - 1].float(), -1)
            out[i] = token_kl(lp, lr).double().mean().cpu()
    return out


def _mean_sem(x: np.ndarray) -> tuple[float, float, int]:
    n = len(x)
    sem = float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return float(np.mean(x)), sem, n


def conditional_effect(
    model: SteerlabModel,
    conditional: ConditionalSteering,
    on_topic: Sequence[Any],
    unrelated: Sequence[Any],
    *,
    batch_size: int = 8,
) -> pd.DataFrame:
    """The tidy frame described in the module docstring (columns
    :data:`CONDITIONAL_COLUMNS`), for ``conditional``'s behavior steering (its first
    vector and multiplier label the rows) on two prompt sets of preference pairs or
    neutral texts."""
    spec = conditional.steering
    vec, mult = spec.vectors[0], spec.multipliers[0]
    head = {"vector": vector_label(vec), "method": vec.method, "layer": vector_layer(vec),
            "multiplier": mult}  # fmt: skip
    rows: list[dict[str, Any]] = []
    for name, items in (("on_topic", list(on_topic)), ("unrelated", list(unrelated))):
        if not items:
            raise EmptyInputError(f"conditional_effect: the {name} set is empty.")
        kinds = {_kind(x) for x in items}
        if len(kinds) > 1:
            raise ConfigError(f"The {name} set mixes pairs and texts; pass one kind.")
        gate = np.array(conditional.gate(model, [x.question for x in items]), dtype=float)
        answer = [getattr(x, "matching", None) or x.answer for x in items]
        enc = [
            EncodedText(model.chat.encode(x.question).prompt_ids, model.chat.encode_ids(a))
            for x, a in zip(items, answer)
        ]
        kl_always = answer_kl(model, enc, spec, batch_size).numpy()
        per_mode: dict[str, dict[str, np.ndarray]] = {}
        share = {"unsteered": np.zeros(len(items)), "always": np.ones(len(items)),
                 "conditional": gate}  # fmt: skip
        for mode in MODES:
            per_mode[mode] = {"steered_share": share[mode], "kl": share[mode] * kl_always}
        if kinds == {"pair"}:
            m0, n0 = pair_logprobs(model, items, batch_size)
            with steer(model, spec):
                m1, n1 = pair_logprobs(model, items, batch_size)
            base = (m0 - n0).double().numpy()
            steered = (m1 - n1).double().numpy()
            for mode in MODES:
                margin = np.where(share[mode] > 0, steered, base)
                per_mode[mode].update({"d_margin": margin - base, "margin": margin})
        for mode in MODES:
            for metric, values in per_mode[mode].items():
                value, sem, n = _mean_sem(values)
                rows.append({"set": name, "mode": mode, **head, "metric": metric,
                             "value": value, "sem": sem, "n": n})  # fmt: skip
    out = pd.DataFrame(rows, columns=list(CONDITIONAL_COLUMNS))
    out["layer"] = pd.Series([r["layer"] for r in rows], dtype=object)
    return out


__all__ = ["CONDITIONAL_COLUMNS", "MODES", "answer_kl", "conditional_effect"]
