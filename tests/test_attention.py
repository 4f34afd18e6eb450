"""The hook-free blocks' attention: batched products against the fused kernel (values and
gradients, fp32 and bf16), and which of the two runs where."""

import pytest
import torch

from steerlab.models.attention import MATMUL_ATTENTION_MAX_POS, Attention, use_matmul_attention


def _attention_inputs(b: int, t: int, hq: int, hk: int, hd: int = 8):
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(b, t, h, hd, generator=g, requires_grad=True) for h in (hq, hk, hk))
    allowed = torch.ones(t, t, dtype=torch.bool).tril().repeat(b, 1, 1)
    allowed[0, t - 3 :, t - 6 : t - 3] = False  # a packed pair: one response hides the other
    allowed[1, :, 2:] = False  # padding from position 2 on
    allowed[1, 0, :] = False  # a query that may see nothing (stays finite)
    return q, k, v, allowed


def _outputs_and_grads(attentions, q, k, v):
    """Each attention's output and the gradients of q, k, v of a weighted sum of it; the
    mask of the queries that see something (row 1's query 0 sees nothing: no kernel's
    output there is meaningful, so it weighs 0)."""
    w = torch.linspace(-1, 1, q.numel()).view(q.shape)
    w[1, 0] = 0
    out, grads = [], []
    for attend in attentions:
        a = attend(q, k, v)
        assert a.shape == q.shape
        (a * w).sum().backward()
        out.append(a.detach())
        grads.append([t.grad.clone() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None
    seen = torch.ones(q.shape[:2], dtype=torch.bool)
    seen[1, 0] = False
    return out, grads, seen


@pytest.mark.parametrize(("hq", "hk"), [(6, 2), (4, 4)])
def test_matmul_attention_equals_the_fused_kernel(hq, hk):
    q, k, v, allowed = _attention_inputs(3, 11, hq, hk)
    matmul = Attention.products(q, allowed, hq, hk, 0.3)  # in fp32, where rounding is small
    assert matmul.bias is not None and matmul.bias.dtype == torch.float32
    fused = Attention(allowed, hq, hk, 0.3, None)
    out, grads, seen = _outputs_and_grads((matmul, fused), q, k, v)
    torch.testing.assert_close(out[0][seen], out[1][seen], rtol=1e-5, atol=1e-6)
    assert torch.isfinite(out[0]).all()  # finite there, not NaN
    for gm, gf in zip(*grads):
        torch.testing.assert_close(gm, gf, rtol=1e-4, atol=1e-6)
        assert gm.abs().max() > 0


def test_which_attention_runs():
    def matmul(width, x, grad=True):
        allowed = torch.ones(1, width, width, dtype=torch.bool).tril()
        with torch.set_grad_enabled(grad):
            return Attention.of(x, allowed, 2, 1, 1.0).bias is not None

    t, x32 = MATMUL_ATTENTION_MAX_POS, torch.zeros(1)
    bf16 = x32.to(torch.bfloat16)
    assert matmul(t, bf16) and not matmul(t + 1, bf16)  # long rows: the fused kernel
    assert matmul(8, bf16, grad=False)  # with or without gradients alike (see the class)
    assert matmul(t, x32) and matmul(8, x32, grad=False) and not matmul(t + 1, x32)  # fp32 too
    assert not matmul(8, x32.double())  # other precisions: the fused kernel
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the bf16 tensors, grad or not
        assert matmul(8, x32) and matmul(8, x32, grad=False)
    assert not matmul(8, torch.zeros(1, device="meta", dtype=torch.bfloat16))  # not a CPU
    with use_matmul_attention(False):
        assert not matmul(8, bf16)
    with use_matmul_attention(True, (torch.bfloat16,)):  # narrowed to bf16
        assert matmul(8, bf16) and not matmul(8, x32)
    assert matmul(8, bf16) and matmul(8, x32)


def test_matmul_attention_under_autocast_follows_the_fused_kernel():
    q, k, v, allowed = _attention_inputs(3, 11, 6, 2, hd=16)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
        matmul = Attention.of(q, allowed, 6, 2, 0.25)
        assert matmul.bias is not None and matmul.bias.dtype == torch.bfloat16
        got = matmul(q, k, v)
        want = type(matmul)(allowed, 6, 2, 0.25, None)(q, k, v)
    assert got.dtype == torch.bfloat16
    seen = torch.ones(q.shape[:2], dtype=torch.bool)
    seen[1, 0] = False
    torch.testing.assert_close(got[seen].float(), want[seen].float(), rtol=0.02, atol=0.02)


def test_blocked_products_equal_one_product_and_the_fused_kernel():
    """Past QUERY_BLOCK positions a causal mask's fp32 queries are multiplied block by
    block, each block by the keys up to its last query only: the values (bitwise here)
    and gradients of one product over all keys and of the fused kernel. A mask that lets
    a query see a later key keeps one product, and so does bf16."""
    from steerlab.models.attention import QUERY_BLOCK

    t = 2 * QUERY_BLOCK + 22
    q, k, v, allowed = _attention_inputs(3, t, 6, 2)
    assert Attention.products(q.to(torch.bfloat16), allowed, 6, 2, 0.3).block == 0
    blocked = Attention.products(q, allowed, 6, 2, 0.3)
    assert blocked.block == QUERY_BLOCK
    whole = Attention(allowed, 6, 2, 0.3, blocked.bias, 0)
    fused = Attention(allowed, 6, 2, 0.3, None)
    out, grads, seen = _outputs_and_grads((blocked, whole, fused), q, k, v)
    assert torch.equal(out[0][seen], out[1][seen])
    for other in (1, 2):
        torch.testing.assert_close(out[0][seen], out[other][seen], rtol=1e-5, atol=1e-6)
        for g0, g1 in zip(grads[0], grads[other]):
            torch.testing.assert_close(g0, g1, rtol=1e-4, atol=1e-6)
    peek = allowed.clone()
    peek[2, 3, 7] = True  # query 3 may see key 7: not causal
    assert Attention.products(q, peek, 6, 2, 0.3).block == 0
