"""A tiny random-init Llama wrapped like a real model: for fast tests and examples.

It shares the embedded model's tokenizer (and chat template), so every prompt path is
the real one; only the weights are random.
"""

import time
from typing import Any

import torch

from steerlab.models.chat import DEFAULT_SYSTEM_PROMPT
from steerlab.models.model import ModelSpec, SteerlabModel


def load_tiny_model(
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_mlp: int = 128,
    seed: int = 0,
    init_std: float = 0.25,
    device: "str | torch.device" = "cpu",
    dtype: torch.dtype = torch.float32,
    tokenizer: Any = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> SteerlabModel:
    """A ``LlamaForCausalLM`` with random weights (seeded) in a TransformerBridge.

    ``init_std`` is larger than Llama's 0.02 so that the random model's next-token
    choices depend on the input (tests of batching and caching then mean something).
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from steerlab.models.embedded import ensure_embedded_cache
    from steerlab.models.loading import _wrap

    t0 = time.perf_counter()
    spec = None
    if tokenizer is None:  # reloadable elsewhere (a Ray worker) from the arguments alone
        args = {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads,
                "n_kv_heads": n_kv_heads, "d_mlp": d_mlp, "seed": seed, "init_std": init_std,
                "device": str(device), "dtype": dtype, "system_prompt": system_prompt}  # fmt: skip
        spec = ModelSpec("steerlab.models.tiny:load_tiny_model", args)
        tokenizer = AutoTokenizer.from_pretrained(str(ensure_embedded_cache()))
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=init_std,
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
        f"tiny-llama-{n_layers}x{d_model}-seed{seed}",
        "tiny-llama",
        torch.device(device),
        system_prompt,
        "tiny",
        t0,
        spec,
    )
