"""Masked softmax attention of the hook-free blocks (:mod:`steerlab.models.fast_blocks`):
the fused kernel, or on CPUs, for rows of at most 512 positions, two batched matrix
products."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

#: The precisions whose short rows :class:`Attention` computes as matrix products.
MATMUL_ATTENTION_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float32)
_matmul_attention: ContextVar[tuple[torch.dtype, ...]] = ContextVar(
    "steerlab_matmul_attention", default=MATMUL_ATTENTION_DTYPES
)


@contextmanager
def use_matmul_attention(
    enabled: bool, dtypes: tuple[torch.dtype, ...] = MATMUL_ATTENTION_DTYPES
) -> Iterator[None]:
    """Meanwhile, let :class:`Attention` compute short rows in ``dtypes`` as batched
    matrix products on CPUs (True, the default: bf16 and fp32) or always use the fused
    kernel (False). A/B runs and parity tests; ``dtypes`` narrows the precisions."""
    token = _matmul_attention.set(tuple(dtypes) if enabled else ())
    try:
        yield
    finally:
        _matmul_attention.reset(token)


#: The longest batch (positions) whose attention :class:`Attention` computes as
#: explicit matrix products on a CPU: in bf16 the fused kernel takes 2-3x the time of the
#: products for short rows (``benchmarks/attention_cpu.py``, Zen 4, 2 threads: the
#: products 0.30-0.49x its time forward + backward and 0.39-0.54x forward alone at 64-192
#: positions, 8 rows of the embedded model's heads; 0.6-1.06x at 256-320), and a BiPO epoch
#: under bf16 autocast took 0.88x the time (0.84x in an earlier probe outside the
#: repository). In fp32 the products win less but every time they were measured: the
#: kernels alone 0.83-1.15x forward + backward, a BiPO epoch 0.97-0.98x (sessions 20-21),
#: and the steps of a whole fp32 epoch 0.977x and 0.955x (session 22, in-process A/Bs over
#: the same batches, 3-4 interleaved rounds; probes outside the repository), so fp32 takes
#: them too since session 22.
#: With the products every bf16 row's result is the same in any batch (bitwise, on the Zen 4:
#: a row computed alone or among others of any width), while a batch that crosses this
#: width switches kernel and moves a response's log-prob by up to ~1 nat in bf16: so the
#: width is as large as memory allows (the fp32 scores of a block, 6 bytes per head and
#: position pair in bf16, 4 in fp32, are kept for the backward: ~57 and ~38 MB per block
#: for 4 rows of 512 of the embedded model's 9 heads), and BiPO
#: caches its bf16 reference when every pair fits (:func:`~steerlab.activations.packed.
#: build_cache`). It was 192 until session 21.
MATMUL_ATTENTION_MAX_POS = 512


#: Query positions per batched fp32 product where the mask is causal (no query sees a
#: later key): the queries of positions ``s..s+63`` are multiplied by the keys ``0..s+63`` only,
#: skipping the scores above the diagonal that the mask would zero (about a quarter of
#: them at the embedded model's ~110-position BiPO batches). The same numbers (the
#: skipped keys' weights are exactly 0; a BiPO batch's log-probs came out bitwise equal),
#: and the steps of an fp32 BiPO epoch took 0.989x the time of one product per block
#: (in-process A/B over the same 40 batches, 4 interleaved rounds, each faster; 32
#: positions: 1.000x, the calls' overhead eating the gain; probes outside the repository,
#: session 22). Not in bf16: there the keys' and values' gradients would be summed over
#: the query blocks in bf16 (up to 15% apart from a single product's in a test), and a
#: single product per decoder block keeps bf16 rows the same in any batch.
QUERY_BLOCK = 64


def matmul_attention_applies(device: torch.device, dtype: torch.dtype, width: int) -> bool:
    """Whether :class:`Attention` computes a batch of ``width`` positions on ``device``,
    computing in ``dtype``, as batched matrix products (else the fused kernel)."""
    return (
        device.type == "cpu"
        and width <= MATMUL_ATTENTION_MAX_POS
        and dtype in _matmul_attention.get()
    )


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype products on ``x`` run in: autocast's where it is on, else ``x``'s."""
    on = torch.is_autocast_enabled(x.device.type)
    return torch.get_autocast_dtype(x.device.type) if on else x.dtype


