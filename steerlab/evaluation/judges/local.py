"""A judge that reads a 1-4 score from any steerlab model's next-token distribution.

The rubric prompt of :func:`~steerlab.evaluation.judges.rubrics.build_judge_messages`
(system + user) is rendered with the judge model's chat template, the assistant turn left
open, and one forward pass gives the next-token probabilities of the tokens ``"1"``,
``"2"``, ``"3"`` and ``"4"``. Normalised over those four, they give

- the expected score ``sum_k k * p_k`` (default; a continuous grade in [1, 4]), and
- the argmax score (the digit a greedy judge would write first).

No text is generated; the raw output keeps the four probabilities and how much of the
full next-token distribution they cover (``mass``). A small mass means the model would
not have answered with a digit, so the grade says nothing: below ``min_mass`` (default
0.5) the verdict is ``"unparseable"``, like an API judge's reply without a score.

Grading the answers of the model under evaluation with that same model is refused unless
the judge is built with ``allow_self_judge=True`` (CLI: ``--self-judge``); the evaluation
then records a warning (:func:`~steerlab.evaluation.judges.base.self_judge_warning`).
Deterministic: one forward pass, no sampling; rows are batched
right-padded and read at their own last position, so scores do not depend on the batch
size beyond float rounding.
"""

import json
import math
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from steerlab.activations.batch import length_sorted_batches, right_pad
from steerlab.errors import ConfigError
from steerlab.evaluation.judges.base import JudgeRequest, JudgeResult
from steerlab.evaluation.judges.rubrics import build_judge_messages, rubric_prompt_hash
from steerlab.evaluation.likelihood import logits_at
from steerlab.models.chat import EncodedText
from steerlab.models.model import SteerlabModel
from steerlab.utils.progress import progress_bar

SCORE_DIGITS: tuple[str, ...] = ("1", "2", "3", "4")
#: Below this total probability of the four digits a verdict is unparseable.
DEFAULT_MIN_MASS = 0.5


def digit_token_ids(model: SteerlabModel) -> tuple[int, ...]:
    """Token ids of ``"1".."4"`` as the first token of an assistant reply.

    Each digit must be a single token of the tokenizer (true of BPE tokenizers such as
    SmolLM2's, Llama-3's, Mistral's); otherwise the next-token probability of a digit is
    not defined and a :class:`~steerlab.errors.ConfigError` says so.
    """
    ids = []
    for digit in SCORE_DIGITS:
        enc = model.chat.encode_ids(digit)
        if len(enc) != 1:
            tid = model.tokenizer.convert_tokens_to_ids(digit)
            unk = getattr(model.tokenizer, "unk_token_id", None)
            if not isinstance(tid, int) or tid < 0 or tid == unk:
                raise ConfigError(
                    f"The tokenizer of {model.model_id} encodes {digit!r} as {list(enc)}, not "
                    "one token, so a local judge cannot read its probability. Use another "
                    "judge model (e.g. the embedded SmolLM2) or the 'openai' judge."
                )
            enc = (tid,)
        ids.append(int(enc[0]))
    if len(set(ids)) != len(ids):
        raise ConfigError(f"The digits 1-4 share token ids {ids} in {model.model_id}.")
    return tuple(ids)


