"""A hook-free forward of Llama-family decoder blocks (Llama, Mistral, Qwen2).

The fast paths (BiPO training, the fast likelihood margin, the fast KL damage) run the
layers above one site thousands of times. Through ``TransformerBridge`` each block goes
through its hook points and an eager attention; :func:`fast_blocks` gives the same
computation on the model's own weights (read at call time, so a temporary cast of them
applies) with fused attention (``scaled_dot_product_attention``, grouped-query heads
without copies; on CPUs, rows of at most 512 positions as two batched matrix products:
:class:`~steerlab.models.attention.Attention`)
and nothing else: about 1.25x faster forward + backward on the embedded
model, equal within float rounding (tested against the bridge on every supported
architecture of the tiny matrix). Given the rows' lengths it runs every token-wise matmul
on the real tokens only (padding exists only inside attention, where it is masked), and
given the positions that will be read it runs the last block's output projection and MLP
there only (together 0.97x the time of a padded BiPO epoch on the embedded model,
in-process A/B, 5 rounds). Given ``shared``, a prefix common to every row (a chat
template's system prompt) runs once per group of rows (``leaders``) (0.89-0.93x the
time of BiPO steps and 0.93x of RePS steps on the embedded model's power-seeking pairs,
whose 18-token system prefix is 11% of the tokens; 0.87-0.89x the fast margin and KL
damage: ``benchmarks/shared_prefix.py``).

It is used only where it is exact: a supported architecture (:data:`SUPPORTED`: SiLU
gated MLP, RMSNorm, rotary positions over the whole head, no logit soft-capping), no
sliding window shorter than the batch, and no hook of the user's on the blocks it would
skip. Everything else keeps the bridge's forward. ``use_fast_blocks(False)`` forces the
bridge (parity tests, debugging).
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from steerlab.errors import ConfigError
from steerlab.models.attention import Attention
from steerlab.models.model import SteerlabModel
from steerlab.utils.gemm import linear

#: Hugging Face ``model_type`` values whose decoder blocks :class:`FastBlocks` computes.
SUPPORTED = ("llama", "mistral", "qwen2")

_enabled: ContextVar[bool] = ContextVar("steerlab_fast_blocks", default=True)
_cache: "WeakKeyDictionary[Any, FastBlocks | None]" = WeakKeyDictionary()


@contextmanager
def use_fast_blocks(enabled: bool) -> Iterator[None]:
    """Meanwhile, let the fast paths use :class:`FastBlocks` (True, the default) or
    always the bridge's forward (False)."""
    token = _enabled.set(enabled)
    try:
        yield
    finally:
        _enabled.reset(token)


@dataclass(frozen=True, eq=False)
class _Block:
    ln1: torch.nn.Module
    q: torch.nn.Linear
    k: torch.nn.Linear
    v: torch.nn.Linear
    o: torch.nn.Linear
    ln2: torch.nn.Module
    gate: torch.nn.Linear
    up: torch.nn.Linear
    down: torch.nn.Linear
    hooks: tuple[torch.nn.Module, ...]  # the bridge's hook points of this block


