"""The neutral text set: fixed everyday chat turns for measuring damage and typical norms.

Steering strength is expressed relative to the model's typical residual norm, and damage
as the KL divergence of steered from unsteered next-token distributions. Both are
measured on text that has nothing to do with any steered behavior, so that a vector is
not judged on the very prompts it was fitted to.

**Which text, and why.** CAA's two-choice MMLU subsample
(``caa/datasets/test/mmlu/mmlu.json``, 57 subjects x 10 items, MIT): for each subject in
file order, the first item (in file order) whose question is at most
:data:`MAX_QUESTION_CHARS` characters. That gives one question for each of 54 subjects
(3 subjects have no question that short), spread over mathematics, law, medicine, history, computer science..., each a plain user
question answered by its correct answer text in the assistant turn (the two-choice list
is left out: the turn reads as an ordinary question and answer). MMLU is steerlab's
capability benchmark, not a behavior: no behavior dataset (BiPO personas, CAA behaviors,
Anthropic evals, TruthfulQA) is built from it. TruthfulQA was not used because it *is* a
behavior in steerlab (truthfulness / hallucination steering).

The length cap keeps the set to about 3,100 tokens on the SmolLM2 tokenizer, system
prompt included (a few seconds of forward passes on CPU for the 135M model) and drops the reading-comprehension passages of a few
subjects, which would otherwise dominate the token count.

Turns are chat-formatted like every other steerlab prompt (:class:`~steerlab.models.chat.
ChatFormatter`: the model's system prompt, the question in the user turn, the answer in the
assistant turn). :attr:`NeutralSet.content_hash` identifies the texts in cache keys.
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.chat import EncodedText

#: Where the neutral questions come from (a MANIFEST path relative to the data root).
NEUTRAL_SOURCE = "caa/datasets/test/mmlu/mmlu.json"
#: Questions longer than this are skipped (the first shorter one of the subject is used).
MAX_QUESTION_CHARS = 400
#: Bumped whenever the selection rule changes, so cached norms are not reused.
NEUTRAL_FORMAT = 1


@dataclass(frozen=True)
class NeutralText:
    """One neutral chat turn: a user ``question`` and the assistant's ``answer``."""

    question: str
    answer: str
    category: str = ""

    def __post_init__(self) -> None:
        for name in ("question", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"NeutralText.{name} must be a non-empty string, got {value!r}.")


@dataclass(frozen=True)
class NeutralSet:
    """A fixed, ordered tuple of :class:`NeutralText` turns (see the module docstring)."""

    texts: tuple[NeutralText, ...]
    source: str = NEUTRAL_SOURCE

    def __post_init__(self) -> None:
        if not self.texts:
            raise EmptyInputError("A NeutralSet needs at least one text.")
        for t in self.texts:
            if not isinstance(t, NeutralText):
                raise ConfigError(
                    f"NeutralSet.texts must hold NeutralText, got {type(t).__name__}."
                )

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self) -> Iterator[NeutralText]:
        return iter(self.texts)

    @property
    def content_hash(self) -> str:
        """sha256 (hex, 16 chars) of the selection rule version and the texts."""
        payload = json.dumps(
            [NEUTRAL_FORMAT, [[t.question, t.answer] for t in self.texts]],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def head(self, n: int) -> "NeutralSet":
        """The first ``n`` texts (one per subject, so still spread over subjects)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(self.texts):
            raise ConfigError(f"n={n!r}; use 1..{len(self.texts)} texts of the neutral set.")
        return NeutralSet(self.texts[:n], self.source)

    def encode(self, model: Any) -> list[EncodedText]:
        """Each turn chat-formatted for ``model`` (its system prompt; answer as response)."""
        out = []
        for t in self.texts:
            prompt = model.chat.encode(t.question)
            out.append(EncodedText(prompt.prompt_ids, model.chat.encode_ids(t.answer)))
        return out


def load_neutral_set(root: "Path | str | None" = None, n: int | None = None) -> NeutralSet:
    """The neutral text set (one short MMLU question per subject with its correct answer).

    Args:
        root: a data root (default: ``$STEERLAB_DATA``, then the download cache).
        n: keep only the first ``n`` texts (quick runs); ``None`` keeps all 54.
    """
    from steerlab.data.behaviors import load_mmlu

    data = load_mmlu(root)
    chosen: dict[str, NeutralText] = {}
    for item in data.items:
        if item.category in chosen or len(item.question) > MAX_QUESTION_CHARS:
            continue
        chosen[item.category] = NeutralText(item.question, item.correct_text, item.category)
    out = NeutralSet(tuple(chosen.values()), NEUTRAL_SOURCE)
    return out if n is None else out.head(n)
