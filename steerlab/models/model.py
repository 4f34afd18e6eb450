"""The steerlab model object: a TransformerBridge, its tokenizer and chat formatting."""

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from steerlab.models.chat import DEFAULT_SYSTEM_PROMPT, ChatFormatter
from steerlab.models.positions import PositionState
from steerlab.models.sites import HookSite


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``: the name messages, cache keys and result rows
    record (cache keys made with it before stay valid: the same text)."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class ModelSpec:
    """How to load a model again, e.g. once in each worker process of a Ray sweep.

    loader: ``"module:function"`` returning a :class:`SteerlabModel`; kwargs: its
    arguments (picklable values).
    """

    loader: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> "SteerlabModel":
        module, _, name = self.loader.partition(":")
        return getattr(importlib.import_module(module), name)(**dict(self.kwargs))


@dataclass(eq=False)
class SteerlabModel:
    """A loaded model. Create it with :func:`steerlab.load_model`.

    Attributes:
        bridge: the TransformerLens ``TransformerBridge`` (hook points, ``forward``).
        tokenizer: the Hugging Face tokenizer.
        model_id: what it was loaded from ('embedded:...', an HF id or a local path).
        system_prompt: default system prompt of chat prompts.
        load_seconds: wall time of the load (for reports).
        source: 'embedded', 'hf', 'local' or 'tiny'.
        spec: how to load the same model in another process (None: not known).
    """

    bridge: Any
    tokenizer: Any
    model_id: str
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    load_seconds: float = 0.0
    source: str = "hf"
    spec: ModelSpec | None = field(default=None, repr=False)
    _hook_names: frozenset[str] = field(default=frozenset(), repr=False)
    positions: PositionState = field(default_factory=PositionState, repr=False)

    def __post_init__(self) -> None:
        self._hook_names = frozenset(self.bridge.hook_dict.keys())
        if self.tokenizer.pad_token_id is None:
            # Padding is always masked out; any id works, EOS is the usual choice.
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat = ChatFormatter(self.tokenizer, self.system_prompt)

    # --- shape facts ---------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def d_vocab(self) -> int:
        return int(self.bridge.cfg.d_vocab)

    @property
    def hook_names(self) -> frozenset[str]:
        return self._hook_names

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.bridge.parameters()).dtype

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Token ids that end an assistant turn (EOS and the template's end-of-turn)."""
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        for tok in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "</s>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            unk = getattr(self.tokenizer, "unk_token_id", None)
            if isinstance(tid, int) and tid >= 0 and tid != unk:
                ids.add(tid)
        return tuple(sorted(ids))

    # --- sites -----------------------------------------------------------------------
    def site(self, layer: int, kind: str = "resid_post") -> HookSite:
        """A validated, resolved :class:`HookSite` of this model."""
        site = HookSite(layer, kind).resolve(self.n_layers)
        site.hook_name(self)
        return site

    def sites(self, layers: Sequence[int], kind: str = "resid_post") -> tuple[HookSite, ...]:
        return tuple(self.site(layer, kind) for layer in layers)

    # --- running ---------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        """``bridge.forward`` (logits by default); a thin pass-through for readability."""
        return self.bridge(input_ids, **kwargs)

    def __repr__(self) -> str:
        return (
            f"SteerlabModel({self.model_id!r}, n_layers={self.n_layers}, d_model={self.d_model},"
            f" device={self.device}, dtype={self.dtype})"
        )