def _rms(x: Tensor, norm: torch.nn.Module) -> Tensor:
    """RMSNorm as Hugging Face's Llama computes it (statistics in fp32)."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * xf.to(x.dtype)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


def _lin(x: Tensor, lin: torch.nn.Linear) -> Tensor:
    return linear(x, lin.weight, lin.bias)


@dataclass(frozen=True, eq=False)
class FastBlocks:
    """The decoder blocks of one Llama-family model, run without hooks."""

    blocks: tuple[_Block, ...]
    norm: torch.nn.Module
    rotary: torch.nn.Module
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scaling: float
    sliding_window: int | None
    top_hooks: tuple[torch.nn.Module, ...]  # hook points of the final norm
    embed: torch.nn.Embedding
    embed_hooks: tuple[torch.nn.Module, ...]  # hook points of the embedding

    def applies(self, start: int, width: int, stop: int | None = None) -> bool:
        """Whether running blocks ``start..stop-1`` (``stop`` None: all, then the final
        norm; ``start`` 0: the embedding first) equals the bridge's forward: no forward
        hook on the hook points it skips, no sliding window shorter than ``width``."""
        if not _enabled.get():
            return False
        if self.sliding_window is not None and width > self.sliding_window:
            return False
        points = [h for b in self.blocks[start:stop] for h in b.hooks]
        points += list(self.top_hooks) if stop is None else []
        points += list(self.embed_hooks) if start == 0 else []
        return not any(h._forward_hooks or h._forward_pre_hooks for h in points)

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"],
        position_ids: Int[Tensor, "batch pos"],
        allowed: Bool[Tensor, "batch pos pos"],
        start: int,
        adds: Mapping[int, Tensor] | None = None,
        *,
        lengths: Int[Tensor, " batch"] | None = None,
        at: tuple[Tensor, Tensor] | None = None,
        shared: int = 0,
        leaders: Int[Tensor, " batch"] | None = None,
    ) -> Float[Tensor, "..."]:
        """Blocks ``start..`` on the residual ``x`` entering block ``start``, then the final
        norm. ``allowed[b, i, j]``: query ``i`` may attend to key ``j``; ``adds[layer]`` is
        added to the residual after that block (broadcast against ``[batch, pos, d_model]``,
        cast to its dtype).

        ``lengths``: right-padded rows, row ``b`` real up to ``lengths[b]``: the pads are
        never computed (every token-wise matmul runs on real tokens only; attention sees
        zeros at the pads, which ``allowed`` masks). ``at = (rows, pos)``: return only
        those positions (``[n, d_model]``), and the last block's output projection and
        MLP run only there. Without ``at``: ``[batch, pos, d_model]`` (zeros at pads).

        ``shared``: positions ``0..shared-1`` of row ``b`` are the same computation as in
        row ``leaders[b]`` (default: row 0 for all; equal residuals, position ids,
        attention among themselves and ``adds``, as a prompt prefix common to the batch):
        they run once, in the leader, and the other rows' queries read the leader's keys
        and values there. The outputs equal the unshared forward's; the gradient reaching
        those positions lands on the leader's (summed over its group), which is exact for
        a residual tied within each group, such as ``cache + d * v`` with one ``d`` per
        group. A leader must be its own leader.
        """
        grid = _Grid.of(x, lengths, shared, leaders)
        out = self._run(grid, grid.pack(x), position_ids, allowed, start, len(self.blocks),
                        adds or {}, at)  # fmt: skip
        out = _rms(out, self.norm)
        return out if at is not None else grid.unpack(out)

    def residual(
        self,
        ids: Int[Tensor, "batch pos"],
        position_ids: Int[Tensor, "batch pos"],
        allowed: Bool[Tensor, "batch pos pos"],
        layer: int,
        *,
        lengths: Int[Tensor, " batch"] | None = None,
        shared: int = 0,
    ) -> Float[Tensor, "batch pos d_model"]:
        """``resid_post`` of ``layer``: the embedding, then blocks ``0..layer``.
        ``lengths`` and ``shared`` as in :meth:`forward` (zeros at pads; the ``shared``
        leading tokens, equal in every row, computed once and copied to every row)."""
        x = self.embed(ids)
        grid = _Grid.of(x, lengths, shared)
        return grid.unpack(self._run(grid, grid.pack(x), position_ids, allowed, 0, layer + 1, {}))

    def _run(
        self,
        grid: "_Grid",
        x: Float[Tensor, "tok d_model"],
        position_ids: Int[Tensor, "batch pos"],
        allowed: Bool[Tensor, "batch pos pos"],
        start: int,
        stop: int,
        adds: Mapping[int, Tensor],
        at: tuple[Tensor, Tensor] | None = None,
    ) -> Float[Tensor, "out d_model"]:
        """Blocks ``start..stop-1`` on the tokens of ``grid`` (no final norm); with ``at``,
        the last block's output only at those positions."""
        n = x.shape[0]
        cos, sin = self.rotary(x, position_ids)
        cos, sin = grid.pack(cos).unsqueeze(1), grid.pack(sin).unsqueeze(1)
        hq, hk, hd = self.n_heads, self.n_kv_heads, self.head_dim
        attend = Attention.of(x, allowed, hq, hk, self.scaling)
        where = (grid.rows, grid.pos)
        for i in range(start, stop):
            blk = self.blocks[i]
            h = _rms(x, blk.ln1)
            q = _rotate(_lin(h, blk.q).view(n, hq, hd), cos, sin)
            k = _rotate(_lin(h, blk.k).view(n, hk, hd), cos, sin)
            v = _lin(h, blk.v).view(n, hk, hd)
            a = grid.pack(attend(*(grid.unpack(t) for t in (q, k, v)))).reshape(n, hq * hd)
            if at is not None and i == stop - 1:  # only these outputs are read
                sel = grid.index(*at)
                x, a, where = x[sel], a[sel], at
            x = x + _lin(a, blk.o)
            h = _rms(x, blk.ln2)
            x = x + _lin(F.silu(_lin(h, blk.gate)) * _lin(h, blk.up), blk.down)
            if i in adds:
                x = x + grid.at(adds[i], *where).to(x.dtype)
        return x


