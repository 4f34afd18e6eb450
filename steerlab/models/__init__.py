"""Models: loading (embedded default, HF ids, local dirs), hook sites and chat prompts."""

from steerlab.models.chat import DEFAULT_SYSTEM_PROMPT, ChatFormatter, EncodedText
from steerlab.models.loading import load_model
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HOOK_KINDS, HookSite

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "ChatFormatter",
    "EncodedText",
    "HOOK_KINDS",
    "HookSite",
    "SteerlabModel",
    "load_model",
]
