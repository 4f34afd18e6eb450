"""The fast BiPO forward: cached residuals below the steering layer, the layers above
it only, and the unembedding at response positions only.

TransformerBridge's ``forward(start_at_layer=k)`` injects a residual at block ``k`` but
still runs blocks ``0..k-1`` and discards their output. :func:`skip_lower_blocks` makes
those blocks return their input unchanged for the duration of a call, so the work below
the steering layer is really skipped. :func:`final_hidden_only` makes the unembedding an
identity so the bridge returns the final normalised residual; log-probs are then taken
only where a response token is predicted.
"""

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from steerlab.activations.capture import capture
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.vectors.bipo.packing import PackedBatch


def _identity_block(*args: Any, **kwargs: Any) -> Any:
    return args[0] if args else kwargs["hidden_states"]


def _identity(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    return x


@contextmanager
def _patched_forward(module: torch.nn.Module, fn: Any) -> Iterator[None]:
    had = "forward" in module.__dict__
    old = module.__dict__.get("forward")
    module.forward = fn  # type: ignore[method-assign]
    try:
        yield
    finally:
        if had:
            module.forward = old  # type: ignore[method-assign]
        else:
            del module.forward


@contextmanager
def skip_lower_blocks(model: SteerlabModel, start: int) -> Iterator[None]:
    """Blocks ``0..start-1`` pass their input through untouched inside the block."""
    with ExitStack() as stack:
        for block in list(model.bridge.blocks)[:start]:
            stack.enter_context(_patched_forward(block.original_component, _identity_block))
        yield


def unembed_linear(model: SteerlabModel) -> torch.nn.Linear | None:
    comp = getattr(model.bridge.unembed, "original_component", None)
    return comp if isinstance(comp, torch.nn.Linear) else None


def supports_fast_unembed(model: SteerlabModel) -> bool:
    cfg = model.bridge.original_model.config
    return unembed_linear(model) is not None and not getattr(cfg, "final_logit_softcapping", None)


@contextmanager
def final_hidden_only(model: SteerlabModel) -> Iterator[None]:
    """The unembedding becomes an identity: the forward returns ``ln_final`` output."""
    lin = unembed_linear(model)
    assert lin is not None
    with _patched_forward(lin, _identity):
        yield


def lower_residuals(
    model: SteerlabModel, batch: PackedBatch, layer: int
) -> Float[Tensor, "batch pos d_model"]:
    """``resid_post`` of ``layer`` for a packed batch, without any vector (no grad)."""
    site = HookSite(layer, "resid_post")
    stop = layer + 1 if layer + 1 < model.n_layers else None
    mask = batch.attention_mask(model.dtype)
    with torch.no_grad(), capture(model, [site]) as store:
        model.bridge(
            batch.ids, attention_mask=mask, position_ids=batch.position_ids, stop_at_layer=stop
        )
    return store[site]


def token_logprobs_from_hidden(
    model: SteerlabModel, hidden: Float[Tensor, "n_tok d_model"], tokens: Tensor
) -> Float[Tensor, " n_tok"]:
    lin = unembed_linear(model)
    assert lin is not None
    logits = F.linear(hidden, lin.weight, lin.bias)
    return logits.float().log_softmax(-1).gather(1, tokens[:, None]).squeeze(1)


def upper_token_logprobs(
    model: SteerlabModel,
    resid: Float[Tensor, "batch pos d_model"],
    batch: PackedBatch,
    layer: int,
    hooks: Sequence[tuple[str, Any]] = (),
) -> Float[Tensor, " n_tok"]:
    """Log-probs of the response tokens, running only the layers above ``layer``.

    ``resid`` is the residual after block ``layer`` (the steering vector already added);
    ``hooks`` are extra TransformerLens hooks (multi-layer vectors above ``layer``).
    """
    start = layer + 1
    mask = batch.attention_mask(resid.dtype if resid.is_floating_point() else model.dtype)
    with ExitStack() as stack:
        stack.enter_context(final_hidden_only(model))
        if hooks:
            stack.enter_context(model.bridge.hooks(fwd_hooks=list(hooks)))
        if start < model.n_layers:
            stack.enter_context(skip_lower_blocks(model, start))
            hidden = model.bridge(
                resid, start_at_layer=start, attention_mask=mask, position_ids=batch.position_ids
            )
        else:  # steering after the last block: only the final norm remains
            hidden = model.bridge.ln_final(resid)
    sel = hidden[batch.tgt_row, batch.tgt_pos]
    return token_logprobs_from_hidden(model, sel, batch.tgt_tok)


def full_token_logprobs(
    model: SteerlabModel, batch: PackedBatch, hooks: Sequence[tuple[str, Any]] = ()
) -> Float[Tensor, " n_tok"]:
    """Slow fallback and reference: full forward, full-vocabulary logits."""
    mask = batch.attention_mask(model.dtype)
    with model.bridge.hooks(fwd_hooks=list(hooks)):
        logits = model.bridge(batch.ids, attention_mask=mask, position_ids=batch.position_ids)
    lp = logits[batch.tgt_row, batch.tgt_pos].float().log_softmax(-1)
    return lp.gather(1, batch.tgt_tok[:, None]).squeeze(1)
