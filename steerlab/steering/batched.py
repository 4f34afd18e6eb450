"""Continuous batching with per-row steering: many requests share one forward per step.

Each row of the running batch has its own prompt, its own steering (vectors, multipliers
and positions, or none), its own decoding settings and its own slice of the KV cache.
A forward hook at every steered site adds a per-row delta ``mask[b, p] * delta[b]``
(rows without steering add exactly zero). New rows join at step boundaries: their prompts
are prefilled (left-padded among themselves) and their KV cache is left-padded onto the
running one; finished rows leave (their cache rows are dropped and all-padding columns
trimmed). The attention mask and explicit position ids (counted from each row's first
real token) make a row's result independent of what else is in the batch, so a greedy
row gets the tokens :func:`steerlab.generate` gives it alone.

    dec = BatchedDecoder(model, max_batch_size=16)
    dec.join("a", RowSpec(prompt_ids, 32, steering=Steering.of(vec, 4.0)))
    while not dec.idle:
        for event in dec.step():  # one decoding step for every running row
            ...

One thread owns a decoder (and the model while it steps); it is not thread-safe.
"""

import warnings
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.model import SteerlabModel
from steerlab.models.positions import PositionSpec, slice_mask
from steerlab.steering.generate import check_sampling
from steerlab.steering.steer import Steering

FINISH_REASONS = ("stop", "length", "cancelled")


@dataclass(frozen=True)
class RowSpec:
    """One row to generate.

    prompt_ids: the prompt's token ids (chat template already applied).
    max_new_tokens: tokens to generate at most (>= 1).
    steering: vectors, multipliers and positions for this row only (None: unsteered).
    greedy: argmax decoding; False samples with temperature / top_p from ``seed``.
    stop_at_eos: end the row at EOS / end-of-turn (the EOS token is not returned).
    """

    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    steering: Steering | None = None
    greedy: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_ids", tuple(int(t) for t in self.prompt_ids))
        if not self.prompt_ids:
            raise EmptyInputError("RowSpec.prompt_ids is empty; a row needs a prompt token.")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise ConfigError(f"RowSpec.max_new_tokens={self.max_new_tokens!r}; use an int >= 1.")
        if self.max_new_tokens < 1:
            raise ConfigError(f"RowSpec.max_new_tokens={self.max_new_tokens}; use an int >= 1.")
        check_sampling(self.greedy, self.temperature, self.top_p, owner="RowSpec.")
        if self.steering is not None and not isinstance(self.steering, Steering):
            raise ConfigError(
                f"RowSpec.steering is a {type(self.steering).__name__}; pass a Steering "
                "(Steering.of(vector, multiplier, positions)) or None."
            )


@dataclass(frozen=True)
class StepEvent:
    """What a step did for one row: a new token, and whether the row has finished.

    ``token`` is None when the row ended without a token to show (EOS, cancellation).
    ``finish_reason`` is one of ``stop`` (EOS), ``length`` (max_new_tokens reached) or
    ``cancelled`` when ``done``; None otherwise.
    """

    key: Hashable
    token: int | None
    done: bool = False
    finish_reason: str | None = None


@dataclass(eq=False)
class _Row:
    key: Hashable
    spec: RowSpec
    deltas: dict[str, Tensor]  # hook name -> [d_model] summed multiplier * direction
    positions: PositionSpec
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)

    @property
    def prompt_len(self) -> int:
        return len(self.spec.prompt_ids)


