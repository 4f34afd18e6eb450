"""Judges: grade answers on the BiPO paper's 1-4 scale behind one :class:`Judge` protocol.

- :class:`OpenAICompatJudge` ("openai"): any OpenAI-compatible chat-completions endpoint,
  with the per-behavior rubrics of :mod:`.rubrics`, retries and an on-disk cache.
- :class:`ClassifierJudge` ("classifier"): offline sentence embeddings + logistic
  regression; its score is P(matching), rescaled to 1-4, behind a coherence gate.
- :class:`~steerlab.evaluation.judges.local.LocalJudge` ("local"): digit probabilities of
  a local model (grading the evaluated model with itself needs ``allow_self_judge``).
- :class:`RefusalJudge` ("refusal"): refusal phrases, for jailbreak attack success rate.

:func:`fit_split_judge` fits a classifier on a split's judge pairs and records them,
:func:`judge_overlaps` checks saved vectors against those pairs and :func:`pair_accuracy`
validates a classifier on held-out pairs (:mod:`.judge_pairs`, :mod:`.validation`).

Each judge's ``fingerprint()`` lists what its verdicts depend on; stored verdicts are
reused only under the same fingerprint (:func:`judge_fingerprint`, :func:`fingerprint_id`).

Heavy dependencies (torch, transformers, scikit-learn) load only when a classifier is
fitted or used.
"""

from collections.abc import Callable
from typing import Any

from steerlab._registry import Registry
from steerlab.evaluation.judges.base import (
    Judge,
    JudgeRequest,
    JudgeResult,
    fingerprint_id,
    judge_fingerprint,
    self_judge_warning,
    summarize,
)
from steerlab.evaluation.judges.cache import JsonDiskCache, cache_key
from steerlab.evaluation.judges.classifier import ClassifierJudge, Embedder, MiniLMEmbedder
from steerlab.evaluation.judges.judge_pairs import fit_split_judge, judge_overlaps
from steerlab.evaluation.judges.openai_compat import OpenAICompatJudge
from steerlab.evaluation.judges.refusal import (
    REFUSAL_PHRASES,
    RefusalJudge,
    attack_success,
    is_refusal,
    refusal_marker,
)
from steerlab.evaluation.judges.rubrics import (
    RUBRICS,
    Rubric,
    behaviors,
    build_judge_messages,
    get_rubric,
    parse_score,
    rubric_prompt_hash,
)
from steerlab.evaluation.judges.validation import pair_accuracy

JudgeFactory = Callable[..., Judge]

JUDGES: Registry[JudgeFactory] = Registry("judge")
"""Judge factories by name; ``make_judge(name, **kwargs)`` calls them."""


def make_judge(name: str, **kwargs: Any) -> Judge:
    """Build the judge registered under ``name`` with ``kwargs``.

    Raises :class:`~steerlab.errors.UnknownNameError` listing the valid names.
    """
    return JUDGES.get(name)(**kwargs)


def _classifier(**kwargs: Any) -> Judge:
    """``path=...`` loads a saved classifier; otherwise the kwargs go to ``fit``."""
    if "path" in kwargs:
        return ClassifierJudge.load(kwargs.pop("path"), **kwargs)
    return ClassifierJudge.fit(**kwargs)


def _local(**kwargs: Any) -> Judge:
    """``model=`` a SteerlabModel; the rest go to :class:`LocalJudge` (imports torch)."""
    from steerlab.evaluation.judges.local import LocalJudge

    return LocalJudge(**kwargs)


JUDGES.register("openai", OpenAICompatJudge)
JUDGES.register("classifier", _classifier)
JUDGES.register("refusal", RefusalJudge)
JUDGES.register("local", _local)

__all__ = [
    "JUDGES",
    "REFUSAL_PHRASES",
    "RUBRICS",
    "ClassifierJudge",
    "Embedder",
    "JsonDiskCache",
    "Judge",
    "JudgeRequest",
    "JudgeResult",
    "MiniLMEmbedder",
    "OpenAICompatJudge",
    "RefusalJudge",
    "Rubric",
    "attack_success",
    "behaviors",
    "build_judge_messages",
    "cache_key",
    "fingerprint_id",
    "fit_split_judge",
    "judge_fingerprint",
    "get_rubric",
    "is_refusal",
    "judge_overlaps",
    "make_judge",
    "pair_accuracy",
    "parse_score",
    "refusal_marker",
    "rubric_prompt_hash",
    "self_judge_warning",
    "summarize",
]
