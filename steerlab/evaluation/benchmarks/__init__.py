"""Benchmarks under steering: MMLU (utility), TruthfulQA MC1/MC2, jailbreak ASR.

Each returns a tidy frame (``vector, method, layer, multiplier, metric, value, sem, n``)
built with :func:`steerlab.evaluation.multipliers.sweep_multipliers` / ``summarize``;
``per_item=True`` returns the per-item frame behind it instead.
"""

from steerlab.evaluation.benchmarks.jailbreak import (
    JAILBREAK_SOURCES,
    direction_of,
    jailbreak_asr,
    jailbreak_questions,
)
from steerlab.evaluation.benchmarks.mmlu import (
    MMLU_METRICS,
    UTILITY_MULTIPLIERS,
    mmlu_accuracy,
)
from steerlab.evaluation.benchmarks.truthfulqa import (
    TRUTHFULQA_METRICS,
    mc_metrics,
    subsample,
    truthfulqa_mc,
)

__all__ = [
    "JAILBREAK_SOURCES",
    "MMLU_METRICS",
    "TRUTHFULQA_METRICS",
    "UTILITY_MULTIPLIERS",
    "direction_of",
    "jailbreak_asr",
    "jailbreak_questions",
    "mc_metrics",
    "mmlu_accuracy",
    "subsample",
    "truthfulqa_mc",
]
