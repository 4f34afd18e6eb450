"""BiPO's plain path: the same objective for models the fast path cannot run.

The fast path (:mod:`steerlab.activations.packed`) needs a plain linear unembedding: it
takes the final normalised residual and multiplies by the unembedding matrix itself.
Models whose logits are soft-capped (Gemma-2) or whose head is anything else are trained
here instead: each side of a pair is its own right-padded row, the vector is added by a
hook at ``resid_post`` during a full forward pass through the model's own head, and
log-probs come from the full-vocabulary logits at the response positions. The reference
(unsteered) log-probs are computed once, when the cache is built (under bf16 autocast
they are recomputed in each step's batch so that ``v = 0`` gives the reference's numbers
exactly; the fast path does so only where its reference depends on the batch).

Cost: every step runs all layers on both responses (the prompt twice) with
full-vocabulary logits, where the fast path runs only the layers above the steering
layer on one packed row per pair, at response positions only.
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steerlab.activations.batch import length_sorted_batches
from steerlab.activations.packed import (
    PackedPair,
    ReferenceCache,
    autocast_to,
    pack_pairs,
    supports_fast_unembed,
)
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.utils.progress import progress_bar


class PlainPathWarning(UserWarning):
    """BiPO trains on the plain path (full forward per step): slower, same objective."""


def fast_path_refusal(model: SteerlabModel) -> str | None:
    """Why the fast BiPO path cannot run ``model`` (None: it can)."""
    if supports_fast_unembed(model):
        return None
    cap = getattr(model.bridge.original_model.config, "final_logit_softcapping", None)
    if cap:
        return f"its logits are soft-capped, final_logit_softcapping={cap}"
    comp = getattr(model.bridge.unembed, "original_component", None)
    return f"its unembedding is a {type(comp).__name__}, not a plain linear layer"


def plain_path_notice(model: SteerlabModel, layer: int, reason: str) -> str:
    """The one-line notice of the plain path's cost."""
    above = model.n_layers - layer - 1
    return (
        f"BiPO on {model.model_id}: the fast path does not apply: {reason}; training takes "
        f"the plain path (same objective): each step runs all {model.n_layers} layers on both "
        f"responses with full-vocabulary logits instead of the {above} layer(s) above layer "
        f"{layer} at response positions only, several times slower per step."
    )


def warn_plain_path(model: SteerlabModel, layer: int, reason: str) -> None:
    warnings.warn(plain_path_notice(model, layer, reason), PlainPathWarning, stacklevel=3)


@dataclass(frozen=True, eq=False)
class PlainPairCache(ReferenceCache):
    """The plain path's cache: the packed tokens and the reference log-probs of both
    responses from a full forward (under ``autocast``); unlike
    :class:`~steerlab.activations.packed.PairCache`, no residuals are stored."""


def _side_batch(
    pairs: Sequence[PackedPair], pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Rows ``0..b-1``: prompt + matching; rows ``b..2b-1``: prompt + not matching,
    right-padded. Returns ids, the 2-D attention mask and (row, position, token) of every
    predicted response token."""
    seqs = [(p.prompt, p.matching) for p in pairs] + [(p.prompt, p.not_matching) for p in pairs]
    width = max(len(a) + len(b) for a, b in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    rows: list[int] = []
    poss: list[int] = []
    toks: list[int] = []
    for r, (prompt, resp) in enumerate(seqs):
        n, p = len(prompt) + len(resp), len(prompt)
        ids[r, :n] = torch.tensor(prompt + resp)
        mask[r, :n] = 1
        rows += [r] * len(resp)
        poss += list(range(p - 1, n - 1))
        toks += list(resp)
    targets = (torch.tensor(rows), torch.tensor(poss), torch.tensor(toks))
    return (ids.to(device), mask.to(device), *(t.to(device) for t in targets))


def side_logprobs(
    model: SteerlabModel,
    pairs: Sequence[PackedPair],
    hooks: Sequence[tuple[str, Any]] = (),
    autocast: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Summed response log-probs (matching, not matching) per pair, float64, from a full
    forward with ``hooks``; differentiable through the hooks."""
    ids, mask, rows, poss, toks = _side_batch(pairs, model.pad_token_id, model.device)
    with autocast_to(model.device, autocast), model.bridge.hooks(fwd_hooks=list(hooks)):
        logits = model.bridge(ids, attention_mask=mask)
    lp = logits[rows, poss].float().log_softmax(-1).gather(1, toks[:, None]).squeeze(1)
    sums = torch.zeros(ids.shape[0], dtype=torch.float64, device=lp.device)
    sums = sums.index_add(0, rows, lp.double())
    b = len(pairs)
    return sums[:b], sums[b:]


@torch.no_grad()
def build_plain_cache(
    model: SteerlabModel,
    pairs: Sequence[Any],
    layer: int,
    *,
    batch_size: int = 8,
    autocast: torch.dtype | None = None,
    progress: bool = True,
    desc: str = "BiPO cache (plain)",
    score_eos: bool = False,
) -> PlainPairCache:
    """Encode ``pairs`` and compute their reference log-probs once (no vector);
    ``score_eos``: each response ends with the EOS token, as on the fast path."""
    packed = pack_pairs(model, pairs, score_eos=score_eos)
    ref_m = torch.zeros(len(packed), dtype=torch.float64)
    ref_n = torch.zeros(len(packed), dtype=torch.float64)
    batches = length_sorted_batches([len(p) for p in packed], batch_size)
    for idx in progress_bar(batches, desc=desc, enabled=progress):
        m, n = side_logprobs(model, [packed[i] for i in idx], autocast=autocast)
        ref_m[idx], ref_n[idx] = m.cpu(), n.cpu()
    return PlainPairCache(tuple(packed), ref_m, ref_n, layer, autocast)


def plain_policy_logprobs(
    model: SteerlabModel,
    cache: PlainPairCache,
    idx: Sequence[int],
    layers: list[int],
    params: list[Tensor],
    d: Tensor,
) -> tuple[Tensor, Tensor]:
    """Summed response log-probs of pairs ``idx`` with ``d * v_k`` added at
    ``resid_post`` of each layer (d per example), under the cache's autocast."""
    dd = d.to(model.device).repeat(2).view(-1, 1, 1)  # both sides of each pair

    def add(v: Tensor) -> Any:
        def hook(x: Tensor, hook: Any) -> Tensor:
            return x + (dd * v).to(x.dtype)

        return hook

    hooks = [(HookSite(layer).hook_name(model), add(v)) for layer, v in zip(layers, params)]
    return side_logprobs(model, [cache.packed[i] for i in idx], hooks, cache.autocast)


@torch.no_grad()
def plain_reference_logprobs(
    model: SteerlabModel, cache: PlainPairCache, idx: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """The reference log-probs of pairs ``idx`` (on the CPU): cached, or recomputed in
    this batch under autocast (see :func:`~steerlab.vectors.bipo.trainer.reference_logprobs`)."""
    if cache.autocast is None:
        i = torch.as_tensor(list(idx))
        return cache.ref_matching[i], cache.ref_not_matching[i]
    m, n = side_logprobs(model, [cache.packed[i] for i in idx], autocast=cache.autocast)
    return m.cpu(), n.cpu()


__all__ = [
    "PlainPairCache",
    "PlainPathWarning",
    "build_plain_cache",
    "fast_path_refusal",
    "plain_path_notice",
    "plain_policy_logprobs",
    "plain_reference_logprobs",
    "side_logprobs",
]
