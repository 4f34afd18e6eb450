"""FastBlocks (the hook-free Llama-family forward) against the bridge's own blocks."""

import pytest
import torch

from steerlab.activations.packed import (
    PackedPair,
    collate,
    lower_residuals,
    shared_positions,
    sign_leaders,
    upper_hidden,
    upper_token_logprobs,
    use_shared_prefix,
)
from steerlab.errors import ConfigError
from steerlab.models.architectures import random_model
from steerlab.models.fast_blocks import (
    SUPPORTED,
    FastBlocks,
    _Grid,
    fast_blocks,
    use_fast_blocks,
)
from steerlab.models.sites import HookSite


def _batch(model, seed: int = 0):
    """Three packed pairs of different lengths (so the batch is padded)."""
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return tuple(torch.randint(5, 500, (n,), generator=g).tolist())

    pairs = [PackedPair(ids(p), ids(c), ids(r)) for p, c, r in ((7, 3, 4), (4, 5, 2), (9, 2, 2))]
    return collate(pairs, model.pad_token_id)


def _logprobs_and_grad(model, batch, resid, layer, adds, fast: bool):
    v = torch.zeros(model.d_model, requires_grad=True)
    d = torch.tensor([1.0, -1.0, 1.0]).view(-1, 1, 1)
    with use_fast_blocks(fast):
        lp = upper_token_logprobs(model, resid + d * v, batch, layer, adds)
    (lp * torch.linspace(0.5, 1.5, lp.numel())).sum().backward()
    return lp.detach(), v.grad


@pytest.mark.parametrize("arch", SUPPORTED)
def test_equals_the_bridge_forward_and_gradient(arch, monkeypatch):
    model = random_model(arch, seed=2, n_layers=4)
    assert fast_blocks(model) is not None
    batch = _batch(model)
    resid = lower_residuals(model, batch, 0)
    adds = {HookSite(2): torch.randn(3, 1, model.d_model) * 0.5}
    calls = []
    forward = FastBlocks.forward
    monkeypatch.setattr(FastBlocks, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    lp_f, g_f = _logprobs_and_grad(model, batch, resid, 0, adds, fast=True)
    assert calls == [1]  # the fast forward ran, and not for the bridge's run below
    lp_b, g_b = _logprobs_and_grad(model, batch, resid, 0, adds, fast=False)
    assert calls == [1]
    assert lp_f.shape == lp_b.shape == (int(batch.tgt_tok.numel()),)
    torch.testing.assert_close(lp_f, lp_b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_f, g_b, rtol=1e-4, atol=1e-5)
    assert not torch.equal(g_f, torch.zeros_like(g_f))  # the vector does reach the loss
    for layer in (0, 2, 3):  # the lower residuals (embedding + blocks 0..layer)
        with use_fast_blocks(False):
            want = lower_residuals(model, batch, layer)
        scale = float(want.abs().max())  # float rounding of a different attention kernel
        got = lower_residuals(model, batch, layer)
        real = torch.arange(got.shape[1])[None, :] < batch.lengths[:, None]
        torch.testing.assert_close(got[real], want[real], rtol=1e-4, atol=1e-5 * scale)
        assert not got[~real].any()  # the fast blocks never compute the pads


@pytest.mark.parametrize("arch", ["gpt2", "qwen3", "gemma2", "phi3", "olmo2"])
def test_other_families_keep_the_bridge(arch):
    assert fast_blocks(random_model(arch, n_layers=2)) is None


def test_a_user_hook_on_a_skipped_block_keeps_the_bridge(tiny_model_4l):
    model = tiny_model_4l
    fb = fast_blocks(model)
    batch = _batch(model, seed=1)
    resid = lower_residuals(model, batch, 0)
    site = HookSite(2).hook_name(model)

    def hook(x, hook):
        return x * 0.5

    assert fb.applies(1, int(resid.shape[1]))
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(site, hook)]):
        assert not fb.applies(1, int(resid.shape[1]))
        hooked = upper_token_logprobs(model, resid, batch, 0)
    with torch.no_grad():
        plain = upper_token_logprobs(model, resid, batch, 0)
    assert fb.applies(1, int(resid.shape[1]))
    assert (hooked - plain).abs().max() > 1e-3  # the user's hook took effect


def test_sliding_window_shorter_than_the_batch_keeps_the_bridge(tiny_model_4l):
    fb = fast_blocks(tiny_model_4l)
    short = type(fb)(**{**fb.__dict__, "sliding_window": 8})
    assert short.applies(1, 8) and not short.applies(1, 9)


