"""Evaluation of steered models: A/B scoring, likelihoods, judges and benchmarks."""
