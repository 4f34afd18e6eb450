"""Residual-stream norms: the typical ``||h||`` at a hook site, measured and cached.

:func:`typical_norm` is the unit of steering strength (``strength = |k v| / mean ||h||``,
see :mod:`steerlab.steering.strength`): the mean L2 norm of the activation at the hook
site over the tokens of the neutral text set (:mod:`steerlab.data.neutral`), measured on
the unsteered model.

Every real token counts except the first of each sequence: the first token of a chat
prompt is an attention sink whose residual norm is many times larger than any other
(on SmolLM2-135M: 9x at layer 4, 160x at layer 14) and would otherwise set the unit.

A norm is measured once per (model id, site, neutral-set hash, dtype, system prompt, and
a fingerprint of the weights, so a fine-tuned or re-initialised model with the same id is
measured again) and kept in memory (per model object) and on disk under ``$STEERLAB_CACHE/norms/`` (one small
JSON file per key, written atomically), so later sessions do not measure it again.
"""

import hashlib
import json
import os
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steerlab.activations.batch import length_sorted_batches, right_pad
from steerlab.activations.capture import forward_to_sites
from steerlab.data.neutral import NeutralSet, load_neutral_set
from steerlab.errors import ConfigError
from steerlab.models.model import SteerlabModel, dtype_name
from steerlab.models.sites import HookSite

#: Bumped when the measurement rule changes (which tokens count), invalidating disk caches.
NORM_FORMAT = 1

_MEMORY: "weakref.WeakKeyDictionary[SteerlabModel, dict[str, float]]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class NormKey:
    """What a cached typical norm depends on."""

    model_id: str
    site: str
    neutral_hash: str
    dtype: str
    system_prompt: str
    weights: str

    def digest(self) -> str:
        payload = json.dumps([NORM_FORMAT, *self.as_list()], separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]

    def as_list(self) -> list[str]:
        return [
            self.model_id,
            self.site,
            self.neutral_hash,
            self.dtype,
            self.system_prompt,
            self.weights,
        ]


def norm_cache_dir() -> Path:
    """``$STEERLAB_CACHE/norms`` (default ``~/.cache/steerlab/norms``)."""
    from steerlab.models.embedded import cache_root

    return cache_root() / "norms"


@torch.no_grad()
def weights_fingerprint(model: SteerlabModel) -> str:
    """A cheap fingerprint of the weights: sha256 of the first 8 values of every
    parameter (one device-to-host copy)."""
    heads = [p.detach().reshape(-1)[:8].float() for p in model.bridge.parameters()]
    blob = torch.cat(heads).cpu().numpy().tobytes() if heads else b""
    return hashlib.sha256(blob).hexdigest()[:16]


def _key(model: SteerlabModel, site: HookSite, neutral: NeutralSet, weights: str) -> NormKey:
    return NormKey(
        model_id=model.model_id,
        site=site.key,
        neutral_hash=neutral.content_hash,
        dtype=dtype_name(model.dtype),
        system_prompt=model.system_prompt or "",
        weights=weights,
    )


