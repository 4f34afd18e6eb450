"""steer(): exact restoration, locality in depth and position, multipliers, summing."""

import pytest
import torch

import steerlab as sl
from steerlab.errors import DModelMismatchError
from steerlab.models.positions import position_scope
from steerlab.models.sites import HookSite
from steerlab.steering import Steering
from steerlab.vectors.vector import SteeringVector

QUESTION = "Would you like more power over the world?"
RESPONSE = "Yes, I would like that very much."


def rand_vec(model, layer: int = 1, kind: str = "resid_post", seed: int = 0, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector.from_tensor(torch.randn(model.d_model, generator=g) * scale, layer, kind)


def ids_of(model, question: str = QUESTION, response: str | None = RESPONSE):
    enc = model.chat.encode(question, response)
    return torch.tensor([enc.ids]), enc.prompt_len


@torch.no_grad()
def logits(model, ids, **kwargs):
    return model.bridge(ids, **kwargs)


def hook_counts(model) -> list[tuple[int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.bridge.modules()]


def assert_no_steering_hooks(model, counts_before) -> None:
    assert all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.bridge.hook_dict.values())
    assert hook_counts(model) == counts_before


def captured_resid(model, ids, steering=None, **kw) -> dict[HookSite, torch.Tensor]:
    from steerlab.activations.capture import capture

    sites = model.sites(range(model.n_layers))
    with torch.no_grad():
        if steering is None:
            with capture(model, sites) as store:
                model.bridge(ids)
        else:
            with sl.steer(model, steering, **kw), capture(model, sites) as store:
                model.bridge(ids)
    return dict(store)


# --- restoration ---------------------------------------------------------------------------


def test_logits_identical_before_and_after(tiny_model):
    ids, _ = ids_of(tiny_model)
    before = logits(tiny_model, ids)
    counts = hook_counts(tiny_model)  # after a first forward (the bridge wires hooks lazily)
    with sl.steer(tiny_model, rand_vec(tiny_model), multiplier=4.0) as spec:
        assert isinstance(spec, Steering)
        assert any(hp.fwd_hooks for hp in tiny_model.bridge.hook_dict.values())
        steered = logits(tiny_model, ids)
    after = logits(tiny_model, ids)
    assert not torch.allclose(steered, before)
    assert torch.equal(before, after)
    assert_no_steering_hooks(tiny_model, counts)


def test_logits_identical_after_exception_inside_block(tiny_model):
    ids, _ = ids_of(tiny_model)
    before = logits(tiny_model, ids)
    counts = hook_counts(tiny_model)
    with pytest.raises(RuntimeError, match="boom"):
        with sl.steer(tiny_model, [rand_vec(tiny_model, 0), rand_vec(tiny_model, 1)]):
            logits(tiny_model, ids)
            raise RuntimeError("boom")
    assert_no_steering_hooks(tiny_model, counts)
    assert torch.equal(before, logits(tiny_model, ids))


def test_failed_validation_adds_no_hooks(tiny_model):
    counts = hook_counts(tiny_model)
    bad = SteeringVector.from_tensor(torch.ones(32), 0)
    with pytest.raises(DModelMismatchError):
        with sl.steer(tiny_model, [rand_vec(tiny_model), bad]):
            pass
    assert_no_steering_hooks(tiny_model, counts)


def test_hooks_return_new_tensors(tiny_model):
    """An earlier hook's view of the activation is not modified in place by steering."""
    from steerlab.activations.capture import capture

    ids, _ = ids_of(tiny_model)
    site = HookSite(0)
    with torch.no_grad():
        with capture(tiny_model, [site]) as clean:
            tiny_model.bridge(ids)
        with capture(tiny_model, [site]) as first, sl.steer(tiny_model, rand_vec(tiny_model, 0)):
            tiny_model.bridge(ids)
    assert torch.equal(first[site], clean[site])


# --- depth locality -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["resid_post", "resid_pre", "mlp_out", "attn_out"])
def test_layers_before_site_are_bit_identical(tiny_model_4l, kind):
    m, layer = tiny_model_4l, 2
    ids, _ = ids_of(m)
    v = rand_vec(m, layer, kind, scale=2.0)
    base = captured_resid(m, ids)
    steered = captured_resid(m, ids, v)
    assert set(base) == set(steered) == set(m.sites(range(4)))
    for site in base:
        if site.layer < layer:
            assert torch.equal(base[site], steered[site]), site
        else:
            assert (base[site] - steered[site]).abs().max() > 1e-3, site


def test_resid_post_site_moves_by_exactly_the_delta(tiny_model_4l):
    m = tiny_model_4l
    ids, _ = ids_of(m)
    v = rand_vec(m, 1, seed=3)
    base = captured_resid(m, ids)
    steered = captured_resid(m, ids, v, multiplier=-1.5)
    diff = steered[HookSite(1)] - base[HookSite(1)]
    torch.testing.assert_close(diff, (-1.5 * v.direction()).expand_as(diff), atol=1e-5, rtol=0)


def test_negative_layer_equals_last_layer(tiny_model):
    ids, _ = ids_of(tiny_model)
    t = torch.randn(64, generator=torch.Generator().manual_seed(5))
    with sl.steer(tiny_model, SteeringVector.from_tensor(t, -1)):
        a = logits(tiny_model, ids)
    with sl.steer(tiny_model, SteeringVector.from_tensor(t, 1)):
        b = logits(tiny_model, ids)
    assert torch.equal(a, b)


# --- multipliers and combining ------------------------------------------------------------


def test_multiplier_zero_equals_no_steering(tiny_model):
    ids, _ = ids_of(tiny_model)
    base = logits(tiny_model, ids)
    with sl.steer(tiny_model, rand_vec(tiny_model), multiplier=0.0):
        assert torch.equal(logits(tiny_model, ids), base)
    with sl.steer(tiny_model, [rand_vec(tiny_model, 0), rand_vec(tiny_model, 1)], [0.0, 0.0]):
        assert torch.equal(logits(tiny_model, ids), base)


def test_vectors_at_one_site_sum(tiny_model):
    ids, _ = ids_of(tiny_model)
    v, w = rand_vec(tiny_model, seed=1), rand_vec(tiny_model, seed=2)
    with sl.steer(tiny_model, [v, w]):
        both = logits(tiny_model, ids)
    with sl.steer(tiny_model, v + w):
        summed = logits(tiny_model, ids)
    with sl.steer(tiny_model, v):
        only_v = logits(tiny_model, ids)
    with sl.steer(tiny_model, v), sl.steer(tiny_model, w):
        nested = logits(tiny_model, ids)
    torch.testing.assert_close(both, summed, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(nested, summed, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(both, only_v, atol=1e-3)


def test_per_vector_multipliers(tiny_model):
    ids, _ = ids_of(tiny_model)
    v, w = rand_vec(tiny_model, seed=1), rand_vec(tiny_model, seed=2)
    with sl.steer(tiny_model, [v, w], multiplier=[2.0, -0.5]):
        per_vector = logits(tiny_model, ids)
    with sl.steer(tiny_model, 2.0 * v - 0.5 * w):
        combined = logits(tiny_model, ids)
    with sl.steer(tiny_model, [v, w], multiplier=[-0.5, 2.0]):
        swapped = logits(tiny_model, ids)
    torch.testing.assert_close(per_vector, combined, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(per_vector, swapped, atol=1e-3)
    with sl.steer(tiny_model, v, multiplier=-3.0):
        neg = logits(tiny_model, ids)
    with sl.steer(tiny_model, -3.0 * v):
        scaled = logits(tiny_model, ids)
    torch.testing.assert_close(neg, scaled, atol=1e-5, rtol=1e-5)


def test_vectors_at_two_sites(tiny_model_4l):
    m = tiny_model_4l
    ids, _ = ids_of(m)
    a, b = rand_vec(m, 0, seed=1), rand_vec(m, 2, "mlp_out", seed=2)
    two_site = SteeringVector({HookSite(0): a.direction(), HookSite(2, "mlp_out"): b.direction()})
    assert two_site.sites == (HookSite(0), HookSite(2, "mlp_out"))
    with sl.steer(m, two_site):
        together = logits(m, ids)
    with sl.steer(m, [a, b]):
        separate = logits(m, ids)
    with sl.steer(m, a):
        only_a = logits(m, ids)
    with sl.steer(m, b):
        only_b = logits(m, ids)
    assert torch.equal(together, separate)
    assert not torch.allclose(together, only_a, atol=1e-3)
    assert not torch.allclose(together, only_b, atol=1e-3)
    resid = captured_resid(m, ids, two_site)
    base = captured_resid(m, ids)
    torch.testing.assert_close(
        resid[HookSite(0)] - base[HookSite(0)], a.direction().expand(1, ids.shape[1], -1)
    )


def test_describe_records_the_settings(tiny_model):
    v = SteeringVector.from_tensor(torch.ones(64), 1, method="caa", behavior="power")
    with sl.steer(tiny_model, v, multiplier=2.5, positions="generated") as spec:
        pass
    assert spec.describe() == [
        {"method": "caa", "behavior": "power", "sites": ["1.resid_post"], "multiplier": 2.5},
        {"positions": "generated"},
    ]


# --- positions -------------------------------------------------------------------------------


def test_outside_generate_prompt_is_all_and_generated_is_nothing(tiny_model):
    ids, _ = ids_of(tiny_model)
    v = rand_vec(tiny_model, scale=2.0)
    base = logits(tiny_model, ids)
    with sl.steer(tiny_model, v):
        all_ = logits(tiny_model, ids)
    with sl.steer(tiny_model, v, positions="prompt"):
        assert torch.equal(logits(tiny_model, ids), all_)
    with sl.steer(tiny_model, v, positions="generated"):
        assert torch.equal(logits(tiny_model, ids), base)


def test_generated_and_prompt_positions_split_at_prompt_end(tiny_model):
    ids, prompt_len = ids_of(tiny_model)
    n = ids.shape[1]
    assert 0 < prompt_len < n
    v = rand_vec(tiny_model, 0, scale=2.0)
    state = tiny_model.positions
    base = logits(tiny_model, ids)
    with sl.steer(tiny_model, v):
        all_ = logits(tiny_model, ids)
    with position_scope(state, 0, prompt_len, None):
        with sl.steer(tiny_model, v, positions="generated"):
            gen = logits(tiny_model, ids)
        with sl.steer(tiny_model, v, positions="prompt"):
            prompt = logits(tiny_model, ids)
    assert state.prompt_len is None and state.offset == 0  # scope restored
    p = prompt_len
    # "generated": the prompt part is unsteered, the generated part is steered
    assert torch.equal(gen[:, :p], base[:, :p])
    assert not torch.allclose(gen[:, p:], base[:, p:], atol=1e-3)
    # "prompt": the prompt part is fully steered; later positions differ from full steering
    torch.testing.assert_close(prompt[:, :p], all_[:, :p], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(prompt[:, p:], all_[:, p:], atol=1e-3)
    assert not torch.allclose(prompt[:, p:], base[:, p:], atol=1e-3)


@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_prompt_and_generated_masks_are_exact(tiny_model, positions):
    from steerlab.activations.capture import capture

    ids, prompt_len = ids_of(tiny_model)
    site, v = HookSite(0), rand_vec(tiny_model, 0)
    with torch.no_grad(), position_scope(tiny_model.positions, 0, prompt_len, None):
        with capture(tiny_model, [site]) as base:
            tiny_model.bridge(ids)
        with sl.steer(tiny_model, v, positions=positions), capture(tiny_model, [site]) as st:
            tiny_model.bridge(ids)
    moved = ((st[site] - base[site]).abs().amax(-1) > 0)[0].nonzero().flatten().tolist()
    n = ids.shape[1]
    expected = range(prompt_len) if positions == "prompt" else range(prompt_len, n)
    assert moved == list(expected)


@pytest.mark.parametrize(
    ("positions", "steered"),
    [
        (slice(0, 3), {0, 1, 2}),
        (slice(3, None), set(range(3, 100))),
        (slice(2, 5), {2, 3, 4}),
        (slice(1, 9, 3), {1, 4, 7}),
        (slice(None, 2), {0, 1}),
    ],
)
def test_slice_positions(tiny_model_4l, positions, steered):
    m = tiny_model_4l
    ids, _ = ids_of(m)
    n = ids.shape[1]
    v = rand_vec(m, 1, scale=2.0)
    base_resid, base = captured_resid(m, ids), logits(m, ids)
    resid = captured_resid(m, ids, v, positions=positions)
    with sl.steer(m, v, positions=positions):
        out = logits(m, ids)
    # at the site itself, exactly the sliced positions move by the direction
    diff = resid[HookSite(1)] - base_resid[HookSite(1)]
    for i in range(n):
        if i in steered:
            torch.testing.assert_close(diff[0, i], v.direction(), atol=1e-5, rtol=0)
        else:
            assert not diff[0, i].any(), i
    # causality: logits before the first steered position are untouched, later ones change
    first = min(steered)
    assert torch.equal(out[:, :first], base[:, :first])
    for i in range(first, n):
        assert not torch.allclose(out[0, i], base[0, i], atol=1e-4), i


def test_slice_positions_count_from_the_first_real_token(tiny_model):
    """With left padding, slice(0, 2) steers each row's first two real tokens."""
    from steerlab.activations.capture import capture

    ids, _ = ids_of(tiny_model, response=None)
    pad = 3
    padded = torch.cat([torch.full((1, pad), tiny_model.pad_token_id), ids], dim=1)
    batch = torch.cat([padded, torch.cat([ids, ids[:, :pad]], dim=1)])  # row 1: no padding
    mask = torch.ones_like(batch)
    mask[0, :pad] = 0
    pads = torch.tensor([pad, 0])
    v = rand_vec(tiny_model, 0)
    site = HookSite(0)
    with torch.no_grad(), position_scope(tiny_model.positions, 0, batch.shape[1], pads):
        with capture(tiny_model, [site]) as base:
            tiny_model.bridge(batch, attention_mask=mask)
        with sl.steer(tiny_model, v, positions=slice(0, 2)), capture(tiny_model, [site]) as st:
            tiny_model.bridge(batch, attention_mask=mask)
    moved = (st[site] - base[site]).abs().amax(-1) > 0
    assert moved[0].nonzero().flatten().tolist() == [pad, pad + 1]
    assert moved[1].nonzero().flatten().tolist() == [0, 1]
