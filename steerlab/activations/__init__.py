"""Activations: prompts with known token positions, batching, capture and collection."""

from steerlab.activations.batch import TokenBatch, right_pad
from steerlab.activations.capture import capture, forward_to_sites
from steerlab.activations.collect import POSITIONS, activations_of, collect
from steerlab.activations.prompts import encode_ab, encode_pair, letter_token_ids
from steerlab.activations.stored import ContrastiveActivations

__all__ = [
    "POSITIONS",
    "ContrastiveActivations",
    "TokenBatch",
    "activations_of",
    "capture",
    "collect",
    "encode_ab",
    "encode_pair",
    "forward_to_sites",
    "letter_token_ids",
    "right_pad",
]
