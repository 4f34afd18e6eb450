"""Compatibility shims between TransformerLens and transformers versions.

transformers 5.2x renamed the per-layer KV-cache keyword from ``past_key_values`` to
``cache``; TransformerLens 4.3's attention bridges still read ``past_key_values``, so
with a newer transformers their KV cache silently stays empty and cached decoding
attends to the current token only (garbage text). :func:`install_kv_cache_shim` adds a
forward pre-hook on each attention bridge that passes the cache under both names.
"""

from typing import Any


def _alias_cache_kwarg(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    if "cache" in kwargs and kwargs.get("past_key_values") is None and kwargs["cache"] is not None:
        kwargs = dict(kwargs)
        kwargs["past_key_values"] = kwargs["cache"]
        return args, kwargs
    return None


def install_kv_cache_shim(bridge: Any) -> int:
    """Install the cache-keyword alias on every block's attention; returns how many."""
    n = 0
    for block in getattr(bridge, "blocks", []):
        attn = getattr(block, "attn", None)
        if attn is None or getattr(attn, "_steerlab_cache_shim", False):
            continue
        attn.register_forward_pre_hook(_alias_cache_kwarg, with_kwargs=True)
        attn._steerlab_cache_shim = True
        n += 1
    return n
