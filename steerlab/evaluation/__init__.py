"""Evaluation of steered models: A/B scoring, likelihoods, the judge-free metric registry,
judges and benchmarks."""

from steerlab.evaluation.ab import (
    AB_METRICS,
    ab_probability,
    ab_scores,
    answer_logits,
)
from steerlab.evaluation.ab_fast import ab_probability_fast
from steerlab.evaluation.likelihood import (
    LIKELIHOOD_METRICS,
    batch_response_logprobs,
    likelihood_margin,
    logits_at,
    pair_logprobs,
    response_logprobs,
)
from steerlab.evaluation.likelihood_fast import fast_path_applies, likelihood_margin_fast
from steerlab.evaluation.metrics import (
    METRICS,
    Metric,
    evaluate_named,
    metric_items,
    primary_metric,
    resolve_metric,
)
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
    "METRICS",
    "Condition",
    "Metric",
    "ab_probability",
    "ab_probability_fast",
    "ab_scores",
    "answer_logits",
    "batch_response_logprobs",
    "check_multipliers",
    "conditions",
    "evaluate_named",
    "fast_path_applies",
    "likelihood_margin",
    "likelihood_margin_fast",
    "logits_at",
    "metric_items",
    "pair_logprobs",
    "pivot_metric",
    "primary_metric",
    "resolve_metric",
    "response_logprobs",
    "summarize",
    "sweep_multipliers",
    "vector_label",
    "vector_layer",
]