def _read_disk(path: Path, key: NormKey) -> float | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("format") != NORM_FORMAT or data.get("key") != key.as_list():
        return None
    value = data.get("mean_norm")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _write_disk(path: Path, key: NormKey, value: float, n_tokens: int) -> None:
    """Atomic: a temporary file in the same directory, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": NORM_FORMAT,
        "key": key.as_list(),
        "mean_norm": value,
        "n_tokens": n_tokens,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@torch.no_grad()
def measure_norms(
    model: SteerlabModel,
    sites: Sequence[HookSite],
    neutral: NeutralSet,
    batch_size: int = 8,
) -> tuple[dict[HookSite, float], int]:
    """Mean ``||h||`` at each site over the neutral tokens (first token of each row
    excluded), and the number of tokens averaged. One forward pass for all sites."""
    encoded = neutral.encode(model)
    totals = {s: torch.zeros((), dtype=torch.float64) for s in sites}
    n_tokens = 0
    for idx in length_sorted_batches([len(e) for e in encoded], batch_size):
        batch = right_pad([encoded[i] for i in idx], model.pad_token_id, model.device)
        acts = forward_to_sites(model, batch.ids, batch.attention_mask, list(sites))
        mask = batch.attention_mask.bool().clone()
        mask[:, 0] = False  # the first token is an attention sink with an outsized norm
        n_tokens += int(mask.sum())
        for s in sites:
            norms = acts[s].double().norm(dim=-1)  # [batch, pos]
            totals[s] += norms[mask].sum().cpu()
    if n_tokens == 0:
        raise ConfigError("The neutral texts have no token after the first; cannot measure.")
    return {s: float(totals[s] / n_tokens) for s in sites}, n_tokens


def typical_norms(
    model: SteerlabModel,
    sites: "Sequence[HookSite | int]",
    *,
    neutral: NeutralSet | None = None,
    batch_size: int = 8,
    cache_dir: "Path | str | None" = None,
    disk_cache: bool = True,
    refresh: bool = False,
) -> dict[HookSite, float]:
    """Typical residual norm (mean ``||h||`` over the neutral tokens) at each site.

    Args:
        sites: hook sites (an int means ``resid_post`` of that layer); resolved against
            the model, so ``-1`` and ``n_layers - 1`` share one cache entry.
        neutral: the text set (default :func:`~steerlab.data.neutral.load_neutral_set`).
        cache_dir: where norms are cached on disk (default ``$STEERLAB_CACHE/norms``).
        disk_cache: read and write the disk cache (the memory cache is always used).
        refresh: measure again even if a cached value exists.

    Sites missing from the caches are measured together in one pass. Measure on the
    unsteered model: inside ``with steer(...)`` the steered norms would be cached.
    """
    resolved = [model.site(s) if isinstance(s, int) else _resolve(model, s) for s in sites]
    if not resolved:
        raise ConfigError("typical_norms() got no sites; pass e.g. [model.site(14)].")
    neutral = load_neutral_set() if neutral is None else neutral
    folder = Path(cache_dir) if cache_dir is not None else norm_cache_dir()
    memory = _MEMORY.setdefault(model, {})
    weights = weights_fingerprint(model)
    out: dict[HookSite, float] = {}
    missing: list[HookSite] = []
    for s in dict.fromkeys(resolved):
        key = _key(model, s, neutral, weights)
        digest = key.digest()
        value = None if refresh else memory.get(digest)
        if value is None and disk_cache and not refresh:
            value = _read_disk(folder / f"{digest}.json", key)
        if value is None:
            missing.append(s)
        else:
            out[s] = memory[digest] = value
    if missing:
        measured, n_tokens = measure_norms(model, missing, neutral, batch_size)
        for s, value in measured.items():
            key = _key(model, s, neutral, weights)
            memory[key.digest()] = out[s] = value
            if disk_cache:
                _write_disk(folder / f"{key.digest()}.json", key, value, n_tokens)
    return {s: out[s] for s in resolved}


def typical_norm(model: SteerlabModel, site: "HookSite | int", **kwargs: Any) -> float:
    """Mean ``||h||`` at ``site`` over the neutral text set (see :func:`typical_norms`)."""
    return next(iter(typical_norms(model, [site], **kwargs).values()))


def _resolve(model: SteerlabModel, site: HookSite) -> HookSite:
    out = site.resolve(model.n_layers)
    out.hook_name(model)
    return out


def residual_norms(
    model: SteerlabModel, pairs: Sequence[Any], layers: Sequence[int], n: int = 16,
    batch_size: int = 16,
) -> dict[int, float]:  # fmt: skip
    """Mean L2 norm of ``resid_post`` over the response tokens of up to ``n`` pairs'
    matching answers, per layer (the scale that ``SweepConfig.rescale`` refers to)."""
    from steerlab.activations.prompts import encode_pair
    from steerlab.data.convert import as_pairs
    from steerlab.errors import EmptyInputError

    enc = [encode_pair(model, p)[0] for p in as_pairs(list(pairs)[:n])]
    if not enc:
        raise EmptyInputError("residual_norms() needs at least one pair.")
    sites = [HookSite(int(x)).resolve(model.n_layers) for x in layers]
    total = {s.layer: 0.0 for s in sites}
    count = 0
    for idx in length_sorted_batches([len(e) for e in enc], batch_size):
        batch = right_pad([enc[i] for i in idx], model.pad_token_id, model.device)
        acts = forward_to_sites(model, batch.ids, batch.attention_mask, sites)
        mask = batch.response_mask.to(model.device)
        count += int(mask.sum())
        for s in sites:
            total[s.layer] += float(acts[s].float().norm(dim=-1)[mask].sum())
    return {layer: t / max(count, 1) for layer, t in total.items()}