@dataclass(frozen=True, eq=False)
class Attention:
    """Attention of one forward's blocks: ``allowed``-masked softmax attention with
    grouped-query heads, on ``[batch, pos, heads, head_dim]`` tensors (returned the same
    way). On a CPU, for bf16 (autocast or bf16 tensors) and fp32 batches of at most
    :data:`MATMUL_ATTENTION_MAX_POS` positions, it runs as two batched matrix products
    around an fp32 softmax, the additive mask built once for all blocks (``bias``);
    elsewhere (GPUs, other precisions, long rows) the fused kernel
    (``scaled_dot_product_attention``).
    The two agree within rounding (tested). The choice does not depend on gradients, so a
    reference recomputed without them under autocast matches the policy's forward at
    ``v = 0`` exactly: BiPO's first loss is exactly log 2.
    """

    allowed: Bool[Tensor, "batch pos pos"]
    n_heads: int
    n_kv_heads: int
    scale: float
    bias: Float[Tensor, "batch_kv pos_group pos"] | None  # None: the fused kernel
    block: int = 0  # query positions per product (0: all); see :data:`QUERY_BLOCK`

    @classmethod
    def of(
        cls, x: Tensor, allowed: Tensor, n_heads: int, n_kv_heads: int, scale: float
    ) -> "Attention":
        """The attention the blocks run on ``x``'s device and precision (see the class)."""
        width = int(allowed.shape[-1])  # device first: autocast knows no other devices
        if x.device.type == "cpu" and matmul_attention_applies(x.device, _compute_dtype(x), width):
            return cls.products(x, allowed, n_heads, n_kv_heads, scale)
        return cls(allowed, n_heads, n_kv_heads, scale, None)

    @classmethod
    def products(
        cls, x: Tensor, allowed: Tensor, n_heads: int, n_kv_heads: int, scale: float
    ) -> "Attention":
        """The batched-products attention, whatever the device and width (the mask in the
        precision ``x`` computes in)."""
        b, t = int(allowed.shape[0]), int(allowed.shape[-1])
        dtype, g = _compute_dtype(x), n_heads // n_kv_heads
        low = torch.finfo(dtype).min  # not -inf: a row masked in full stays finite
        m = torch.zeros(b, t, t, dtype=dtype, device=x.device).masked_fill_(~allowed, low)
        # [batch * kv heads, pos * group, pos]: the query heads of one kv head adjacent
        bias = m.view(b, 1, t, 1, t).expand(b, n_kv_heads, t, g, t).reshape(-1, t * g, t)
        ahead = torch.ones(t, t, dtype=torch.bool, device=allowed.device).triu(1)
        causal = not bool((allowed & ahead).any())  # no query sees a later key
        block = QUERY_BLOCK if causal and dtype == torch.float32 else 0
        return cls(allowed, n_heads, n_kv_heads, scale, bias, block)

    def __call__(
        self,
        q: Float[Tensor, "batch pos heads hd"],
        k: Float[Tensor, "batch pos kv_heads hd"],
        v: Float[Tensor, "batch pos kv_heads hd"],
    ) -> Float[Tensor, "batch pos heads hd"]:
        hq, hk = self.n_heads, self.n_kv_heads
        if self.bias is None:
            a = F.scaled_dot_product_attention(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.to(q.dtype).transpose(1, 2),
                attn_mask=self.allowed.unsqueeze(1),
                scale=self.scale,
                enable_gqa=hq != hk,
            )
            return a.transpose(1, 2)
        b, t, _, hd = q.shape
        g = hq // hk
        qg = q.reshape(b, t, hk, g, hd).transpose(1, 2).reshape(b * hk, t * g, hd)
        kk = k.transpose(1, 2).reshape(b * hk, t, hd)
        vv = v.to(q.dtype).transpose(1, 2).reshape(b * hk, t, hd)
        step = self.block or t
        out = []
        for s in range(0, t, step):  # a block's queries see no key after its last one
            e, rows = min(t, s + step), slice(s * g, min(t, s + step) * g)
            kt = kk[:, :e].transpose(1, 2)
            scores = torch.baddbmm(self.bias[:, rows, :e], qg[:, rows], kt, alpha=self.scale)
            p = torch.softmax(scores, -1, dtype=torch.float32).to(vv.dtype)  # fp32 statistics
            out.append(torch.bmm(p, vv[:, :e]))
        o = out[0] if len(out) == 1 else torch.cat(out, 1)
        return o.view(b, hk, t, g, hd).transpose(1, 2).reshape(b, t, hq, hd)
