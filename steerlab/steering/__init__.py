"""Steering: the ``steer()`` context and steered generation."""

from steerlab.models.positions import PositionState
from steerlab.steering.generate import GenerationConfig, GenerationResult, generate
from steerlab.steering.steer import Steering, steer

__all__ = ["GenerationConfig", "GenerationResult", "PositionState", "Steering", "generate", "steer"]
