"""Benchmarks under steering: MMLU (utility), TruthfulQA MC1/MC2, jailbreak ASR.

Each returns a tidy frame (``vector, method, layer, multiplier, metric, value, sem, n``)
built with :func:`steerlab.evaluation.multipliers.sweep_multipliers` / ``summarize``;
the ``*_items`` functions return the per-item frames behind them.
"""

from steerlab.evaluation.benchmarks.jailbreak import (
    JAILBREAK_SOURCES,
    direction_of,
    jailbreak_asr,
    jailbreak_items,
    jailbreak_questions,
)
from steerlab.evaluation.benchmarks.mmlu import (
    MMLU_METRICS,
    UTILITY_MULTIPLIERS,
    mc_items,
    mmlu_accuracy,
    mmlu_items,
)
from steerlab.evaluation.benchmarks.truthfulqa import (
    TRUTHFULQA_METRICS,
    mc_metrics,
    subsample,
    truthfulqa_items,
    truthfulqa_mc,
)

__all__ = [
    "JAILBREAK_SOURCES",
    "MMLU_METRICS",
    "TRUTHFULQA_METRICS",
    "UTILITY_MULTIPLIERS",
    "direction_of",
    "jailbreak_asr",
    "jailbreak_items",
    "jailbreak_questions",
    "mc_items",
    "mc_metrics",
    "mmlu_accuracy",
    "mmlu_items",
    "subsample",
    "truthfulqa_items",
    "truthfulqa_mc",
]