class LocalJudge:
    """Grades answers with a local :class:`SteerlabModel` from its digit probabilities.

    Args:
        model: the judge model (any chat model; a bigger one grades better).
        batch_size: prompts per forward pass.
        score_kind: ``"expected"`` (default: ``sum k * p_k``) or ``"argmax"`` (the most
            likely digit) as the result's score; both are in ``raw``.
        progress: show a progress bar over batches.
        min_mass: verdicts whose four digits get less than this total probability
            (``mass``) are ``"unparseable"`` (score None); 0 keeps every verdict.
        allow_self_judge: allow grading answers of ``model`` itself (refused otherwise
            by the evaluations; recorded as a warning when allowed).

    ``raw`` of each result is JSON: ``{"p": [p1, p2, p3, p4], "expected": ..., "argmax":
    ..., "mass": ...}`` where ``p`` is normalised over the four digits and ``mass`` is
    their total probability under the full next-token distribution.
    """

    name = "local"

    def __init__(
        self,
        model: SteerlabModel,
        *,
        batch_size: int = 8,
        score_kind: str = "expected",
        progress: bool = False,
        min_mass: float = DEFAULT_MIN_MASS,
        allow_self_judge: bool = False,
    ) -> None:
        if not isinstance(model, SteerlabModel):
            raise ConfigError(
                f"LocalJudge needs a SteerlabModel (steerlab.load_model(...)), got "
                f"{type(model).__name__}."
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r}; it must be an int >= 1.")
        if score_kind not in ("expected", "argmax"):
            raise ConfigError(f"score_kind={score_kind!r}; use 'expected' or 'argmax'.")
        if isinstance(min_mass, bool) or not (
            isinstance(min_mass, (int, float)) and math.isfinite(min_mass) and 0 <= min_mass <= 1
        ):
            raise ConfigError(
                f"min_mass={min_mass!r}; use a probability in [0, 1] (default 0.5, 0 keeps all)."
            )
        self.model = model
        self.batch_size = batch_size
        self.score_kind = score_kind
        self.progress = progress
        self.min_mass = float(min_mass)
        self.allow_self_judge = bool(allow_self_judge)
        self.digit_ids = digit_token_ids(model)

    def __repr__(self) -> str:
        return (
            f"LocalJudge(model={self.model.model_id!r}, score_kind={self.score_kind!r}, "
            f"min_mass={self.min_mass:g})"
        )

    def fingerprint(self) -> dict[str, Any]:
        """What the verdicts depend on: the judge model (id, source, dtype), the score
        kind, the digit-mass threshold and the rubric prompt hash."""
        return {
            "kind": self.name,
            "model": self.model.model_id,
            "model_source": str(getattr(self.model, "source", "")),
            "dtype": str(getattr(self.model, "dtype", "")),
            "score_kind": self.score_kind,
            "min_mass": self.min_mass,
            "rubric_sha": rubric_prompt_hash(),
        }

    def encode(self, request: JudgeRequest) -> EncodedText:
        """The rubric prompt of ``request`` in the judge model's chat template, assistant
        turn open (the next token is the grade)."""
        system, user = build_judge_messages(request)
        text = self.model.chat.prompt_text(user["content"], system_prompt=system["content"])
        return EncodedText(self.model.chat.encode_ids(text))

    @torch.no_grad()
    def digit_probabilities(
        self, requests: Sequence[JudgeRequest]
    ) -> tuple[Float[Tensor, "n 4"], Float[Tensor, " n"]]:
        """``(p, mass)``: P(digit k) normalised over the four digits, and their total
        probability under the full next-token distribution; fp32 on CPU, input order."""
        encoded = [self.encode(r) for r in requests]
        p = torch.empty(len(encoded), len(SCORE_DIGITS))
        mass = torch.empty(len(encoded))
        digits = torch.tensor(self.digit_ids)
        batches = length_sorted_batches([len(e) for e in encoded], self.batch_size)
        for idx in progress_bar(batches, desc="local judge", enabled=self.progress):
            batch = right_pad([encoded[i] for i in idx], self.model.pad_token_id, self.model.device)
            positions, row_col = torch.unique(batch.last_index, return_inverse=True)
            logits = logits_at(self.model, batch.ids, batch.attention_mask, positions)
            rows = torch.arange(len(idx), device=logits.device)
            last = logits[rows, row_col.to(logits.device)].float().cpu()  # [b, vocab]
            logp = torch.log_softmax(last, dim=-1)[:, digits]  # [b, 4]
            mass[idx] = logp.exp().sum(-1)
            p[idx] = torch.softmax(logp, dim=-1)
        return p, mass

    def score(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        """One result per request, in order (unknown behaviors raise first): ``"ok"``, or
        ``"unparseable"`` when the digits' total probability is below ``min_mass``."""
        if not requests:
            return []
        p, mass = self.digit_probabilities(requests)
        values = torch.arange(1, len(SCORE_DIGITS) + 1, dtype=p.dtype)
        expected = (p * values).sum(-1)
        argmax = p.argmax(-1) + 1
        out = []
        for i in range(len(requests)):
            raw = {
                "p": [round(float(x), 6) for x in p[i]],
                "expected": round(float(expected[i]), 6),
                "argmax": int(argmax[i]),
                "mass": round(float(mass[i]), 6),
            }
            if float(mass[i]) < self.min_mass:
                detail = (
                    f"the digits 1-4 get {float(mass[i]):.3f} of the next-token probability "
                    f"(< min_mass {self.min_mass:g}): the model would not answer with a score"
                )
                out.append(JudgeResult(None, json.dumps(raw), "unparseable", detail))
                continue
            value = float(expected[i]) if self.score_kind == "expected" else float(argmax[i])
            out.append(JudgeResult(score=value, raw=json.dumps(raw), status="ok"))
        return out
