"""The prompt steering method through the vectors' metrics: margin, KL damage, judged
answers, in the same tidy frames (``method='prompt'``, ``layer=None``).

- :func:`prompt_likelihood_margin`: the likelihood margin of preference pairs whose
  prompts carry the instruction in the system prompt; the frame of
  :func:`~steerlab.evaluation.likelihood.likelihood_margin` (``per_item=True``: its
  per-item frame, which :func:`~steerlab.evaluation.damage.logprob_changes` accepts).
- :func:`prompt_kl_damage`: mean per-token ``KL(prompted || unprompted)`` of the
  next-token distributions on the neutral texts; the frame of
  :func:`~steerlab.evaluation.damage.kl_damage`. The two prompts differ in the system
  turn, so the tokens compared are those both sequences share at their end (the user
  turn and the answer), at the positions that predict the next one; the vectors' KL
  also counts the system-prompt tokens, which prompting changes by design.
- :func:`prompt_open_ended`: greedy answers with the instructed system prompt
  (:func:`~steerlab.evaluation.open_ended.run_open_ended`'s ``system_prompt``), judged
  with the same judges; one answers file per sign.

``strengths``: only their signs count (-1: suppressing, 0: the model's own system prompt,
+1: eliciting); the ``multiplier`` column holds the sign.
"""

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from steerlab.activations.batch import length_sorted_batches, right_pad
from steerlab.data.convert import as_pairs
from steerlab.data.neutral import NeutralSet, load_neutral_set
from steerlab.errors import EmptyInputError
from steerlab.evaluation.damage import kl_frame, token_kl
from steerlab.evaluation.likelihood import LIKELIHOOD_METRICS, response_logprobs
from steerlab.evaluation.multipliers import Condition, MultipliersArg, summarize
from steerlab.models.chat import EncodedText
from steerlab.models.model import SteerlabModel
from steerlab.steering.prompting import PromptSteering, get_prompt, prompt_signs

PromptArg = PromptSteering | str
DEFAULT_STRENGTHS = (-1.0, 0.0, 1.0)


def _as_prompt(prompt: PromptArg) -> PromptSteering:
    return prompt if isinstance(prompt, PromptSteering) else get_prompt(prompt)


def _head(prompt: PromptSteering, sign: int, n: int) -> dict[str, Any]:
    return {
        "vector": [prompt.label] * n,
        "method": [prompt.method] * n,
        "layer": pd.Series([None] * n, dtype=object),
        "multiplier": np.full(n, float(sign)),
    }


def prompt_likelihood_margin(
    model: SteerlabModel,
    pairs: Iterable[Any],
    prompt: PromptArg,
    strengths: MultipliersArg = DEFAULT_STRENGTHS,
    *,
    batch_size: int = 16,
    per_item: bool = False,
) -> pd.DataFrame:
    """Likelihood margin of ``pairs`` with ``prompt``'s instruction in the system prompt.

    Returns :func:`~steerlab.evaluation.likelihood.likelihood_margin`'s summary
    (``vector, method, layer, multiplier, metric, value, sem, n``) or, with
    ``per_item=True``, its per-item frame. Sign 0 scores the model's own system prompt,
    i.e. the unsteered rows of the vectors' frames.
    """
    pair_list = as_pairs(pairs)
    if not pair_list:
        raise EmptyInputError("prompt_likelihood_margin() got no pairs.")
    prompt = _as_prompt(prompt)
    n = len(pair_list)
    frames = []
    for sign in prompt_signs(strengths):
        system = prompt.system_prompt(model.system_prompt, sign)
        pos, neg = [], []
        for p in pair_list:
            ids = model.chat.encode(p.question, system_prompt=system).prompt_ids
            pos.append(EncodedText(ids, model.chat.encode_ids(p.matching)))
            neg.append(EncodedText(ids, model.chat.encode_ids(p.not_matching)))
        lp = response_logprobs(model, pos + neg, batch_size).double().numpy()
        margin = lp[:n] - lp[n:]
        cols = {
            "item": np.arange(n),
            "logp_matching": lp[:n],
            "logp_not_matching": lp[n:],
            "margin": margin,
            "prefers_matching": (margin > 0).astype(float),
            "n_tokens_matching": [len(e.response_ids) for e in pos],
            "n_tokens_not_matching": [len(e.response_ids) for e in neg],
        }
        frames.append(pd.DataFrame({**_head(prompt, sign, n), **cols}))
    items = pd.concat(frames, ignore_index=True)
    return items if per_item else summarize(items, LIKELIHOOD_METRICS)