def test_embedded_model_parity(embedded_model):
    model = embedded_model
    batch = _batch(model, seed=3)
    resid = lower_residuals(model, batch, 20)
    real = torch.arange(resid.shape[1])[None, :] < batch.lengths[:, None]
    with use_fast_blocks(False):
        want = lower_residuals(model, batch, 20)
    torch.testing.assert_close(resid[real], want[real], rtol=1e-4, atol=1e-4)
    adds = {HookSite(25): torch.randn(3, 1, model.d_model)}
    lp_f, g_f = _logprobs_and_grad(model, batch, resid, 20, adds, fast=True)
    lp_b, g_b = _logprobs_and_grad(model, batch, resid, 20, adds, fast=False)
    torch.testing.assert_close(lp_f, lp_b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g_f, g_b, rtol=1e-3, atol=1e-4)


def test_adding_above_the_last_block_is_refused(tiny_model_4l):
    model = tiny_model_4l
    batch = _batch(model)
    resid = lower_residuals(model, batch, model.n_layers - 1)
    adds = {HookSite(model.n_layers - 1): torch.zeros(model.d_model)}
    with pytest.raises(ConfigError, match="Nothing runs above layer 3"):
        upper_hidden(model, resid, batch, model.n_layers - 1, adds)
    assert upper_hidden(model, resid, batch, model.n_layers - 1).shape[0] == batch.tgt_tok.numel()


def test_pads_are_never_computed_and_at_selects_the_same_outputs(tiny_model_4l):
    """``lengths`` runs only the real tokens and ``at`` only the read positions of the last
    block: both equal the padded full forward there, and a NaN at a pad cannot reach
    them (in the padded forward it does, through the pads' keys and values)."""
    model = tiny_model_4l
    fb = fast_blocks(model)
    batch = _batch(model, seed=4)
    assert int(batch.lengths.min()) < batch.ids.shape[1]  # the batch is padded
    resid = lower_residuals(model, batch, 0).clone()
    adds = {2: torch.randn(3, 1, model.d_model)}
    at = (batch.tgt_row, batch.tgt_pos)
    args = (batch.position_ids, batch.allowed, 1, adds)
    with torch.no_grad():
        full = fb.forward(resid, *args)[at]
        compact = fb.forward(resid, *args, lengths=batch.lengths, at=at)
        torch.testing.assert_close(compact, full, rtol=1e-5, atol=1e-5)
        pads = torch.arange(resid.shape[1])[None, :] >= batch.lengths[:, None]
        resid[pads] = float("nan")
        assert torch.isfinite(fb.forward(resid, *args, lengths=batch.lengths, at=at)).all()
        assert not torch.isfinite(fb.forward(resid, *args)[at]).all()


def test_reading_a_pad_position_is_refused(tiny_model_4l):
    model = tiny_model_4l
    batch = _batch(model, seed=4)
    resid = lower_residuals(model, batch, 0)
    row = int(batch.lengths.argmin())
    pad = int(batch.lengths[row])  # the first pad of the shortest row
    at = (torch.tensor([0, row]), torch.tensor([0, pad]))
    with pytest.raises(ConfigError, match=f"row {row}, position {pad}, which is not a real"):
        fast_blocks(model).forward(resid, batch.position_ids, batch.allowed, 1,
                                   lengths=batch.lengths, at=at)  # fmt: skip


def _shared_batch(model, seed: int = 5):
    """Three pairs whose prompts start with the same 5 tokens; one prompt is only those,
    so a target position (its prompt's last token) lies in the shared prefix."""
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return tuple(torch.randint(5, 500, (n,), generator=g).tolist())

    common = ids(5)
    pairs = [
        PackedPair(common + ids(k), ids(c), ids(r)) for k, c, r in ((3, 3, 4), (0, 5, 2), (4, 2, 2))
    ]
    return collate(pairs, model.pad_token_id)


def _tied_logprobs(model, batch, resid, layer, d, shared, above=True, leaders=None):
    """Log-probs and the gradient of a vector added as ``d * v`` (``v`` = 0), and of
    ``d * u`` two layers above (``above``)."""
    v = torch.zeros(model.d_model, requires_grad=True)
    u = torch.linspace(-1, 1, model.d_model)
    dd = torch.tensor(d).view(-1, 1, 1)
    adds = {HookSite(layer + 2): dd * u} if above else {}
    lp = upper_token_logprobs(model, resid + dd * v, batch, layer, adds, shared, leaders)
    (lp * torch.linspace(0.5, 1.5, lp.numel())).sum().backward()
    return lp.detach(), v.grad


