"""Coherence of generated answers: is an answer text that a judge can grade at all?

A steered model can produce empty answers, loops (``"power power power ..."``) or fluent
text about something else. A judge that averages such answers into a mean score reports
a shift that is really damage; so every judged generation also gets

- ``perplexity``: ``exp(-mean log p(answer token | question))`` under the *unsteered*
  model (:func:`answer_perplexity`; high = text the model itself finds implausible),
- ``repetition``: the share of word 3-grams that repeat an earlier one
  (:func:`repetition_rate`; 0 for varied text, near 1 for a loop),
- optionally ``topic_similarity``: the cosine between sentence embeddings of the
  question and the answer (:func:`topic_similarity`; low = off-topic),

and :class:`CoherenceGate` turns them into ``incoherent`` (with a reason). Evaluations
report the share of incoherent answers next to every judged mean and can exclude them.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from steerlab.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from steerlab.models.model import SteerlabModel

_WORD = re.compile(r"\w+", re.UNICODE)
#: The topic check applies to answers of at least this many words ("Yes." has no topic).
TOPIC_MIN_WORDS = 4


@dataclass(frozen=True)
class CoherenceGate:
    """When an answer counts as incoherent (any one check is enough).

    Attributes:
        max_repetition: most repeated word 3-grams (:func:`repetition_rate`) allowed.
        max_perplexity: highest perplexity under the unsteered model allowed (None: not
            checked). Greedy answers of a chat model sit around 1.5-20; word salad is
            in the hundreds or more.
        min_topic_similarity: lowest question/answer embedding cosine allowed (None: not
            checked). Answers to the question score ~0.2-0.8 with MiniLM; unrelated
            text ~-0.1-0.15.
        min_words: fewest words (``\\w+`` runs) an answer needs; 1 accepts "Yes.".
    """

    max_repetition: float = 0.5
    max_perplexity: float | None = 200.0
    min_topic_similarity: float | None = 0.15
    min_words: int = 1

    def __post_init__(self) -> None:
        if not (0 < self.max_repetition <= 1):
            raise ConfigError(
                f"CoherenceGate.max_repetition={self.max_repetition!r}; use a share in (0, 1]."
            )
        if self.max_perplexity is not None and not self.max_perplexity > 1:
            raise ConfigError(
                f"CoherenceGate.max_perplexity={self.max_perplexity!r}; use a number > 1 or None."
            )
        if self.min_topic_similarity is not None and not -1 <= self.min_topic_similarity < 1:
            raise ConfigError(
                f"CoherenceGate.min_topic_similarity={self.min_topic_similarity!r}; use a "
                "cosine in [-1, 1) or None."
            )
        if isinstance(self.min_words, bool) or not isinstance(self.min_words, int):
            raise ConfigError(f"CoherenceGate.min_words={self.min_words!r} must be an int.")
        if self.min_words < 1:
            raise ConfigError(f"CoherenceGate.min_words={self.min_words} must be >= 1.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text_reason(self, text: str) -> str | None:
        """The reason ``text`` alone is incoherent (empty, too short, repetitive), or None."""
        words = _WORD.findall(text.lower())
        if not words:
            return "empty"
        if len(words) < self.min_words:
            return f"too short ({len(words)} words < {self.min_words})"
        rep = repetition_rate(text)
        if rep > self.max_repetition:
            return f"repetitive ({rep:.2f} of word 3-grams repeat > {self.max_repetition:g})"
        return None

    def reason(
        self,
        text: str,
        perplexity: float | None = None,
        topic_similarity: float | None = None,
    ) -> str | None:
        """Why the answer is incoherent, or None: text checks first, then perplexity and
        topic similarity when they are given (NaN counts as not measured)."""
        why = self.text_reason(text)
        if why is not None:
            return why
        if self.max_perplexity is not None and _finite(perplexity):
            if perplexity > self.max_perplexity:  # type: ignore[operator]
                return f"implausible (perplexity {perplexity:.0f} > {self.max_perplexity:g})"
        if self.min_topic_similarity is not None and _finite(topic_similarity):
            if topic_similarity < self.min_topic_similarity:  # type: ignore[operator]
                return (
                    f"off-topic (question/answer similarity {topic_similarity:.2f} < "
                    f"{self.min_topic_similarity:g})"
                )
        return None


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(float(x))


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of the word ``n``-grams of ``text`` (lower-cased ``\\w+`` runs) that repeat
    an earlier one: ``1 - distinct / total``. Texts shorter than ``n`` words: the share of
    repeated words when they are all the same word (``"no no"`` -> 0.5), else 0."""
    if n < 1:
        raise ConfigError(f"repetition_rate(n={n}); n must be >= 1.")
    words = _WORD.findall(text.lower())
    if len(words) < n:
        if len(words) > 1 and len(set(words)) == 1:
            return 1.0 - 1.0 / len(words)
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def answer_perplexity(
    model: "SteerlabModel",
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 8,
    system_prompt: str | None = None,
) -> "np.ndarray":
    """Perplexity of each answer given its question (chat template, the model's system
    prompt unless ``system_prompt``) under ``model`` as it is: call it outside any
    ``steer()`` to get the unsteered model's view. NaN for an answer without tokens."""
    import numpy as np

    from steerlab.evaluation.likelihood import response_logprobs

    questions, answers = list(questions), list(answers)
    if len(questions) != len(answers):
        raise ConfigError(
            f"answer_perplexity got {len(questions)} questions and {len(answers)} answers; "
            "pass one question per answer."
        )
    out = np.full(len(answers), np.nan)
    encoded, where = [], []
    for i, (q, a) in enumerate(zip(questions, answers)):
        enc = model.chat.encode(q, a if a.strip() else None, system_prompt=system_prompt)
        if enc.response_ids:
            encoded.append(enc)
            where.append(i)
    if encoded:
        lp = response_logprobs(model, encoded, batch_size).double().numpy()
        n_tok = np.array([len(e.response_ids) for e in encoded], dtype=float)
        out[where] = np.exp(-lp / n_tok)
    return out


