"""Prompts for preference pairs and A/B items, with the answer-letter position known.

Free-form pairs: the question in the user turn, the matching / not-matching response in
the assistant turn. A/B items: the question with its choices in the user turn and the
assistant turn starting ``"(A"`` / ``"(B"``: the answer letter is the last token, so its
position is ``len(ids) - 1`` (checked for each tokenizer by :func:`letter_token_ids`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from steerlab.errors import ConfigError
from steerlab.models.chat import EncodedText
from steerlab.models.model import SteerlabModel

LETTER_PREFIX = "("


@runtime_checkable
class PairLike(Protocol):
    question: str
    matching: str
    not_matching: str


@dataclass(frozen=True)
class LetterIds:
    """Token ids of the answer letters after ``LETTER_PREFIX`` in the assistant turn."""

    prefix_ids: tuple[int, ...]
    a: int
    b: int

    def of(self, letter: str) -> int:
        return self.a if letter == "A" else self.b


def letter_token_ids(model: SteerlabModel) -> LetterIds:
    """Ids of 'A' and 'B' as they follow '(' — each must be a single token."""
    enc = model.chat.encode_ids
    prefix = enc(LETTER_PREFIX)
    ids = {}
    for letter in ("A", "B"):
        full = enc(LETTER_PREFIX + letter)
        if full[: len(prefix)] != prefix or len(full) != len(prefix) + 1:
            raise ConfigError(
                f"The tokenizer of {model.model_id} does not split {LETTER_PREFIX + letter!r} "
                f"into {LETTER_PREFIX!r} + one letter token (got {full}); A/B prompts need it."
            )
        ids[letter] = full[-1]
    return LetterIds(prefix, ids["A"], ids["B"])


def encode_pair(model: SteerlabModel, pair: PairLike) -> tuple[EncodedText, EncodedText]:
    """(prompt + matching, prompt + not_matching) with the response in the assistant turn."""
    prompt = model.chat.encode(pair.question)
    pos = EncodedText(prompt.prompt_ids, model.chat.encode_ids(pair.matching))
    neg = EncodedText(prompt.prompt_ids, model.chat.encode_ids(pair.not_matching))
    return pos, neg


def ab_prompt_text(item: Any) -> str:
    """The user-turn text of an A/B item (question and its two choices)."""
    return item.prompt if hasattr(item, "prompt") else str(item.question)


def encode_ab(model: SteerlabModel, item: Any, letter: str | None = None) -> EncodedText:
    """A/B prompt; with ``letter`` the response is ``'(' + letter`` (letter = last token),
    without it the response is just ``'('`` (the next token is the answer letter)."""
    prompt = model.chat.encode(ab_prompt_text(item))
    lid = letter_token_ids(model)
    response = lid.prefix_ids + ((lid.of(letter),) if letter else ())
    return EncodedText(prompt.prompt_ids, response)


def encode_ab_contrast(
    model: SteerlabModel, items: Sequence[Any]
) -> tuple[list[EncodedText], list[EncodedText]]:
    """For each item, the prompt answered with its matching and its not-matching letter."""
    pos = [encode_ab(model, it, it.matching) for it in items]
    neg = [encode_ab(model, it, it.not_matching) for it in items]
    return pos, neg