class BatchedDecoder:
    """A running batch of rows decoded together, each with its own steering."""

    def __init__(self, model: SteerlabModel, max_batch_size: int = 16) -> None:
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int):
            raise ConfigError(f"max_batch_size={max_batch_size!r}; use an int >= 1.")
        if max_batch_size < 1:
            raise ConfigError(f"max_batch_size={max_batch_size}; use an int >= 1.")
        self.model = model
        self.max_batch_size = max_batch_size
        self._eos = frozenset(model.eos_token_ids)
        self._waiting: deque[_Row] = deque()
        self._rows: list[_Row] = []  # the running batch, in cache order
        self._cache: Any = None  # HF DynamicCache of the running rows
        self._mask: Tensor | None = None  # [batch, cached positions] 1 = real token
        self._last: Tensor | None = None  # [batch] the token each row feeds next
        self._cancelled: set[Hashable] = set()

    # --- the queue ---------------------------------------------------------------------
    def join(self, key: Hashable, spec: RowSpec) -> None:
        """Queue a row; it enters the batch at the next step with a free slot."""
        if any(r.key == key for r in (*self._rows, *self._waiting)):
            raise ConfigError(f"A row with key {key!r} is already queued or running.")
        if not isinstance(spec, RowSpec):
            raise ConfigError(f"join() takes a RowSpec, got {type(spec).__name__}.")
        deltas: dict[str, Tensor] = {}
        positions: PositionSpec = "all"
        if spec.steering is not None:
            positions = spec.steering.positions
            # the caller (the server's VectorStore) has checked the vectors against the model
            for site, delta in spec.steering.deltas(self.model, other_model="allow").items():
                deltas[site.hook_name(self.model)] = delta
        gen = None if spec.greedy else torch.Generator().manual_seed(spec.seed)
        self._waiting.append(_Row(key, spec, deltas, positions, gen))

    def cancel(self, key: Hashable) -> None:
        """End a queued or running row at the next step (it gets a ``cancelled`` event)."""
        self._cancelled.add(key)

    @property
    def n_running(self) -> int:
        return len(self._rows)

    @property
    def n_waiting(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return not self._rows and not self._waiting

    # --- one step ----------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[StepEvent]:
        """Admit waiting rows, decode one token for every running row; the events."""
        events = self._drop_cancelled()
        joiners: list[_Row] = []
        while self._waiting and len(self._rows) + len(joiners) < self.max_batch_size:
            joiners.append(self._waiting.popleft())
        if self._rows:
            assert self._mask is not None and self._last is not None
            mask = torch.cat([self._mask, torch.ones_like(self._mask[:, :1])], dim=1)
            logits, self._cache = self._forward(self._rows, self._last[:, None], mask, self._cache)
            self._mask = mask
            new_events, self._last = self._advance(self._rows, logits)
            events += new_events
        if joiners:
            ids, mask = _left_pad([r.spec.prompt_ids for r in joiners], self.model.pad_token_id)
            ids, mask = ids.to(self.model.device), mask.to(self.model.device)
            logits, cache = self._forward(joiners, ids, mask, None)
            new_events, last = self._advance(joiners, logits)
            events += new_events
            self._merge(joiners, cache, mask, last)
        self._leave({e.key for e in events if e.done})
        return events

    def _drop_cancelled(self) -> list[StepEvent]:
        if not self._cancelled:
            return []
        gone = self._cancelled
        self._cancelled = set()
        events = [StepEvent(r.key, None, True, "cancelled") for r in self._waiting if r.key in gone]
        self._waiting = deque(r for r in self._waiting if r.key not in gone)
        events += [StepEvent(r.key, None, True, "cancelled") for r in self._rows if r.key in gone]
        self._leave({e.key for e in events})
        return events

    def _advance(
        self, rows: Sequence[_Row], logits: Float[Tensor, "b v"]
    ) -> tuple[list[StepEvent], Int[Tensor, " b"]]:
        """Pick each row's next token: the events (EOS and max_new_tokens end a row) and
        the tokens to feed next."""
        picks = logits.argmax(dim=-1).tolist()
        events = []
        for i, row in enumerate(rows):
            tok = picks[i] if row.spec.greedy else _sample(logits[i : i + 1], row)
            picks[i] = tok
            if row.spec.stop_at_eos and tok in self._eos:
                events.append(StepEvent(row.key, None, True, "stop"))
                continue
            row.tokens.append(tok)
            done = len(row.tokens) >= row.spec.max_new_tokens
            events.append(StepEvent(row.key, tok, done, "length" if done else None))
        return events, torch.tensor(picks, dtype=torch.long, device=logits.device)

    # --- the forward -------------------------------------------------------------------
    def _forward(
        self,
        rows: Sequence[_Row],
        ids: Int[Tensor, "b n"],
        mask: Int[Tensor, "b t"],
        cache: Any,
    ) -> tuple[Float[Tensor, "b v"], Any]:
        """One forward of ``ids`` (the last ``n`` positions of ``mask``) with per-row steering."""
        n = ids.shape[1]
        pos = (mask.cumsum(dim=-1) - 1).clamp(min=0)[:, -n:]  # index from the first real token
        real = mask[:, -n:].bool()
        hooks = _row_hooks(rows, pos, real, self.model)
        kwargs: dict[str, Any] = {
            "return_type": "logits_and_cache",
            "attention_mask": mask,
            "position_ids": pos,
        }
        if cache is None:
            kwargs["use_cache"] = True
        else:
            kwargs["past_key_values"] = cache
        with warnings.catch_warnings(), self.model.bridge.hooks(fwd_hooks=hooks):
            # TransformerLens 4.3 reads the cache as past_key_values, which transformers
            # 5.2x deprecates (models.compat); the warning is expected.
            warnings.filterwarnings(
                "ignore", message=".*past_key_values.*deprecated", category=FutureWarning
            )
            logits, new_cache = self.model.bridge(ids, **kwargs)
        return logits[:, -1, :], new_cache

    # --- the KV cache ------------------------------------------------------------------
    def _merge(self, joiners: list[_Row], cache: Any, mask: Tensor, last: Tensor) -> None:
        """Append the prefilled rows to the running batch (left-pad the shorter cache)."""
        if not self._rows:
            self._rows, self._cache, self._mask, self._last = list(joiners), cache, mask, last
            return
        assert self._mask is not None and self._last is not None
        width = max(self._mask.shape[1], mask.shape[1])
        old_layers, new_layers = _layers(self._cache), _layers(cache)
        for old, new in zip(old_layers, new_layers):
            old.keys = torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)])
            old.values = torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)])
        self._mask = torch.cat([_pad_left(self._mask, width), _pad_left(mask, width)])
        self._last = torch.cat([self._last, last])
        self._rows += joiners

    def _leave(self, keys: set[Hashable]) -> None:
        """Drop finished rows from the batch and trim columns that are padding everywhere."""
        if not keys or not any(r.key in keys for r in self._rows):
            return
        keep = [i for i, r in enumerate(self._rows) if r.key not in keys]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._last = None
            return
        assert self._mask is not None and self._last is not None
        idx = torch.tensor(keep, device=self._mask.device)
        mask = self._mask[idx]
        start = int(mask.any(dim=0).long().argmax())  # first column with a real token
        for layer in _layers(self._cache):
            layer.keys = layer.keys[idx, :, start:]
            layer.values = layer.values[idx, :, start:]
        self._mask, self._last = mask[:, start:], self._last[idx]


