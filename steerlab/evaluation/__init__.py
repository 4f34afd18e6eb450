"""Evaluation of steered models: A/B scoring, likelihoods, judges and benchmarks."""

from steerlab.evaluation.ab import (
    AB_METRICS,
    ab_probability,
    ab_probability_items,
    ab_scores,
    answer_logits,
)
from steerlab.evaluation.likelihood import (
    LIKELIHOOD_METRICS,
    batch_response_logprobs,
    likelihood_margin,
    likelihood_margin_items,
    logits_at,
    pair_logprobs,
    response_logprobs,
)
from steerlab.evaluation.likelihood_fast import fast_path_applies, likelihood_margin_fast
from steerlab.evaluation.multipliers import (
    DEFAULT_MULTIPLIERS,
    Condition,
    check_multipliers,
    conditions,
    pivot_metric,
    summarize,
    sweep_multipliers,
    vector_label,
    vector_layer,
)

__all__ = [
    "AB_METRICS",
    "DEFAULT_MULTIPLIERS",
    "LIKELIHOOD_METRICS",
    "Condition",
    "ab_probability",
    "ab_probability_items",
    "ab_scores",
    "answer_logits",
    "batch_response_logprobs",
    "check_multipliers",
    "conditions",
    "fast_path_applies",
    "likelihood_margin",
    "likelihood_margin_fast",
    "likelihood_margin_items",
    "logits_at",
    "pair_logprobs",
    "pivot_metric",
    "response_logprobs",
    "summarize",
    "sweep_multipliers",
    "vector_label",
    "vector_layer",
]