@dataclass(frozen=True, eq=False)
class _Grid:
    """The ``[batch, pos]`` grid of a right-padded batch and the tokens computed on it:
    all of them in row-major order (``flat`` and ``src`` None), or the real ones, each
    computed once (``flat``: the grid position of each token; ``src``: the token each grid
    position reads, the extra token ``tok`` (zeros) at pads, the leader's token at the
    other rows' shared positions)."""

    batch: int
    width: int
    rows: Int[Tensor, " tok"]
    pos: Int[Tensor, " tok"]
    flat: Int[Tensor, " tok"] | None
    src: Int[Tensor, " grid"] | None
    lengths: Int[Tensor, " batch"]  # real tokens per row

    @classmethod
    def of(
        cls, x: Tensor, lengths: Tensor | None, shared: int = 0, leaders: Tensor | None = None
    ) -> "_Grid":
        b, t = int(x.shape[0]), int(x.shape[1])
        dev = x.device
        lengths = torch.full((b,), t, device=dev) if lengths is None else lengths.to(dev)
        lead = torch.zeros(b, dtype=torch.long, device=dev) if leaders is None else leaders.to(dev)
        if lead.shape != (b,) or bool((lead < 0).any() | (lead >= b).any()):
            raise ConfigError(f"leaders= needs one row index per row, got {lead.tolist()}.")
        if not bool((lead[lead] == lead).all()):
            raise ConfigError(f"leaders={lead.tolist()}: a leader must be its own leader.")
        follows = lead != torch.arange(b, device=dev)
        shared = min(int(shared), int(lengths.min())) if bool(follows.any()) else 0
        if shared <= 0 and bool((lengths >= t).all()):
            rows = torch.arange(b, device=dev).repeat_interleave(t)
            pos = torch.arange(t, device=dev).repeat(b)
            return cls(b, t, rows, pos, None, None, lengths.clamp(max=t))
        own = torch.arange(t, device=dev)[None, :] < lengths[:, None]
        if shared > 0:
            own[follows, :shared] = False  # followers read their leader's shared tokens
        flat = own.reshape(-1).nonzero().squeeze(1)
        n = int(flat.numel())
        src = torch.full((b * t,), n, dtype=torch.long, device=dev)
        src[flat] = torch.arange(n, device=dev)
        if shared > 0:  # leaders own their shared positions: copy their token indices
            grid = src.view(b, t)
            grid[follows, :shared] = grid[lead[follows], :shared]
        return cls(b, t, flat // t, flat % t, flat, src, lengths)

    def pack(self, y: Tensor) -> Tensor:
        """``[batch, pos, ...]`` -> ``[tok, ...]``."""
        y = y.reshape(self.batch * self.width, *y.shape[2:])
        return y if self.flat is None else y.index_select(0, self.flat)

    def unpack(self, y: Tensor) -> Tensor:
        """``[tok, ...]`` -> ``[batch, pos, ...]``: zeros at pads, the leader's values at
        the other rows' shared positions (whose gradient then lands on the leader's)."""
        if self.src is not None:
            y = torch.cat((y, y.new_zeros(1, *y.shape[1:]))).index_select(0, self.src)
        return y.view(self.batch, self.width, *y.shape[1:])

    def index(self, rows: Tensor, pos: Tensor) -> Tensor:
        """Token indices of grid positions ``(rows, pos)``; a ConfigError for a position
        that is not a real token (a pad, or outside the grid)."""
        rows, pos = rows.to(self.lengths.device), pos.to(self.lengths.device)
        bad = (rows < 0) | (rows >= self.batch) | (pos < 0)
        bad |= pos >= self.lengths[rows.clamp(0, self.batch - 1)]
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ConfigError(
                f"at= asks for row {int(rows[i])}, position {int(pos[i])}, which is not a real "
                f"token (rows have lengths {self.lengths.tolist()} in a batch of {self.batch}). "
                "Fix: read only positions below each row's length."
            )
        grid = rows * self.width + pos
        return grid if self.src is None else self.src[grid]

    def at(self, delta: Tensor, rows: Tensor, pos: Tensor) -> Tensor:
        """``delta`` broadcast against ``[batch, pos, d]``, at positions ``(rows, pos)``."""
        d = delta.shape[-1]
        full = torch.broadcast_to(delta, (self.batch, self.width, d))
        return full[rows.to(delta.device), pos.to(delta.device)]


def _component(module: Any) -> Any:
    return getattr(module, "original_component", module)


def _hook_points(module: torch.nn.Module) -> tuple[torch.nn.Module, ...]:
    from transformer_lens.hook_points import HookPoint

    return tuple(m for m in module.modules() if isinstance(m, HookPoint))


def _build(model: SteerlabModel) -> FastBlocks | None:
    bridge = model.bridge
    hf = getattr(bridge, "original_model", None)
    cfg = getattr(hf, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in SUPPORTED:
        return None
    if getattr(cfg, "hidden_act", None) != "silu" or getattr(cfg, "final_logit_softcapping", None):
        return None
    inner = getattr(hf, "model", None)
    rotary = _component(getattr(inner, "rotary_emb", None))
    if rotary is None or getattr(cfg, "partial_rotary_factor", 1.0) != 1.0:
        return None
    blocks = []
    for blk in bridge.blocks:
        attn, mlp = _component(blk.attn), _component(blk.mlp)
        names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        parts = [_component(getattr(attn if n[0] in "qkvo" else mlp, n, None)) for n in names]
        if not all(isinstance(p, torch.nn.Linear) for p in parts):
            return None
        ln1, ln2 = _component(blk.ln1), _component(blk.ln2)
        if not all(hasattr(n, "variance_epsilon") for n in (ln1, ln2)):
            return None
        q, k, v, o, gate, up, down = parts
        blocks.append(_Block(ln1, q, k, v, o, ln2, gate, up, down, _hook_points(blk)))
    norm = _component(bridge.ln_final)
    embed = _component(bridge.embed)
    if not isinstance(embed, torch.nn.Embedding):  # the SUPPORTED families do not scale it
        return None
    attn0 = _component(bridge.blocks[0].attn)
    head_dim = int(getattr(attn0, "head_dim", cfg.hidden_size // cfg.num_attention_heads))
    if not hasattr(norm, "variance_epsilon"):
        return None
    return FastBlocks(
        blocks=tuple(blocks),
        norm=norm,
        rotary=rotary,
        n_heads=int(cfg.num_attention_heads),
        n_kv_heads=int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads),
        head_dim=head_dim,
        scaling=float(getattr(attn0, "scaling", head_dim**-0.5)),
        sliding_window=getattr(cfg, "sliding_window", None),
        top_hooks=_hook_points(bridge.ln_final),
        embed=embed,
        embed_hooks=_hook_points(bridge.embed),
    )


def fast_blocks(model: SteerlabModel) -> FastBlocks | None:
    """The model's :class:`FastBlocks`, or None for an architecture it does not cover
    (built once per model)."""
    key = model.bridge
    if key not in _cache:
        _cache[key] = _build(model)
    return _cache[key]
