"""BiPO's plain path: the same objective as the fast path where both apply, and training
on models the fast path refuses (a soft-capped tiny Gemma-2)."""

import math

import pytest
import torch

import steerlab as sl
from steerlab.errors import ConfigError
from steerlab.models.architectures import build_tiny_checkpoint
from steerlab.vectors.bipo import BiPOConfig, fit_bipo_run
from steerlab.vectors.bipo.plain import PlainPathWarning, fast_path_refusal
from tests.bipo_plain import plain_bipo
from tests.test_bipo import synthetic_pairs, weights


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory):
    """A tiny random-init Gemma-2 (final_logit_softcapping=30), loaded from its directory."""
    path = build_tiny_checkpoint("gemma2", tmp_path_factory.mktemp("gemma2"), seed=1)
    return sl.load_model(str(path), device="cpu")


def test_plain_path_equals_fast_path(tiny_model_4l):
    pairs = synthetic_pairs(10)
    cfg = BiPOConfig(epochs=2, batch_size=4, warmup_steps=2, lr=2e-2)
    fast = fit_bipo_run(tiny_model_4l, pairs, layer=1, config=cfg, progress=False)
    plain = fit_bipo_run(tiny_model_4l, pairs, layer=1, config=cfg, progress=False, engine="plain")
    assert (fast.engine, plain.engine) == ("fast", "plain")
    a, b = [s["loss"] for s in fast.steps], [s["loss"] for s in plain.steps]
    assert len(a) == len(b) and a[0] == b[0] == math.log(2)
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (a, b)
    assert torch.allclose(fast.vector.direction(1), plain.vector.direction(1), atol=1e-5)
    assert float(plain.vector.direction(1).norm()) > 0.01
    v_ref, losses_ref = plain_bipo(tiny_model_4l, pairs, 1, cfg)  # the test suite's plain code
    assert max(abs(x - y) for x, y in zip(b, losses_ref)) < 1e-5
    assert torch.allclose(plain.vector.direction(1), v_ref.cpu(), atol=1e-5)


def test_plain_path_multi_layer_and_validation_equal_fast(tiny_model_4l):
    pairs, val = synthetic_pairs(8), synthetic_pairs(12)[8:]
    cfg = BiPOConfig(epochs=1, batch_size=4, warmup_steps=0, lr=2e-2)
    kw = dict(layers=[0, 2], config=cfg, val_pairs=val, progress=False)
    fast = fit_bipo_run(tiny_model_4l, pairs, **kw)
    plain = fit_bipo_run(tiny_model_4l, pairs, engine="plain", **kw)
    for layer in (0, 2):
        assert torch.allclose(
            fast.vector.direction(layer), plain.vector.direction(layer), atol=1e-5
        )
    for key in ("margin@-1", "margin@0", "margin@+1"):
        assert plain.epochs[0][key] == pytest.approx(fast.epochs[0][key], abs=1e-4)


def test_plain_path_step_one_is_log2_under_bf16_autocast(tiny_model_4l):
    cfg = BiPOConfig(epochs=1, batch_size=3, warmup_steps=0, lr=1e-2, autocast_bf16=True)
    run = fit_bipo_run(tiny_model_4l, synthetic_pairs(6), layer=1, config=cfg, progress=False,
                       engine="plain")  # fmt: skip
    assert run.steps[0]["loss"] == math.log(2)


def test_softcapped_gemma2_trains_on_the_plain_path(gemma2):
    assert fast_path_refusal(gemma2) == "its logits are soft-capped, final_logit_softcapping=30.0"
    before = weights(gemma2)
    cfg = BiPOConfig(epochs=4, batch_size=4, warmup_steps=0, lr=5e-2)
    with pytest.warns(PlainPathWarning, match=r"soft-capped.*plain path.*all 2 layers"):
        run = fit_bipo_run(gemma2, synthetic_pairs(12), layer=0, config=cfg, progress=False)
    assert run.engine == "plain"
    losses = [s["loss"] for s in run.steps]
    assert losses[0] == math.log(2)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.01, losses
    assert float(run.vector.direction(0).norm()) > 0
    after = weights(gemma2)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_engine_choice_is_checked(gemma2, tiny_model):
    pairs = synthetic_pairs(4)
    with pytest.raises(ConfigError, match=r"engine='fast' cannot run.*soft-capped"):
        fit_bipo_run(gemma2, pairs, layer=0, progress=False, engine="fast")
    with pytest.raises(ConfigError, match=r"engine='quick'.*auto, fast, plain"):
        fit_bipo_run(tiny_model, pairs, layer=0, progress=False, engine="quick")
    assert fast_path_refusal(tiny_model) is None
