"""Which model architectures steerlab runs on, their size before loading, and tiny
random-init instances of each (saved as ordinary checkpoints, for the architecture matrix).

steerlab runs every model through TransformerLens' ``TransformerBridge``; an architecture
is supported when the bridge has an adapter for it. :data:`TINY_ARCHITECTURES` lists the
families checked capability by capability (``benchmarks/architectures.py`` writes
``docs/architectures.md``); :func:`check_supported` refuses the others before any weight
is downloaded, naming what is supported.
"""

import importlib.metadata
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import ConfigError, ModelLoadError, did_you_mean
from steerlab.models.model import dtype_name
from steerlab.models.tiny import TinyShape


@dataclass(frozen=True)
class TinyArchitecture:
    """A family checked in the architecture matrix.

    key: short name (``'gemma2'``); hf_class: the ``transformers`` model class (also the
    TransformerBridge adapter key); config_class: its config class; family: what users
    call it; shape: config fields that name the shape, as a function of
    ``(n_layers, d_model, n_heads, n_kv_heads, d_mlp)``; extra: fixed config fields.
    """

    key: str
    family: str
    hf_class: str
    config_class: str
    shape: Callable[[int, int, int, int, int], dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


def _rope_shape(head_dim: bool = False) -> Callable[[int, int, int, int, int], dict[str, Any]]:
    def shape(n_layers: int, d_model: int, n_heads: int, n_kv: int, d_mlp: int) -> dict[str, Any]:
        out = {
            "hidden_size": d_model,
            "intermediate_size": d_mlp,
            "num_hidden_layers": n_layers,
            "num_attention_heads": n_heads,
            "num_key_value_heads": n_kv,
            "max_position_embeddings": 2048,
        }
        if head_dim:  # these configs default to a head_dim of 128-256, not d_model / heads
            out["head_dim"] = d_model // n_heads
        return out

    return shape


def _gpt2_shape(n_layers: int, d_model: int, n_heads: int, n_kv: int, d_mlp: int) -> dict:
    return {"n_embd": d_model, "n_layer": n_layers, "n_head": n_heads, "n_inner": d_mlp,
            "n_positions": 2048}  # fmt: skip


def _neox_shape(n_layers: int, d_model: int, n_heads: int, n_kv: int, d_mlp: int) -> dict:
    return {"hidden_size": d_model, "intermediate_size": d_mlp, "num_hidden_layers": n_layers,
            "num_attention_heads": n_heads, "max_position_embeddings": 2048}  # fmt: skip


_ARCHS = [
    TinyArchitecture("llama", "Llama", "LlamaForCausalLM", "LlamaConfig", _rope_shape()),
    TinyArchitecture("mistral", "Mistral", "MistralForCausalLM", "MistralConfig", _rope_shape()),
    TinyArchitecture("qwen2", "Qwen2", "Qwen2ForCausalLM", "Qwen2Config", _rope_shape()),
    TinyArchitecture("qwen3", "Qwen3", "Qwen3ForCausalLM", "Qwen3Config", _rope_shape(True)),
    TinyArchitecture(
        "gemma2",
        "Gemma-2",
        "Gemma2ForCausalLM",
        "Gemma2Config",
        _rope_shape(True),
        {"final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
    ),  # fmt: skip
    TinyArchitecture(
        "gemma3", "Gemma-3", "Gemma3ForCausalLM", "Gemma3TextConfig", _rope_shape(True)
    ),
    TinyArchitecture("phi3", "Phi-3", "Phi3ForCausalLM", "Phi3Config", _rope_shape()),
    TinyArchitecture("gpt2", "GPT-2", "GPT2LMHeadModel", "GPT2Config", _gpt2_shape),
    TinyArchitecture(
        "gpt_neox", "GPT-NeoX (Pythia)", "GPTNeoXForCausalLM", "GPTNeoXConfig", _neox_shape
    ),
    TinyArchitecture("olmo2", "OLMo-2", "Olmo2ForCausalLM", "Olmo2Config", _rope_shape()),
]
#: key -> the families the architecture matrix checks (all supported by TransformerBridge).
TINY_ARCHITECTURES: dict[str, TinyArchitecture] = {a.key: a for a in _ARCHS}


# --- support -----------------------------------------------------------------------------


def supported_architectures() -> tuple[str, ...]:
    """Every ``transformers`` architecture TransformerBridge has an adapter for."""
    from transformer_lens.factories.architecture_adapter_factory import (
        ArchitectureAdapterFactory,
    )

    ArchitectureAdapterFactory.discover_entry_points()
    return tuple(sorted(ArchitectureAdapterFactory._adapters))


def config_architectures(hf_config: Any) -> list[str]:
    """The architecture names a Hugging Face config declares (``architectures`` field)."""
    return [str(a) for a in (getattr(hf_config, "architectures", None) or [])]


def check_supported(hf_config: Any, source: str) -> str:
    """The TransformerBridge architecture of ``hf_config``; a :class:`ModelLoadError`
    naming the supported ones when there is none."""
    from transformer_lens.model_bridge.sources._hf_format import (
        determine_architecture_from_hf_config,
    )

    try:
        return str(determine_architecture_from_hf_config(hf_config))
    except ValueError:
        pass
    declared = config_architectures(hf_config) or [str(getattr(hf_config, "model_type", "?"))]
    supported = supported_architectures()
    tested = ", ".join(f"{a.family} ({a.hf_class})" for a in _ARCHS)
    tl = importlib.metadata.version("transformer-lens")
    raise ModelLoadError(
        f"{source}: architecture {', '.join(declared)} (model_type "
        f"{getattr(hf_config, 'model_type', None)!r}) is not supported by TransformerLens "
        f"{tl}'s TransformerBridge, which steerlab runs every model on."
        f"{did_you_mean(declared[0], supported)} Checked with steerlab: {tested}; "
        f"TransformerBridge knows {len(supported)} architectures in all "
        "(steerlab.models.architectures.supported_architectures()). Fix: use a model of a "
        "supported architecture, or a newer transformer-lens that adds this one."
    )


# --- size before loading ------------------------------------------------------------------


def parameter_count(hf_config: Any) -> int | None:
    """Parameters of the model ``hf_config`` describes (built on the meta device: no
    memory, no download); None when the config cannot be instantiated that way."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_config)
    except Exception:  # remote code, exotic configs: no estimate rather than no model
        return None
    return sum(p.numel() for p in model.parameters())


def memory_estimate(hf_config: Any, dtype: torch.dtype) -> tuple[int, int] | None:
    """(parameters, bytes of the weights in ``dtype``), or None when unknown."""
    n = parameter_count(hf_config)
    if n is None:
        return None
    return n, n * torch.empty((), dtype=dtype).element_size()


def describe_memory(source: str, hf_config: Any, dtype: torch.dtype) -> str | None:
    """One line: the parameter count and the weights' memory in ``dtype``."""
    est = memory_estimate(hf_config, dtype)
    if est is None:
        return None
    n, nbytes = est
    count = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
    size = f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"
    name = dtype_name(dtype)
    return (
        f"steerlab: loading {source}: {count} parameters, about {size} of weights in {name} "
        "(activations and the KV cache come on top)"
    )


def print_memory_estimate(source: str, hf_config: Any, dtype: torch.dtype) -> None:
    line = describe_memory(source, hf_config, dtype)
    if line:
        print(line, file=sys.stderr, flush=True)


# --- tiny random-init checkpoints -----------------------------------------------------------


def tiny_config(arch: str, tokenizer: Any, shape: TinyShape | None = None) -> Any:
    """The ``transformers`` config of a tiny ``arch`` sized to ``tokenizer``'s vocabulary
    (``shape``: default :class:`~steerlab.models.tiny.TinyShape`)."""
    import transformers

    spec = get_tiny_architecture(arch)
    dims = shape or TinyShape()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = {
        **spec.shape(dims.n_layers, dims.d_model, dims.n_heads, dims.n_kv_heads, dims.d_mlp),
        **spec.extra,
        "vocab_size": len(tokenizer),
        "initializer_range": dims.init_std,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": pad,
    }
    cfg = getattr(transformers, spec.config_class)(**kwargs)
    cfg.architectures = [spec.hf_class]
    return cfg


def get_tiny_architecture(arch: str) -> TinyArchitecture:
    if arch not in TINY_ARCHITECTURES:
        raise ConfigError(
            f"Unknown tiny architecture {arch!r}.{did_you_mean(arch, TINY_ARCHITECTURES)} "
            f"Valid: {', '.join(TINY_ARCHITECTURES)}."
        )
    return TINY_ARCHITECTURES[arch]


def build_tiny_checkpoint(
    arch: str,
    out_dir: "str | Path",
    *,
    seed: int = 0,
    tokenizer: Any = None,
    **shape: Any,
) -> Path:
    """Save a random-init ``arch`` model (seeded) and the embedded model's tokenizer to
    ``out_dir``, a directory ``steerlab.load_model(out_dir)`` loads like any checkpoint.

    ``shape``: the fields of :class:`~steerlab.models.tiny.TinyShape` (``n_layers`` 2,
    ``d_model`` 64, ``n_heads`` 4, ``n_kv_heads`` 2, ``d_mlp`` 128, ``init_std`` 0.25).
    """
    import transformers
    from transformers import AutoTokenizer

    from steerlab.models.embedded import ensure_embedded_cache

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(ensure_embedded_cache()))
    cfg = tiny_config(arch, tokenizer, TinyShape.of(shape))
    model_cls = getattr(transformers, get_tiny_architecture(arch).hf_class)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        hf = model_cls(cfg)
    finally:
        torch.random.set_rng_state(state)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def random_model(
    arch: str = "llama",
    *,
    device: "str | torch.device" = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    tokenizer: Any = None,
    **shape: Any,
) -> Any:
    """A random-init ``arch`` built in memory, directly on ``device`` in ``dtype`` (no
    checkpoint, no download), as a :class:`~steerlab.models.model.SteerlabModel`: for
    benchmarks of real-model shapes (``benchmarks/gpu_check.py`` builds a 7B-shaped
    Llama this way). ``shape`` as in :func:`build_tiny_checkpoint`."""
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steerlab.models.chat import DEFAULT_SYSTEM_PROMPT
    from steerlab.models.embedded import ensure_embedded_cache
    from steerlab.models.loading import _wrap
    from steerlab.models.model import ModelSpec

    t0 = time.perf_counter()
    spec = None
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(ensure_embedded_cache()))
        kwargs = {"arch": arch, "device": str(device), "dtype": dtype, "seed": seed, **shape}
        spec = ModelSpec("steerlab.models.architectures:random_model", kwargs)
    dims = TinyShape.of(shape)
    cfg = tiny_config(arch, tokenizer, dims)
    state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    torch.manual_seed(seed)
    try:
        with torch.device(device):
            hf = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    finally:
        torch.random.set_rng_state(state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
    model_id = f"random-{arch}-{dims.n_layers}x{dims.d_model}-seed{seed}"
    model = _wrap(hf, tokenizer, model_id, model_id, torch.device(device), DEFAULT_SYSTEM_PROMPT,
                  "random", t0)  # fmt: skip
    model.spec = spec
    return model


__all__ = [
    "TINY_ARCHITECTURES",
    "TinyArchitecture",
    "build_tiny_checkpoint",
    "check_supported",
    "describe_memory",
    "memory_estimate",
    "parameter_count",
    "print_memory_estimate",
    "random_model",
    "supported_architectures",
    "tiny_config",
]
