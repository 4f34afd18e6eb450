"""steerlab: a workbench for steering LLMs (CAA, freeform, PCA and BiPO vectors).

The flat public API. Importing steerlab defines names and nothing else.
"""

from steerlab.errors import SteerlabError
from steerlab.models import DEFAULT_SYSTEM_PROMPT, HookSite, SteerlabModel, load_model
from steerlab.steering import GenerationConfig, GenerationResult, Steering, generate, steer
from steerlab.vectors import Provenance, SteeringVector, load_vector

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "GenerationConfig",
    "GenerationResult",
    "HookSite",
    "Provenance",
    "SteerlabError",
    "SteerlabModel",
    "Steering",
    "SteeringVector",
    "generate",
    "load_model",
    "load_vector",
    "steer",
]
