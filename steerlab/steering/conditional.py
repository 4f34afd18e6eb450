"""Conditional steering (CAST, Lee et al. 2024, arXiv 2409.05907): apply a behavior
vector to a prompt only when a condition vector says the prompt is on topic.

- :func:`fit_condition`: the condition vector at one layer, the mean difference (as CAA)
  of the prompts' mean residuals on topic vs off topic; the midpoint of the two class
  means is kept as the centre of the score.
- :meth:`ConditionVector.scores`: per prompt, ``cos(mean residual - centre, direction)``;
  the mean runs over the prompt's own tokens (the user turn: the chat template's system
  prompt and headers are the same for every prompt and would only dilute it).
- :func:`choose_threshold`: the threshold with the best balanced accuracy on held-out
  topic / non-topic prompts (a new, frozen :class:`ConditionVector`).
- :func:`steer_if` (one prompt, a context manager) and :class:`ConditionalSteering`
  (many prompts: ``gate``, ``generate``) apply the behavior steering to the prompts
  whose score passes.

CAST compares the hidden state with its projection on the condition vector and may fit
the direction by PCA; the mean difference and the centred cosine here are the simpler
variant (``fit_condition(center=False)`` scores the raw mean residual).
"""

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from steerlab.activations.batch import length_sorted_batches, right_pad
from steerlab.activations.capture import forward_to_sites
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.chat import EncodedText
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.steering.generate import GenerationResult, generate
from steerlab.steering.steer import Steering, VectorsLike, steer


def question_span(model: SteerlabModel, prompt_ids: Sequence[int]) -> tuple[int, int]:
    """``(start, stop)`` of the user-turn text inside a chat prompt: what is left after
    the prefix and suffix that the template gives every prompt (found by encoding two
    different probe questions)."""
    a = model.chat.encode("A").prompt_ids
    b = model.chat.encode("B").prompt_ids
    pre = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    suf = next((i for i in range(min(len(a), len(b))) if a[-1 - i] != b[-1 - i]), 0)
    start, stop = pre, len(prompt_ids) - suf
    if stop <= start:  # no template around the question: every token but the first
        return min(1, len(prompt_ids) - 1), len(prompt_ids)
    return start, stop


def prompt_means(
    model: SteerlabModel, prompts: Sequence[str], layer: int, batch_size: int = 16
) -> Float[Tensor, "n d_model"]:
    """Per prompt, the mean ``resid_post`` of ``layer`` over its user-turn tokens (fp32,
    CPU, unsteered unless called inside ``steer()``)."""
    if not prompts:
        raise EmptyInputError("No prompts to score; pass at least one.")
    site = HookSite(layer).resolve(model.n_layers)
    enc = [model.chat.encode(p) for p in prompts]
    spans = [question_span(model, e.prompt_ids) for e in enc]
    out = torch.empty(len(prompts), model.d_model)
    for idx in length_sorted_batches([len(e) for e in enc], batch_size):
        batch = right_pad([EncodedText(enc[i].prompt_ids) for i in idx], model.pad_token_id,
                          model.device)  # fmt: skip
        acts = forward_to_sites(model, batch.ids, batch.attention_mask, [site])[site]
        for j, i in enumerate(idx):
            start, stop = spans[i]
            out[i] = acts[j, start:stop].float().mean(0).cpu()
    return out


@dataclass(frozen=True)
class ConditionVector:
    """A fitted condition: ``scores >= threshold`` (``above=False``: ``<=``) passes.

    direction: the condition direction at ``layer`` (``resid_post``).
    center: subtracted from a prompt's mean residual before the cosine (zeros: none).
    threshold: NaN until chosen (:func:`choose_threshold`).
    metrics: how the threshold was chosen (held-out TPR, TNR, balanced accuracy, n).
    """

    direction: Tensor
    layer: int
    center: Tensor
    threshold: float = math.nan
    above: bool = True
    model_id: str = "unknown"
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.direction.ndim != 1 or self.center.shape != self.direction.shape:
            raise ConfigError(
                f"ConditionVector: direction {tuple(self.direction.shape)} and center "
                f"{tuple(self.center.shape)} must both be [d_model]."
            )
        if not float(self.direction.norm()) > 0:
            raise ConfigError(
                "ConditionVector: the direction is zero; fit it on prompts that differ."
            )

    def scores(
        self, model: SteerlabModel, prompts: Sequence[str], batch_size: int = 16
    ) -> Float[Tensor, " n"]:
        """``cos(mean residual - center, direction)`` per prompt."""
        h = prompt_means(model, prompts, self.layer, batch_size) - self.center
        return torch.nn.functional.cosine_similarity(h, self.direction[None], dim=-1)

    def passes(self, scores: Tensor) -> Tensor:
        """Boolean per score (needs a chosen threshold)."""
        if math.isnan(self.threshold):
            raise ConfigError(
                "The condition has no threshold yet; choose one on held-out prompts with "
                "choose_threshold(condition, model, topic, other)."
            )
        return scores >= self.threshold if self.above else scores <= self.threshold