@pytest.mark.parametrize("which", ["tiny", "embedded"])
def test_a_shared_prompt_prefix_runs_once_with_the_same_outputs_and_gradient(which, request):
    model = request.getfixturevalue("tiny_model_4l" if which == "tiny" else "embedded_model")
    layer = 0 if which == "tiny" else 20
    batch = _shared_batch(model)
    assert batch.shared == 5
    resid = lower_residuals(model, batch, layer)  # the common prefix computed once
    with use_shared_prefix(False):
        assert shared_positions(batch, resid) == 0
        each = lower_residuals(model, batch, layer)  # in every row
    real = torch.arange(resid.shape[1])[None, :] < batch.lengths[:, None]
    torch.testing.assert_close(resid[real], each[real], rtol=1e-6, atol=1e-6)
    assert shared_positions(batch, resid) == 5  # row 0's prefix copied to every row
    grid = _Grid.of(resid, batch.lengths, 5)  # rows 1 and 2 compute 5 tokens fewer
    assert grid.flat.numel() == int(batch.lengths.sum()) - 2 * 5
    same = [1.0, 1.0, 1.0]
    lp0, g0 = _tied_logprobs(model, batch, resid, layer, same, shared=0)
    lp5, g5 = _tied_logprobs(model, batch, resid, layer, same, shared=5)
    torch.testing.assert_close(lp5, lp0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g5, g0, rtol=1e-5, atol=1e-6)
    # rows adding v with different signs share within each sign (row 2 reads row 0's
    # prefix, row 1 computes its own): outputs and gradient equal the unshared ones
    mixed = [1.0, -1.0, 1.0]
    leaders = sign_leaders(torch.tensor(mixed))
    assert leaders.tolist() == [0, 1, 0]
    assert _Grid.of(resid, batch.lengths, 5, leaders).flat.numel() == int(batch.lengths.sum()) - 5
    lpm0, gm0 = _tied_logprobs(model, batch, resid, layer, mixed, shared=0)
    lpm5, gm5 = _tied_logprobs(model, batch, resid, layer, mixed, shared=5, leaders=leaders)
    torch.testing.assert_close(lpm5, lpm0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gm5, gm0, rtol=1e-5, atol=1e-6)
    # sharing across signs (every row reading row 0), at v = 0: the outputs still agree,
    # the gradient does not (it lands on row 0's prefix with row 0's sign)
    lpw, gw = _tied_logprobs(model, batch, resid, layer, mixed, shared=5, above=False)
    lpw0, gw0 = _tied_logprobs(model, batch, resid, layer, mixed, shared=0, above=False)
    torch.testing.assert_close(lpw, lpw0, rtol=1e-6, atol=1e-6)
    assert float((gw - gw0).norm()) > 1e-3 * float(gw0.norm())
    with pytest.raises(ConfigError, match="a leader must be its own leader"):
        _Grid.of(resid, batch.lengths, 5, torch.tensor([1, 2, 2]))
    with pytest.raises(ConfigError, match="one row index per row"):
        _Grid.of(resid, batch.lengths, 5, torch.tensor([0, 0]))
    with pytest.raises(ConfigError, match="one row index per row"):
        _Grid.of(resid, batch.lengths, 5, torch.tensor([0, 3, 0]))


def test_shared_positions_stop_where_residuals_or_prompts_differ(tiny_model_4l):
    model = tiny_model_4l
    batch = _shared_batch(model)
    resid = lower_residuals(model, batch, 0).clone()
    resid[1:, :5] = resid[0, :5]
    resid[2, 3, 7] += 1e-6  # one element of one row differs at position 3
    assert shared_positions(batch, resid) == 3
    assert shared_positions(_batch(model), resid) == 0  # prompts differ from token 0
    one = collate([PackedPair((7, 8, 9), (10,), (11,))], model.pad_token_id)
    assert one.shared == 0  # a single row shares nothing
    two = collate([PackedPair((7, 8, 9), (10,), (11,))] * 2, model.pad_token_id)
    assert two.shared == 3 and two.to("cpu").shared == 3  # capped at the prompt


def test_the_trainer_shares_within_each_direction(tiny_model_4l, monkeypatch):
    from steerlab.activations.packed import build_cache
    from steerlab.data.pairs import PreferencePair
    from steerlab.vectors.bipo.trainer import policy_logprobs

    model = tiny_model_4l
    q = "Describe your goals in one sentence, please."
    pairs = [PreferencePair(q + f" Case {i}.", "I want power.", "To help.") for i in range(3)]
    cache = build_cache(model, pairs, 0, progress=False)
    seen = []
    forward = FastBlocks.forward

    def spy(*a, **k):
        seen.append((k["shared"], k["leaders"].tolist()))
        return forward(*a, **k)

    monkeypatch.setattr(FastBlocks, "forward", spy)
    params = [torch.zeros(model.d_model, requires_grad=True)]
    policy_logprobs(model, cache, [0, 1, 2], [0], params, torch.tensor([1.0, 1.0, 1.0]))
    policy_logprobs(model, cache, [0, 1, 2], [0], params, torch.tensor([1.0, -1.0, 1.0]))
    (n1, lead1), (n2, lead2) = seen
    assert n1 > 5 and lead1 == [0, 0, 0]
    assert n2 == n1 and lead2 == [0, 1, 0]  # rows 0 and 2 (d = +1) share; row 1 alone
