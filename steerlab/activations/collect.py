"""``collect()``: contrastive activations at hook sites, batched and padding-aware."""

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from steerlab.activations.batch import TokenBatch, length_sorted_batches, right_pad
from steerlab.activations.capture import forward_to_sites
from steerlab.activations.prompts import encode_ab_contrast, encode_pair
from steerlab.activations.stored import ContrastiveActivations
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.chat import EncodedText
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.utils.progress import progress_bar

Position = Literal["answer_letter", "last_prompt", "response_mean", "last"]
POSITIONS: tuple[str, ...] = ("answer_letter", "last_prompt", "response_mean", "last")


def reduce_positions(
    acts: Float[Tensor, "batch pos d_model"], batch: TokenBatch, position: str
) -> Float[Tensor, "batch d_model"]:
    """One vector per row: a chosen token, or the mean over response tokens."""
    rows = torch.arange(acts.shape[0], device=acts.device)
    if position in ("answer_letter", "last"):
        return acts[rows, batch.last_index.to(acts.device)]
    if position == "last_prompt":
        return acts[rows, batch.last_prompt_index.to(acts.device)]
    if position == "response_mean":
        m = batch.response_mask.to(acts.device).unsqueeze(-1).to(acts.dtype)
        n = m.sum(1)
        if bool((n == 0).any()):
            raise EmptyInputError("response_mean needs a non-empty response in every row.")
        return (acts * m).sum(1) / n
    raise ConfigError(f"Unknown position {position!r}; valid: {', '.join(POSITIONS)}.")


def activations_of(
    model: SteerlabModel,
    encoded: Sequence[EncodedText],
    sites: Sequence[HookSite],
    position: str,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "collect",
) -> dict[HookSite, Float[Tensor, "n d_model"]]:
    """Reduced activations (fp32, CPU) for each encoded sequence, in input order."""
    if not encoded:
        raise EmptyInputError("No sequences to collect activations from.")
    resolved = [s.resolve(model.n_layers) for s in sites]
    out = {s: torch.empty(len(encoded), model.d_model) for s in resolved}
    batches = length_sorted_batches([len(e) for e in encoded], batch_size)
    for idx in progress_bar(batches, desc=desc, enabled=progress):
        batch = right_pad([encoded[i] for i in idx], model.pad_token_id, model.device)
        acts = forward_to_sites(model, batch.ids, batch.attention_mask, resolved)
        for s in resolved:
            out[s][idx] = reduce_positions(acts[s], batch, position).float().cpu()
    return out


def _hash_items(items: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps(repr(it)).encode())
    return h.hexdigest()[:16]


def _is_ab(item: Any) -> bool:
    return hasattr(item, "choices") and getattr(item, "matching", None) in ("A", "B")


def collect(
    model: SteerlabModel,
    data: Iterable[Any],
    sites: "Sequence[HookSite | int] | HookSite | int",
    positions: str | None = None,
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> ContrastiveActivations:
    """Contrastive activations of matching vs not-matching for pairs or A/B items.

    Args:
        data: preference pairs (``question, matching, not_matching``) or A/B items
            (``question, choices, matching``), or a dataset of them.
        sites: hook sites or layer numbers (``resid_post``).
        positions: ``"answer_letter"`` (A/B default), ``"response_mean"`` (pairs default),
            ``"last_prompt"`` or ``"last"``.
    """
    items = list(data)
    if not items:
        raise EmptyInputError("collect() got no pairs or items.")
    if isinstance(sites, (int, HookSite)):
        sites = [sites]
    site_list = [model.site(s) if isinstance(s, int) else s.resolve(model.n_layers) for s in sites]
    for s in site_list:
        s.hook_name(model)
    ab = _is_ab(items[0])
    position = positions or ("answer_letter" if ab else "response_mean")
    if position not in POSITIONS:
        raise ConfigError(f"Unknown positions {position!r}; valid: {', '.join(POSITIONS)}.")
    if position == "answer_letter" and not ab:
        raise ConfigError("positions='answer_letter' needs A/B items; pairs have no letter.")
    if ab:
        pos_enc, neg_enc = encode_ab_contrast(model, items)
    else:
        encs = [encode_pair(model, p) for p in items]
        pos_enc, neg_enc = [e[0] for e in encs], [e[1] for e in encs]
    both = activations_of(model, pos_enc + neg_enc, site_list, position, batch_size, progress)
    n = len(items)
    source = getattr(data, "content_hash", None)
    return ContrastiveActivations(
        matching={s: t[:n] for s, t in both.items()},
        not_matching={s: t[n:] for s, t in both.items()},
        position=position,
        model_id=model.model_id,
        dataset_hash=source if isinstance(source, str) else _hash_items(items),
        kind="ab" if ab else "pairs",
    )
