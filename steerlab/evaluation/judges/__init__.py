"""Judges: grade answers on the BiPO paper's 1-4 scale behind one :class:`Judge` protocol.

- :class:`OpenAICompatJudge` ("openai"): any OpenAI-compatible chat-completions endpoint,
  with the per-behavior rubrics of :mod:`.rubrics`, retries and an on-disk cache.
- :class:`ClassifierJudge` ("classifier"): offline sentence embeddings + logistic regression.
- :class:`RefusalJudge` ("refusal"): refusal phrases, for jailbreak attack success rate.

Heavy dependencies (torch, transformers, scikit-learn) load only when a classifier is
fitted or used.
"""

from steerlab.evaluation.judges.base import (
    JUDGES,
    Judge,
    JudgeRequest,
    JudgeResult,
    make_judge,
    summarize,
)
from steerlab.evaluation.judges.cache import JsonDiskCache, cache_key
from steerlab.evaluation.judges.classifier import ClassifierJudge, Embedder, MiniLMEmbedder
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
)

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
    "get_rubric",
    "is_refusal",
    "make_judge",
    "parse_score",
    "refusal_marker",
    "summarize",
]
