"""The packed-pair forward: one row per preference pair, cached lower residuals, and the
layers above a site with the unembedding at response positions only.

Shared by BiPO training (``steerlab.vectors.bipo``), the fast likelihood margin
(``steerlab.evaluation.likelihood_fast``) and the fast KL damage
(``steerlab.evaluation.damage_fast``).

Packing: ``prompt + matching + not_matching`` share one row; the not-matching tokens may
not attend to the matching ones and take the position ids that follow the prompt, so each
response sees exactly the context it would see alone while the prompt is computed once
for both (attention is causal: the prompt never sees either response). Each response's
last token is left out of the row: it is predicted (its log-prob is scored from the
position before it) but predicts nothing scored, and no other position attends to it
(the not-matching tokens may not see the matching ones), so computing it would change no
log-prob; two fewer tokens per pair (~2% of an epoch's FLOPs on the embedded model's
power-seeking pairs).

Forward: TransformerBridge's ``forward(start_at_layer=k)`` injects a residual at block
``k`` but still runs blocks ``0..k-1`` and discards their output. :func:`skip_lower_blocks`
makes those blocks return their input unchanged for the duration of a call, so the work
below the site is really skipped. :func:`final_hidden_only` makes the unembedding an
identity so the bridge returns the final normalised residual; log-probs are then taken
only where a response token is predicted.

Cache: :func:`build_cache` stores, per pair, the packed tokens, ``resid_post`` of one
layer and the unsteered (reference) log-probs of both responses. Under bf16 autocast it
also records whether those log-probs are the same in any batch (``batch_invariant``: on a
CPU, where every batch's attention runs as batched products, checked on a few pairs
alone and together); BiPO then uses them as cached instead of recomputing the reference
in every step's batch.
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from steerlab.activations.batch import length_sorted_batches
from steerlab.activations.capture import capture
from steerlab.activations.gathered import gathered_logprobs, plain_gathered_logprobs
from steerlab.activations.prompts import encode_pair
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.attention import matmul_attention_applies
from steerlab.models.chat import EncodedText
from steerlab.models.fast_blocks import fast_blocks
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.utils.progress import progress_bar

_share: ContextVar[bool] = ContextVar("steerlab_shared_prefix", default=True)

# --- packing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackedPair:
    prompt: tuple[int, ...]
    matching: tuple[int, ...]
    not_matching: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.prompt or not self.matching or not self.not_matching:
            raise EmptyInputError(
                "A BiPO pair needs a non-empty prompt and two non-empty responses."
            )

    @property
    def ids(self) -> tuple[int, ...]:
        """The row: the prompt, then each response without its last token (which no
        scored position reads; see the module's docstring)."""
        return self.prompt + self.matching[:-1] + self.not_matching[:-1]

    def __len__(self) -> int:
        return len(self.prompt) + len(self.matching) + len(self.not_matching) - 2

    @property
    def n_tokens(self) -> int:
        """Tokens of the prompt and both responses, each once (the row leaves two out)."""
        return len(self.prompt) + len(self.matching) + len(self.not_matching)

    @property
    def not_matching_start(self) -> int:
        """Where the not-matching tokens begin in the row."""
        return len(self.prompt) + len(self.matching) - 1

    def position_ids(self) -> list[int]:
        p, r = len(self.prompt), len(self.not_matching)
        return list(range(self.not_matching_start)) + list(range(p, p + r - 1))

    def targets(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """(positions, tokens) whose logits predict the matching / not-matching tokens."""
        p, c, r = len(self.prompt), len(self.matching), len(self.not_matching)
        s = self.not_matching_start
        pos_m = list(range(p - 1, p + c - 1))
        pos_n = [p - 1] + list(range(s, s + r - 1))
        return pos_m, list(self.matching), pos_n, list(self.not_matching)


def pack(pos: EncodedText, neg: EncodedText) -> PackedPair:
    if pos.prompt_ids != neg.prompt_ids:
        raise ValueError("The two sides of a pair must share the prompt.")
    return PackedPair(pos.prompt_ids, pos.response_ids, neg.response_ids)


def eos_token_id(model: SteerlabModel) -> int:
    """The tokenizer's EOS id; a :class:`~steerlab.errors.ConfigError` when it has none."""
    eos = getattr(model.tokenizer, "eos_token_id", None)
    if eos is None:
        raise ConfigError(
            f"{model.model_id}: the tokenizer has no EOS token (eos_token_id is None), so "
            "responses cannot end with one. Fix: score_eos=False, or a tokenizer with an EOS."
        )
    return int(eos)


def pack_pairs(
    model: SteerlabModel, pairs: Sequence[Any], *, score_eos: bool = False
) -> list[PackedPair]:
    """Encode and pack ``pairs``; ``score_eos``: each response ends with the EOS token
    (scored like its other tokens, as BiPO's reference code tokenises responses)."""
    packed = [pack(*encode_pair(model, p)) for p in pairs]
    if not score_eos:
        return packed
    eos = (eos_token_id(model),)
    return [PackedPair(p.prompt, p.matching + eos, p.not_matching + eos) for p in packed]


@dataclass(frozen=True)
class PackedBatch:
    """Right-padded packed pairs with their 4-D attention mask and target index lists.

    tgt_row/tgt_pos/tgt_tok: one entry per predicted response token;
    tgt_seg: ``2 * example + side`` (side 0 = matching, 1 = not matching);
    shared: the leading positions whose tokens are the same in every row and attend only
    causally among themselves (inside every pair's prompt; a chat template's system
    prefix): with equal residuals there (:func:`shared_positions`) the fast blocks compute
    them once.
    """

    ids: Int[Tensor, "batch pos"]
    position_ids: Int[Tensor, "batch pos"]
    allowed: Bool[Tensor, "batch pos pos"]
    lengths: Int[Tensor, " batch"]
    tgt_row: Int[Tensor, " n_tok"]
    tgt_pos: Int[Tensor, " n_tok"]
    tgt_tok: Int[Tensor, " n_tok"]
    tgt_seg: Int[Tensor, " n_tok"]
    shared: int = 0

    @property
    def batch(self) -> int:
        return int(self.ids.shape[0])

    def attention_mask(self, dtype: torch.dtype) -> Float[Tensor, "batch 1 pos pos"]:
        """Additive 4-D mask: 0 where attention is allowed, the dtype's minimum elsewhere."""
        zero = torch.zeros((), dtype=dtype, device=self.allowed.device)
        neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=self.allowed.device)
        return torch.where(self.allowed, zero, neg).unsqueeze(1)

    def to(self, device: "torch.device | str") -> "PackedBatch":
        fields = (self.ids, self.position_ids, self.allowed, self.lengths)
        targets = (self.tgt_row, self.tgt_pos, self.tgt_tok, self.tgt_seg)
        return PackedBatch(*(t.to(device) for t in fields + targets), shared=self.shared)


def collate(pairs: Sequence[PackedPair], pad_id: int) -> PackedBatch:
    if not pairs:
        raise EmptyInputError("Cannot collate zero pairs.")
    width = max(len(p) for p in pairs)
    b = len(pairs)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    pos_ids = torch.zeros((b, width), dtype=torch.long)
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    allowed = causal.repeat(b, 1, 1)
    rows, poss, toks, segs = [], [], [], []
    for i, p in enumerate(pairs):
        n, np_, s = len(p), len(p.prompt), p.not_matching_start
        ids[i, :n] = torch.tensor(p.ids)
        pos_ids[i, :n] = torch.tensor(p.position_ids())
        if n < width:  # padding: keep positions increasing; pad keys are masked below
            pos_ids[i, n:] = torch.arange(n, width)
        allowed[i, s:n, np_:s] = False  # not-matching can't see matching
        allowed[i, :n, n:] = False
        pm, tm, pn, tn = p.targets()
        rows += [i] * (len(pm) + len(pn))
        poss += pm + pn
        toks += tm + tn
        segs += [2 * i] * len(pm) + [2 * i + 1] * len(pn)
    lengths = torch.tensor([len(p) for p in pairs], dtype=torch.long)
    targets = (torch.tensor(rows), torch.tensor(poss), torch.tensor(toks), torch.tensor(segs))
    return PackedBatch(
        ids, pos_ids, allowed, lengths, *targets, shared=common_prefix([p.prompt for p in pairs])
    )


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix all ``rows`` share (0 for a single row)."""
    if len(rows) < 2:
        return 0
    first, n = rows[0], min(len(r) for r in rows)
    for r in rows[1:]:
        n = next((i for i in range(n) if r[i] != first[i]), n)
    return n


@contextmanager
def use_shared_prefix(enabled: bool) -> Iterator[None]:
    """Meanwhile, let the fast paths compute a batch's common prefix once (True, the
    default) or in every row (False: A/B checks, debugging). Results are equal either
    way (tested); only the time differs."""
    token = _share.set(enabled)
    try:
        yield
    finally:
        _share.reset(token)


def shared_positions(batch: PackedBatch, resid: Tensor, leaders: Tensor | None = None) -> int:
    """How many of ``batch.shared`` leading positions also hold the same residual
    (bitwise) in every row of ``resid`` ``[batch, pos, d_model]`` as in its leader
    (``leaders[b]``; default row 0): the positions :func:`upper_hidden` may compute once
    per leader (0 under ``use_shared_prefix(False)``)."""
    n = min(batch.shared, int(resid.shape[1])) if _share.get() else 0
    if n == 0 or resid.shape[0] < 2:
        return 0
    lead = torch.zeros(resid.shape[0], dtype=torch.long) if leaders is None else leaders
    same = (resid[:, :n] == resid[lead.to(resid.device), :n]).all(-1).all(0)
    return n if bool(same.all()) else int((~same).nonzero()[0, 0])


def sign_leaders(d: Tensor) -> Tensor:
    """For per-row coefficients ``d``: the first row with each row's value (the rows
    that add ``d * v`` with the same ``d`` share a prefix, :func:`shared_positions`)."""
    values = d.tolist()
    return torch.tensor([values.index(x) for x in values], dtype=torch.long)


def sequence_logprobs(
    token_logprobs: Float[Tensor, " n_tok"], batch: PackedBatch
) -> tuple[Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """Sum token log-probs per (example, side) -> (matching, not_matching) per example."""
    sums = torch.zeros(2 * batch.batch, dtype=token_logprobs.dtype, device=token_logprobs.device)
    sums = sums.index_add(0, batch.tgt_seg.to(token_logprobs.device), token_logprobs)
    sums = sums.view(batch.batch, 2)
    return sums[:, 0], sums[:, 1]


# --- the forward above a layer --------------------------------------------------------------


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


def autocast_to(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device`` (None: no autocast)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def upper_linears(model: SteerlabModel, start: int) -> list[torch.nn.Linear]:
    """The linear maps of blocks ``start..`` and the unembedding: what the fast paths'
    forward above a site multiplies by."""
    blocks = list(model.bridge.blocks)[start:]
    mods = [m for b in blocks for m in b.modules()] + [unembed_linear(model)]
    return [m for m in mods if isinstance(m, torch.nn.Linear)]


@contextmanager
def low_precision_weights(
    model: SteerlabModel, start: int, dtype: torch.dtype | None
) -> Iterator[None]:
    """Meanwhile, hold the linear weights (and biases) of blocks ``start..`` and of the
    unembedding in ``dtype`` (None: no change); restored on exit, also on errors.

    Autocast casts a frozen fp32 weight on every call; a ``dtype`` weight is used as is,
    with the same rounding: bit-identical results without the copies. Only the forward
    above ``start``, under autocast, may run inside (the lower blocks and a tied
    embedding would see ``dtype`` weights); no other forward of the model meanwhile.
    """
    if dtype is None:
        yield
        return
    linears = upper_linears(model, start)
    saved: dict[int, tuple[torch.nn.Parameter, Tensor]] = {}
    for m in linears:
        for p in (m.weight, m.bias):
            if p is not None and id(p) not in saved and p.dtype != dtype:
                saved[id(p)] = (p, p.data)
    try:
        for p, data in saved.values():
            p.data = data.to(dtype)
        yield
    finally:
        for p, data in saved.values():
            p.data = data


def lower_residuals(
    model: SteerlabModel, batch: PackedBatch, layer: int
) -> Float[Tensor, "batch pos d_model"]:
    """``resid_post`` of ``layer`` for a packed batch, without any vector (no grad).
    Where the fast blocks run, pads are not computed (zeros) and the batch's common
    prefix (``batch.shared``) is computed once."""
    fast = fast_blocks(model)
    if fast is not None and fast.applies(0, int(batch.ids.shape[1]), stop=layer + 1):
        shared = batch.shared if _share.get() else 0
        with torch.no_grad():
            return fast.residual(batch.ids, batch.position_ids, batch.allowed, layer,
                                 lengths=batch.lengths, shared=shared)  # fmt: skip
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
    """Log-probs of ``tokens`` at ``hidden`` through the model's linear unembedding: the
    one-matmul-backward :func:`~steerlab.activations.gathered.gathered_logprobs` in fp32
    without autocast, the plain composition otherwise."""
    lin = unembed_linear(model)
    assert lin is not None
    fp32 = hidden.dtype == lin.weight.dtype == torch.float32
    if fp32 and not torch.is_autocast_enabled(hidden.device.type):
        return gathered_logprobs(hidden, lin.weight, lin.bias, tokens)
    return plain_gathered_logprobs(hidden, lin.weight, lin.bias, tokens)


def _bridge_hooks(model: SteerlabModel, adds: Mapping[HookSite, Tensor]) -> list:
    return [(s.hook_name(model), add_hook(delta)) for s, delta in adds.items()]


def upper_hidden(
    model: SteerlabModel,
    resid: Float[Tensor, "batch pos d_model"],
    batch: PackedBatch,
    layer: int,
    adds: Mapping[HookSite, Tensor] | None = None,
    shared: int = 0,
    leaders: Tensor | None = None,
) -> Float[Tensor, "n_tok d_model"]:
    """The final normalised residual at the target positions, running only the layers
    above ``layer`` (the unembedding is left to the caller).

    ``resid`` is the residual after block ``layer`` (a steering vector already added);
    ``adds`` are added at sites above ``layer`` (multi-layer vectors), broadcast against
    the activation. Llama-family models run :class:`~steerlab.models.fast_blocks.FastBlocks`
    (no hooks, fused attention) where it applies, the others the bridge's blocks.
    ``shared``: leading positions that are one computation in every row and its leader
    (``leaders``, default row 0; :func:`shared_positions`; the same ``adds`` in a row
    and its leader): the fast blocks run them once per leader, and their gradient lands
    on the leader (see ``FastBlocks.forward``).
    """
    adds = dict(adds or {})
    start = layer + 1
    if start >= model.n_layers:  # a site after the last block: only the final norm remains
        if adds:
            raise ConfigError(f"Nothing runs above layer {layer}: cannot add at {list(adds)}.")
        return model.bridge.ln_final(resid)[batch.tgt_row, batch.tgt_pos]
    fast = fast_blocks(model)
    if (
        fast is not None
        and all(s.kind == "resid_post" for s in adds)
        and fast.applies(start, int(resid.shape[1]))
    ):
        return fast.forward(
            resid,
            batch.position_ids,
            batch.allowed,
            start,
            {s.layer: delta for s, delta in adds.items()},
            lengths=batch.lengths,
            at=(batch.tgt_row, batch.tgt_pos),
            shared=shared,
            leaders=leaders,
        )
    mask = batch.attention_mask(resid.dtype if resid.is_floating_point() else model.dtype)
    with ExitStack() as stack:
        stack.enter_context(final_hidden_only(model))
        if adds:
            stack.enter_context(model.bridge.hooks(fwd_hooks=_bridge_hooks(model, adds)))
        stack.enter_context(skip_lower_blocks(model, start))
        hidden = model.bridge(
            resid, start_at_layer=start, attention_mask=mask, position_ids=batch.position_ids
        )
    return hidden[batch.tgt_row, batch.tgt_pos]


def upper_token_logprobs(
    model: SteerlabModel,
    resid: Float[Tensor, "batch pos d_model"],
    batch: PackedBatch,
    layer: int,
    adds: Mapping[HookSite, Tensor] | None = None,
    shared: int = 0,
    leaders: Tensor | None = None,
) -> Float[Tensor, " n_tok"]:
    """Log-probs of the response tokens, running only the layers above ``layer``
    (:func:`upper_hidden`, then the unembedding at the target positions only)."""
    hidden = upper_hidden(model, resid, batch, layer, adds, shared, leaders)
    return token_logprobs_from_hidden(model, hidden, batch.tgt_tok)


def add_hook(delta: Tensor) -> Any:
    """A TransformerLens hook adding ``delta`` (cast to the activation's dtype)."""

    def hook(x: Tensor, hook: Any) -> Tensor:
        return x + delta.to(x.dtype)

    return hook


def steered_upper_hidden(
    model: SteerlabModel,
    resid: Float[Tensor, "batch pos d_model"],
    batch: PackedBatch,
    deltas: Mapping[HookSite, Tensor],
    shared: int = 0,
) -> Float[Tensor, "n_tok d_model"]:
    """:func:`upper_hidden` of a steering given as per-site ``deltas`` (``resid_post``
    sites, e.g. ``Steering.deltas(model)``): ``resid`` is the unsteered residual after the
    lowest site's layer; its delta is added there, the others above it. ``shared``
    (:func:`shared_positions` of ``resid``) applies only when every delta is one vector
    for all rows (``[d_model]``)."""
    sites = sorted(deltas)
    low = sites[0]
    adds = {s: deltas[s] for s in sites[1:]}
    shared = shared if all(d.dim() == 1 for d in deltas.values()) else 0
    x = resid + deltas[low].to(resid.dtype)
    return upper_hidden(model, x, batch, low.layer, adds, shared)


def full_token_logprobs(
    model: SteerlabModel, batch: PackedBatch, hooks: Sequence[tuple[str, Any]] = ()
) -> Float[Tensor, " n_tok"]:
    """Slow fallback and reference: full forward, full-vocabulary logits."""
    mask = batch.attention_mask(model.dtype)
    with model.bridge.hooks(fwd_hooks=list(hooks)):
        logits = model.bridge(batch.ids, attention_mask=mask, position_ids=batch.position_ids)
    lp = logits[batch.tgt_row, batch.tgt_pos].float().log_softmax(-1)
    return lp.gather(1, batch.tgt_tok[:, None]).squeeze(1)


# --- the cache ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReferenceCache:
    """Per pair: the packed tokens and the reference (unsteered) log-probs of both
    responses, computed under ``autocast``: what BiPO's fast and plain caches share.

    ``batch_invariant``: under ``autocast``, a pair's reference log-probs are the same
    (bitwise) in whatever batch they are computed, so the cached ones stand for the
    policy's batch. Without autocast the cached ones are always used: fp32 log-probs move
    with the batch by rounding only (up to ~6e-5 nats per response on the embedded
    model), so BiPO's first loss is log 2 to rounding."""

    packed: tuple[PackedPair, ...]
    ref_matching: Tensor
    ref_not_matching: Tensor
    layer: int
    autocast: torch.dtype | None = None
    batch_invariant: bool = False

    @property
    def lengths(self) -> list[int]:
        return [len(p) for p in self.packed]

    @property
    def nbytes(self) -> int:
        return 2 * self.ref_matching.numel() * 8


@dataclass(frozen=True, eq=False)
class PairCache(ReferenceCache):
    """A :class:`ReferenceCache` that also holds, per pair, the residual after ``layer``
    (``[len, d_model]``): the fast path starts each forward there."""

    residuals: tuple[Tensor, ...] = field(kw_only=True)

    @property
    def nbytes(self) -> int:
        return super().nbytes + sum(r.numel() * r.element_size() for r in self.residuals)

    def batch(
        self, idx: Sequence[int], pad_id: int, device: torch.device
    ) -> tuple[PackedBatch, Tensor]:
        b = collate([self.packed[i] for i in idx], pad_id).to(device)
        width = b.ids.shape[1]
        first = self.residuals[idx[0]]
        resid = torch.zeros(len(idx), width, first.shape[-1], dtype=first.dtype, device=device)
        for j, i in enumerate(idx):
            r = self.residuals[i]
            resid[j, : r.shape[0]] = r.to(device)
        return b, resid


@torch.no_grad()
def build_cache(
    model: SteerlabModel,
    pairs: Sequence[Any],
    layer: int,
    *,
    batch_size: int = 8,
    dtype: torch.dtype | None = None,
    autocast: torch.dtype | None = None,
    progress: bool = True,
    desc: str = "BiPO cache",
    score_eos: bool = False,
) -> PairCache:
    """Encode and pack ``pairs``; store ``resid_post`` of ``layer`` and reference log-probs
    (the same frozen model without any vector: no second model copy).

    ``autocast``: run the layers above ``layer`` for the reference log-probs under
    ``torch.autocast`` to this dtype, as the steered forward compared with them runs
    (BiPO's ``autocast_bf16``); None: no autocast. The residuals are never autocast.
    ``score_eos``: each response ends with the EOS token (:func:`pack_pairs`).
    """
    packed = pack_pairs(model, pairs, score_eos=score_eos)
    lengths = [len(p) for p in packed]
    residuals: list[Tensor | None] = [None] * len(packed)
    ref_m = torch.zeros(len(packed), dtype=torch.float64)
    ref_n = torch.zeros(len(packed), dtype=torch.float64)
    for idx in progress_bar(
        length_sorted_batches(lengths, batch_size), desc=desc, enabled=progress
    ):
        b = collate([packed[i] for i in idx], model.pad_token_id).to(model.device)
        resid = lower_residuals(model, b, layer)
        with autocast_to(model.device, autocast):
            lp = upper_token_logprobs(model, resid, b, layer, shared=shared_positions(b, resid))
        m, n = sequence_logprobs(lp.double(), b)  # summed as the steered log-probs are
        for j, i in enumerate(idx):
            residuals[i] = resid[j, : lengths[i]].to(dtype or resid.dtype).clone()
            ref_m[i], ref_n[i] = float(m[j]), float(n[j])
    kept = tuple(r for r in residuals if r is not None)
    cache = PairCache(tuple(packed), ref_m, ref_n, layer, autocast, residuals=kept)
    if autocast is not None and _products_throughout(model, cache):
        cache = replace(cache, batch_invariant=_same_in_other_batches(model, cache))
    return cache


def batch_reference_logprobs(
    model: SteerlabModel, cache: PairCache, idx: Sequence[int]
) -> tuple[Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """Summed unsteered log-probs of pairs ``idx`` computed in exactly this batch, under
    the cache's autocast, on the CPU (float64)."""
    batch, resid = cache.batch(idx, model.pad_token_id, model.device)
    with torch.no_grad(), autocast_to(model.device, cache.autocast):
        lp = upper_token_logprobs(
            model, resid, batch, cache.layer, shared=shared_positions(batch, resid)
        )
    m, n = sequence_logprobs(lp.double(), batch)
    return m.cpu(), n.cpu()


def _products_throughout(model: SteerlabModel, cache: PairCache) -> bool:
    """Whether every batch of the cache's pairs runs the hook-free blocks with attention
    as batched products (:func:`~steerlab.models.attention.matmul_attention_applies`):
    the computation whose rows do not depend on the batch."""
    width = max(cache.lengths, default=0)
    fast = fast_blocks(model)
    return (
        bool(cache.packed)
        and cache.autocast is not None
        and fast is not None
        and fast.applies(cache.layer + 1, width)
        and matmul_attention_applies(model.device, cache.autocast, width)
    )


def _same_in_other_batches(model: SteerlabModel, cache: PairCache, n: int = 6) -> bool:
    """A check that the cached reference log-probs do not depend on the batch: ``n``
    pairs spread over the lengths (the longest included), each alone and all together in
    reverse order, give bitwise the cached numbers. The trainer checks its first batch
    too (:meth:`~steerlab.vectors.bipo.trainer.BiPOTrainer.step`)."""
    order = sorted(range(len(cache.packed)), key=lambda i: cache.lengths[i])
    picks = sorted({order[round(k * (len(order) - 1) / max(1, n - 1))] for k in range(n)})
    for idx in [[i] for i in picks] + [picks[::-1]]:
        m, nm = batch_reference_logprobs(model, cache, idx)
        i = torch.as_tensor(idx)
        if not (
            torch.equal(m, cache.ref_matching[i]) and torch.equal(nm, cache.ref_not_matching[i])
        ):
            return False
    return True