def shared_suffix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common suffix of two token sequences."""
    k = 0
    while k < min(len(a), len(b)) and a[len(a) - 1 - k] == b[len(b) - 1 - k]:
        k += 1
    return k


def _encode_neutral(
    model: SteerlabModel, neutral: NeutralSet, system: str | None
) -> list[tuple[int, ...]]:
    return [
        model.chat.encode(t.question, system_prompt=system).prompt_ids
        + model.chat.encode_ids(t.answer)
        for t in neutral
    ]


@torch.no_grad()
def _suffix_logprobs(
    model: SteerlabModel, seqs: list[tuple[int, ...]], ks: list[int], batch_size: int
) -> list[torch.Tensor]:
    """Per sequence, the log-softmax of the logits at its last ``k`` positions."""
    out: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    for idx in length_sorted_batches([len(s) for s in seqs], batch_size):
        enc = [EncodedText(seqs[i]) for i in idx]
        batch = right_pad(enc, model.pad_token_id, model.device)
        logits = model.bridge(batch.ids, attention_mask=batch.attention_mask)
        for j, i in enumerate(idx):
            n = len(seqs[i])
            out[i] = torch.log_softmax(logits[j, n - ks[i] : n].float(), -1).cpu()
    return out


def prompt_kl_damage(
    model: SteerlabModel,
    prompt: PromptArg,
    strengths: MultipliersArg = DEFAULT_STRENGTHS,
    *,
    neutral: NeutralSet | None = None,
    batch_size: int = 8,
) -> pd.DataFrame:
    """Mean per-token ``KL(prompted || unprompted)`` on the neutral texts, per sign.

    Columns of :func:`~steerlab.evaluation.damage.kl_damage`: ``vector, method, layer,
    multiplier, kl, n_tokens`` (nats per token; 0 at sign 0). The tokens compared are
    the ones both encodings share at their end (see the module docstring).
    """
    prompt = _as_prompt(prompt)
    neutral = load_neutral_set() if neutral is None else neutral
    base = _encode_neutral(model, neutral, model.system_prompt)
    signs = prompt_signs(strengths)
    conds = [Condition(None, float(sign), prompt.label, prompt.method, None) for sign in signs]
    totals = np.zeros(len(signs))
    counts = []
    for c, sign in enumerate(signs):
        if sign != 0:
            seqs = _encode_neutral(model, neutral, prompt.system_prompt(model.system_prompt, sign))
            ks = [shared_suffix(a, b) for a, b in zip(base, seqs)]
            ref = _suffix_logprobs(model, base, ks, batch_size)  # k may differ per sign
            steered = _suffix_logprobs(model, seqs, ks, batch_size)
            totals[c] = sum(float(token_kl(s, r).double().sum()) for s, r in zip(steered, ref))
            counts.append(sum(ks))
        else:
            counts.append(sum(len(s) - 1 for s in base))
    return kl_frame(conds, totals, counts)


def prompt_open_ended(
    model: SteerlabModel,
    questions: Sequence[str],
    prompt: PromptArg,
    strengths: MultipliersArg = DEFAULT_STRENGTHS,
    out_dir: "str | Path" = "open_ended_prompt",
    **kwargs: Any,
) -> pd.DataFrame:
    """Answers (and, with ``judge=``, verdicts) to ``questions`` with the instructed
    system prompt, one :func:`~steerlab.evaluation.open_ended.run_open_ended` per sign
    (``out_dir/prompt_<behavior>_<sign>.jsonl``, resumable); its frame relabelled
    ``vector='prompt:<behavior>', method='prompt', layer=None, multiplier=<sign>``.
    ``kwargs`` go to ``run_open_ended`` (``judge``, ``max_new_tokens``, ``behavior``...).
    """
    from steerlab.evaluation.open_ended import run_open_ended

    prompt = _as_prompt(prompt)
    kwargs.setdefault("behavior", prompt.behavior)
    frames = []
    for sign in prompt_signs(strengths):
        path = Path(out_dir) / f"prompt_{prompt.behavior}_{sign:+d}.jsonl"
        system = prompt.system_prompt(model.system_prompt, sign)
        frame = run_open_ended(model, questions, None, 0.0, path, system_prompt=system, **kwargs)
        frame = frame.assign(vector=prompt.label, method=prompt.method, multiplier=float(sign))
        frame["layer"] = pd.Series([None] * len(frame), dtype=object, index=frame.index)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


__all__ = [
    "DEFAULT_STRENGTHS",
    "prompt_kl_damage",
    "prompt_likelihood_margin",
    "prompt_open_ended",
    "shared_suffix",
]