def fit_condition(
    model: SteerlabModel,
    topic: Sequence[str],
    other: Sequence[str],
    layer: int,
    *,
    center: bool = True,
    batch_size: int = 16,
) -> ConditionVector:
    """The condition vector: mean of the topic prompts' mean residuals minus that of the
    other prompts (no threshold yet: :func:`choose_threshold`)."""
    if not topic or not other:
        raise EmptyInputError(
            f"fit_condition needs topic and non-topic prompts; got {len(topic)} and {len(other)}."
        )
    mt = prompt_means(model, topic, layer, batch_size).double().mean(0)
    mo = prompt_means(model, other, layer, batch_size).double().mean(0)
    mid = (mt + mo) / 2 if center else torch.zeros_like(mt)
    resolved = HookSite(layer).resolve(model.n_layers).layer
    return ConditionVector((mt - mo).float(), resolved, mid.float(), model_id=model.model_id)


def best_threshold(pos: Tensor, neg: Tensor) -> tuple[float, dict[str, float]]:
    """The threshold (``score >= t`` passes) with the highest balanced accuracy on
    scores of positives ``pos`` and negatives ``neg``: the midpoint between neighbouring
    sorted scores (ties: the one closest to the middle of the gap)."""
    if len(pos) == 0 or len(neg) == 0:
        raise EmptyInputError("best_threshold needs positive and negative scores.")
    values = torch.cat([pos, neg]).double().sort().values
    cands = torch.cat([values[:1] - 1e-6, (values[1:] + values[:-1]) / 2, values[-1:] + 1e-6])
    tpr = (pos.double()[None] >= cands[:, None]).double().mean(1)
    tnr = (neg.double()[None] < cands[:, None]).double().mean(1)
    bal = (tpr + tnr) / 2
    i = int(torch.nonzero(bal == bal.max()).flatten()[len(torch.nonzero(bal == bal.max())) // 2])
    metrics = {"tpr": float(tpr[i]), "tnr": float(tnr[i]), "balanced_accuracy": float(bal[i]),
               "n_topic": float(len(pos)), "n_other": float(len(neg))}  # fmt: skip
    return float(cands[i]), metrics


def choose_threshold(
    condition: ConditionVector,
    model: SteerlabModel,
    topic: Sequence[str],
    other: Sequence[str],
    *,
    batch_size: int = 16,
) -> ConditionVector:
    """``condition`` with the threshold of the best balanced accuracy on held-out
    ``topic`` / ``other`` prompts (and those accuracies in ``metrics``)."""
    pos = condition.scores(model, topic, batch_size)
    neg = condition.scores(model, other, batch_size)
    t, metrics = best_threshold(pos, neg)
    return replace(condition, threshold=t, above=True, metrics=metrics)


@contextmanager
def steer_if(
    model: SteerlabModel,
    condition: ConditionVector,
    vectors: "VectorsLike | Steering",
    prompt: str,
    multiplier: "float | Sequence[float] | None" = None,
    **steer_kwargs: Any,
) -> Iterator[bool]:
    """Inside the block, ``model`` is steered (``steer(model, vectors, multiplier,
    ...)``) if ``prompt`` passes ``condition``, else left alone; yields the decision."""
    ok = bool(condition.passes(condition.scores(model, [prompt]))[0])
    if not ok:
        yield False
        return
    with steer(model, vectors, multiplier, **steer_kwargs):
        yield True


@dataclass(frozen=True)
class ConditionalSteering:
    """The behavior ``steering`` applied to the prompts that pass ``condition``."""

    condition: ConditionVector
    steering: Steering

    @classmethod
    def of(
        cls,
        condition: ConditionVector,
        vectors: "VectorsLike | Steering",
        multiplier: "float | Sequence[float]" = 1.0,
    ) -> "ConditionalSteering":
        return cls(condition, Steering.of(vectors, multiplier))

    def gate(self, model: SteerlabModel, prompts: Sequence[str]) -> list[bool]:
        """Per prompt: is it steered?"""
        return [bool(x) for x in self.condition.passes(self.condition.scores(model, prompts))]

    def generate(
        self, model: SteerlabModel, prompts: Sequence[str], max_new_tokens: int = 64, **kw: Any
    ) -> tuple[GenerationResult, list[bool]]:
        """Completions of every prompt in order (passing prompts steered, the others
        not) and the gate per prompt; ``kw`` go to :func:`~steerlab.steering.generate`.
        The result's ``steering`` records the behavior steering of the passing ones."""
        gates = self.gate(model, prompts)
        parts: dict[bool, GenerationResult] = {}
        for on in (True, False):
            sub = [p for p, g in zip(prompts, gates) if g == on]
            if sub:
                parts[on] = generate(model, sub, max_new_tokens,
                                     steering=self.steering if on else None, **kw)  # fmt: skip
        pos = {True: iter(range(len(prompts))), False: iter(range(len(prompts)))}
        picked = [(g, next(pos[g])) for g in gates]
        first = parts[gates[0]]
        merged = replace(
            first,
            prompts=tuple(prompts),
            texts=tuple(parts[g].texts[i] for g, i in picked),
            token_ids=tuple(parts[g].token_ids[i] for g, i in picked),
            prompt_token_ids=tuple(parts[g].prompt_token_ids[i] for g, i in picked),
            steering=parts[True].steering if True in parts else (),
        )
        return merged, gates


__all__ = [
    "ConditionVector",
    "ConditionalSteering",
    "best_threshold",
    "choose_threshold",
    "fit_condition",
    "prompt_means",
    "question_span",
    "steer_if",
]
