"""A tiny random-init Llama wrapped like a real model: for fast tests and examples.

It shares the embedded model's tokenizer (and chat template), so every prompt path is
the real one; only the weights are random.
"""

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from steerlab.errors import ConfigError
from steerlab.models.chat import DEFAULT_SYSTEM_PROMPT
from steerlab.models.model import ModelSpec, SteerlabModel


@dataclass(frozen=True)
class TinyShape:
    """The size of a tiny random-init model (:func:`load_tiny_model`, and every family of
    :func:`~steerlab.models.architectures.tiny_config`).

    ``init_std`` is larger than the usual 0.02 so that the random model's next-token
    choices depend on the input (tests of batching and caching then mean something).
    """

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int = 2
    d_mlp: int = 128
    init_std: float = 0.25

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads="
                f"{self.n_kv_heads}: d_model must be a multiple of n_heads and n_heads a "
                "multiple of n_kv_heads."
            )

    @classmethod
    def of(cls, dims: Mapping[str, Any]) -> "TinyShape":
        """A shape from keyword values (the ``**shape`` of the tiny-model builders)."""
        names = [f.name for f in fields(cls)]
        unknown = [k for k in dims if k not in names]
        if unknown:
            raise ConfigError(
                f"Unknown tiny-model shape option(s) {', '.join(map(repr, unknown))}. "
                f"Valid: {', '.join(names)}."
            )
        return cls(**dims)


def load_tiny_model(
    *,
    seed: int = 0,
    device: "str | torch.device" = "cpu",
    dtype: torch.dtype = torch.float32,
    tokenizer: Any = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    **shape: Any,
) -> SteerlabModel:
    """A ``LlamaForCausalLM`` with random weights (seeded) in a TransformerBridge.

    ``shape``: the fields of :class:`TinyShape` (``n_layers=2, d_model=64, n_heads=4,
    n_kv_heads=2, d_mlp=128, init_std=0.25``).
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from steerlab.models.embedded import ensure_embedded_cache
    from steerlab.models.loading import _wrap

    t0 = time.perf_counter()
    dims = TinyShape.of(shape)
    spec = None
    if tokenizer is None:  # reloadable elsewhere (a Ray worker) from the arguments alone
        args = {**asdict(dims), "seed": seed, "device": str(device), "dtype": dtype,
                "system_prompt": system_prompt}  # fmt: skip
        spec = ModelSpec("steerlab.models.tiny:load_tiny_model", args)
        tokenizer = AutoTokenizer.from_pretrained(str(ensure_embedded_cache()))
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=dims.d_model,
        intermediate_size=dims.d_mlp,
        num_hidden_layers=dims.n_layers,
        num_attention_heads=dims.n_heads,
        num_key_value_heads=dims.n_kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=dims.init_std,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
    )
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        hf = LlamaForCausalLM(cfg).to(dtype)
    finally:
        torch.random.set_rng_state(gen_state)
    return _wrap(
        hf,
        tokenizer,
        f"tiny-llama-{dims.n_layers}x{dims.d_model}-seed{seed}",
        "tiny-llama",
        torch.device(device),
        system_prompt,
        "tiny",
        t0,
        spec,
    )
