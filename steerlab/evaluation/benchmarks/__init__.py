"""Benchmarks under steering: MMLU (utility), TruthfulQA MC1/MC2, jailbreak ASR.

Each returns a tidy frame (``vector, method, layer, multiplier, metric, value, sem, n,
ci_low, ci_high``) built with :func:`steerlab.evaluation.multipliers.sweep_multipliers`
and its ``summarize_*`` function; ``per_item=True`` returns the per-item frame behind it
instead. MMLU is CAA's two-choice set (chance 0.5), TruthfulQA defaults to its test
split, and a jailbreak attack succeeds only with a coherent, on-topic answer.
"""

from steerlab.evaluation.benchmarks.jailbreak import (
    JAILBREAK_SOURCES,
    direction_of,
    jailbreak_asr,
    jailbreak_questions,
    summarize_jailbreak,
)
from steerlab.evaluation.benchmarks.mmlu import (
    MMLU_CHANCE,
    MMLU_LABEL,
    MMLU_METRICS,
    UTILITY_MULTIPLIERS,
    mmlu_accuracy,
    summarize_mmlu,
)
from steerlab.evaluation.benchmarks.stats import add_ci, wilson_interval
from steerlab.evaluation.benchmarks.truthfulqa import (
    TRUTHFULQA_METRICS,
    mc_metrics,
    subsample,
    summarize_truthfulqa,
    truthfulqa_mc,
)

__all__ = [
    "JAILBREAK_SOURCES",
    "MMLU_CHANCE",
    "MMLU_LABEL",
    "MMLU_METRICS",
    "TRUTHFULQA_METRICS",
    "UTILITY_MULTIPLIERS",
    "add_ci",
    "direction_of",
    "jailbreak_asr",
    "jailbreak_questions",
    "mc_metrics",
    "mmlu_accuracy",
    "subsample",
    "summarize_jailbreak",
    "summarize_mmlu",
    "summarize_truthfulqa",
    "truthfulqa_mc",
    "wilson_interval",
]
