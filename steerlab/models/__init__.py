"""Models: loading (embedded default, HF ids, local dirs), hook sites, chat prompts and
LoRA fine-tunes (new models for transfer experiments)."""

from steerlab.models.chat import DEFAULT_SYSTEM_PROMPT, ChatFormatter, EncodedText
from steerlab.models.finetune import FinetuneRun, lora_finetune, lora_finetune_run
from steerlab.models.loading import load_model
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HOOK_KINDS, HookSite

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "ChatFormatter",
    "EncodedText",
    "FinetuneRun",
    "HOOK_KINDS",
    "HookSite",
    "SteerlabModel",
    "load_model",
    "lora_finetune",
    "lora_finetune_run",
]
