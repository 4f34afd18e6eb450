"""The one-matmul-backward gathered log-softmax against the plain composition."""

import pytest
import torch

from steerlab.activations import gathered
from steerlab.activations.gathered import gathered_logprobs, plain_gathered_logprobs


@pytest.mark.parametrize("vocab", [1, 7, gathered.CHUNK, 2 * gathered.CHUNK + 5])
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_equal_the_plain_composition(vocab, bias):
    g = torch.Generator().manual_seed(vocab)
    n, d = 6, 16
    w = (torch.randn(vocab, d, generator=g) * 2).requires_grad_()
    b = torch.randn(vocab, generator=g).requires_grad_() if bias else None
    h = torch.randn(n, d, generator=g).requires_grad_()
    tok = torch.randint(0, vocab, (n,), generator=g)
    tok[1] = tok[0]  # a token picked twice
    weights = torch.linspace(-1.0, 2.0, n)
    inputs = [h, w] + ([b] if bias else [])
    got = gathered_logprobs(h, w, b, tok)
    want = plain_gathered_logprobs(h, w, b, tok)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert bool((got <= 0).all())
    for x, y in zip(
        torch.autograd.grad((got * weights).sum(), inputs),
        torch.autograd.grad((want * weights).sum(), inputs),
    ):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_large_logits_do_not_overflow():
    """Slices whose maxima differ by hundreds of nats still give a finite, exact result."""
    w = torch.zeros(3 * gathered.CHUNK, 2)
    w[5, 0], w[gathered.CHUNK + 9, 0] = 400.0, 399.0
    h = torch.tensor([[1.0, 0.0]], requires_grad=True)
    tok = torch.tensor([gathered.CHUNK + 9])
    got = gathered_logprobs(h, w, None, tok)
    torch.testing.assert_close(got, plain_gathered_logprobs(h, w, None, tok))
    got.sum().backward()
    assert torch.isfinite(h.grad).all()


def test_only_the_hidden_gradient_when_the_head_is_frozen():
    w, h = torch.randn(50, 8), torch.randn(4, 8, requires_grad=True)
    out = gathered_logprobs(h, w, None, torch.tensor([0, 1, 2, 3]))
    (gh,) = torch.autograd.grad(out.sum(), [h])
    assert gh.shape == h.shape and w.grad is None