def _layers(cache: Any) -> list[Any]:
    layers = getattr(cache, "layers", None)
    if layers is None or not all(_full_attention(lay) for lay in layers):
        raise ConfigError(
            f"Continuous batching needs a DynamicCache of full-attention layers; this model "
            f"returned a {type(cache).__name__}. Use steerlab.generate() for this model."
        )
    return list(layers)


def _full_attention(layer: Any) -> bool:
    """A layer that keeps every position's keys and values (not a sliding window)."""
    keys = getattr(layer, "keys", None)
    return isinstance(keys, Tensor) and keys.ndim == 4 and not getattr(layer, "is_sliding", False)


def _pad_left(t: Tensor, width: int) -> Tensor:
    """Zero-pad the position axis (dim 2 of a KV tensor, dim 1 of a mask) on the left."""
    axis = 2 if t.ndim == 4 else 1
    extra = width - t.shape[axis]
    if extra == 0:
        return t
    shape = list(t.shape)
    shape[axis] = extra
    return torch.cat([t.new_zeros(shape), t], dim=axis)


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


def _position_mask(positions: PositionSpec, pos: Int[Tensor, " n"], prompt_len: int) -> Tensor:
    """Which of a row's input positions its steering touches (``pos`` from its first token)."""
    if positions == "all":
        return torch.ones_like(pos, dtype=torch.bool)
    if positions == "prompt":
        return pos < prompt_len
    if positions == "generated":
        return pos >= prompt_len
    assert isinstance(positions, slice)
    return slice_mask(pos, positions)


def _row_hooks(
    rows: Sequence[_Row], pos: Int[Tensor, "b n"], real: Tensor, model: SteerlabModel
) -> list[tuple[str, Any]]:
    """One hook per steered site adding ``mask[b, p] * delta[b]`` (zero for other rows)."""
    names = sorted({name for r in rows for name in r.deltas})
    if not names:
        return []
    mask = torch.stack(
        [_position_mask(r.positions, pos[i], r.prompt_len) & real[i] for i, r in enumerate(rows)]
    )
    zeros = torch.zeros(model.d_model, device=model.device, dtype=model.dtype)
    hooks = []
    for name in names:
        delta = torch.stack([r.deltas.get(name, zeros) for r in rows])  # [batch, d_model]
        hooks.append((name, _delta_hook(mask, delta)))
    return hooks


def _delta_hook(mask: Tensor, delta: Tensor) -> Any:
    def hook(x: Tensor, hook: Any) -> Tensor:
        d = delta.to(dtype=x.dtype)[:, None, :]
        return x + mask[:, :, None].to(x.dtype) * d

    return hook


def _sample(logits: Float[Tensor, "1 v"], row: _Row) -> int:
    """A sampled token with the row's own generator (as ``generate`` samples one prompt)."""
    spec = row.spec
    probs = torch.softmax(logits.float() / spec.temperature, dim=-1)
    if spec.top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < spec.top_p
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p * keep)
        probs = probs / probs.sum(-1, keepdim=True)
    return int(torch.multinomial(probs.cpu(), 1, generator=row.generator)[0, 0])


def generate_rows(
    model: SteerlabModel, specs: Sequence[RowSpec], max_batch_size: int = 16
) -> list[list[int]]:
    """Every spec's generated token ids (EOS dropped), decoded together in one batch."""
    dec = BatchedDecoder(model, max_batch_size)
    for i, spec in enumerate(specs):
        dec.join(i, spec)
    out: list[list[int]] = [[] for _ in specs]
    while not dec.idle:
        for e in dec.step():
            if e.token is not None:
                out[e.key].append(e.token)  # type: ignore[index]
    return out