def topic_similarity(
    embedder: Any, questions: Sequence[str], answers: Sequence[str]
) -> "np.ndarray":
    """Cosine between the embeddings of each question and its answer (NaN for an empty
    answer). ``embedder`` is any :class:`~steerlab.evaluation.judges.Embedder`."""
    import numpy as np

    questions, answers = list(questions), list(answers)
    if len(questions) != len(answers):
        raise ConfigError(
            f"topic_similarity got {len(questions)} questions and {len(answers)} answers."
        )
    out = np.full(len(answers), np.nan)
    keep = [i for i, a in enumerate(answers) if a.strip()]
    if not keep:
        return out
    uniq = list(dict.fromkeys(questions[i] for i in keep))
    q_emb = np.asarray(embedder.embed(uniq), dtype=np.float64)
    a_emb = np.asarray(embedder.embed([answers[i] for i in keep]), dtype=np.float64)
    q_row = {q: r for r, q in enumerate(uniq)}
    q_sel = q_emb[[q_row[questions[i]] for i in keep]]
    num = (q_sel * a_emb).sum(1)
    den = np.linalg.norm(q_sel, axis=1) * np.linalg.norm(a_emb, axis=1)
    out[keep] = num / np.where(den > 0, den, 1.0)
    return out


def calibrate_topic_gate(
    gate: CoherenceGate | None, embedder: Any, questions: list[str], answers: list[str]
) -> CoherenceGate | None:
    """Lower the gate's topic threshold to the 2nd percentile of the training answers'
    own question/answer similarity when that is lower (some behaviors answer a long
    scenario with a short sentence about something else in it), so that at most ~2% of
    real answers of several words count as off-topic."""
    import dataclasses

    import numpy as np

    if gate is None or gate.min_topic_similarity is None:
        return gate
    qs = (questions * 2)[: len(answers)]
    keep = [i for i, a in enumerate(answers) if len(a.split()) >= TOPIC_MIN_WORDS]
    if len(keep) < 20:
        return gate
    sims = topic_similarity(embedder, [qs[i] for i in keep], [answers[i] for i in keep])
    low = float(np.percentile(sims, 2))
    if low >= gate.min_topic_similarity:
        return gate
    return dataclasses.replace(gate, min_topic_similarity=round(max(low, -0.99), 3))


def coherence_columns(
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    model: "SteerlabModel | None" = None,
    embedder: Any = None,
    gate: CoherenceGate | None = None,
    batch_size: int = 8,
    system_prompt: str | None = None,
) -> dict[str, list[Any]]:
    """Per answer: ``perplexity`` (with ``model``; NaN otherwise), ``repetition``,
    ``topic_similarity`` (with ``embedder``; NaN otherwise), ``is_incoherent`` (1.0 / 0.0)
    and ``incoherent_reason`` ("" when coherent). The topic check skips answers of fewer
    than :data:`TOPIC_MIN_WORDS` words."""
    import numpy as np

    gate = gate or CoherenceGate()
    questions, answers = list(questions), list(answers)
    n = len(answers)
    ppl = (
        answer_perplexity(
            model, questions, answers, batch_size=batch_size, system_prompt=system_prompt
        )
        if model is not None and n
        else np.full(n, np.nan)
    )
    sim = topic_similarity(embedder, questions, answers) if embedder is not None and n else None
    sim = sim if sim is not None else np.full(n, np.nan)
    short = np.array([len(a.split()) < TOPIC_MIN_WORDS for a in answers], dtype=bool)
    sim[short] = np.nan  # "Yes." has no topic to be off
    reasons = [gate.reason(a, float(p), float(s)) or "" for a, p, s in zip(answers, ppl, sim)]
    return {
        "perplexity": [float(x) for x in ppl],
        "repetition": [repetition_rate(a) for a in answers],
        "topic_similarity": [float(x) for x in sim],
        "is_incoherent": [float(bool(r)) for r in reasons],
        "incoherent_reason": reasons,
    }


def add_coherence(
    frame: "pd.DataFrame",
    gate: CoherenceGate,
    model: "SteerlabModel | None" = None,
    system_prompt: str | None = None,
    batch_size: int = 8,
) -> "pd.DataFrame":
    """A copy of ``frame`` with ``perplexity`` (measured with the unsteered ``model``
    where the rows lack it), ``repetition``, ``is_incoherent`` and ``incoherent_reason``
    (from ``gate``)."""
    import pandas as pd

    out = frame.copy()
    ppl = out["perplexity"] if "perplexity" in out else pd.Series(float("nan"), index=out.index)
    ppl = ppl.astype(float)
    missing = ppl.isna() & out["completion"].str.strip().astype(bool)
    if model is not None and missing.any():
        sub = out[missing]
        ppl[missing] = answer_perplexity(model, list(sub["question"]), list(sub["completion"]),
                                         batch_size=batch_size, system_prompt=system_prompt)  # fmt: skip
    out["perplexity"] = ppl
    out["repetition"] = [repetition_rate(t) for t in out["completion"]]
    reasons = [gate.reason(t, p) or "" for t, p in zip(out["completion"], out["perplexity"])]
    out["is_incoherent"] = [float(bool(r)) for r in reasons]
    out["incoherent_reason"] = reasons
    return out


__all__ = [
    "TOPIC_MIN_WORDS",
    "calibrate_topic_gate",
    "add_coherence",
    "CoherenceGate",
    "answer_perplexity",
    "coherence_columns",
    "repetition_rate",
    "topic_similarity",
]
