"""BiPO under bf16 autocast on a CPU: the reference is cached once where it does not depend
on the batch, and training is then bit-for-bit the per-step recomputation's."""

import math
import random
from dataclasses import replace

import pytest
import torch

import steerlab.models.attention as attention
from steerlab.activations.packed import (
    _same_in_other_batches,
    batch_reference_logprobs,
    build_cache,
    low_precision_weights,
)
from steerlab.models.attention import use_matmul_attention
from steerlab.vectors.bipo import BiPOConfig
from steerlab.vectors.bipo.trainer import BiPOTrainer
from tests.test_bipo import synthetic_pairs

BF16 = torch.bfloat16


def _pairs(which):
    if which == "tiny":
        return synthetic_pairs(12), 1
    from steerlab.data import load_pairs

    return load_pairs("power-seeking").train[:12], 14


def _train(model, cache, layer, cfg, val=None):
    trainer = BiPOTrainer(model, cache, [layer], cfg, val_cache=val)
    with low_precision_weights(model, layer + 1, BF16):
        for _ in range(cfg.epochs):
            losses = [trainer.step(s)["loss"] for s in trainer.plan()]
            trainer.end_epoch()
    return trainer, losses


@pytest.mark.parametrize("which", ["tiny", "embedded"])
def test_cached_bf16_reference_trains_exactly_as_recomputed(which, request):
    model = request.getfixturevalue("tiny_model_4l" if which == "tiny" else "embedded_model")
    pairs, layer = _pairs(which)
    cache = build_cache(model, pairs[:9], layer, autocast=BF16, progress=False)
    val = build_cache(model, pairs[9:], layer, autocast=BF16, progress=False)
    assert cache.batch_invariant and val.batch_invariant
    rng = random.Random(0)
    for _ in range(3):  # any batch gives the cached numbers, bitwise
        idx = rng.sample(range(9), rng.randint(1, 5))
        m, n = batch_reference_logprobs(model, cache, idx)
        assert torch.equal(m, cache.ref_matching[idx]) and torch.equal(
            n, cache.ref_not_matching[idx]
        )
    cfg = BiPOConfig(epochs=2, batch_size=3, warmup_steps=0, lr=5e-2, autocast_bf16=True)
    cached, losses = _train(model, cache, layer, cfg, val)
    redo, redo_losses = _train(
        model,
        replace(cache, batch_invariant=False),
        layer,
        cfg,
        replace(val, batch_invariant=False),
    )
    assert cached.steps[0]["loss"] == math.log(2) and cached.cache.batch_invariant
    assert [s["loss"] for s in cached.steps] == [s["loss"] for s in redo.steps]
    assert cached.epochs == redo.epochs  # validation margins, margin@0 included
    assert torch.equal(cached.params[0], redo.params[0]) and cached.params[0].abs().max() > 0


def test_a_reference_that_depends_on_the_batch_is_caught(tiny_model_4l):
    model, (pairs, layer) = tiny_model_4l, _pairs("tiny")
    cache = build_cache(model, pairs, layer, autocast=BF16, progress=False)
    off = replace(cache, ref_matching=cache.ref_matching + 1e-3)  # as if from other batches
    assert not _same_in_other_batches(model, off)
    cfg = BiPOConfig(epochs=1, batch_size=3, warmup_steps=0, lr=5e-2, autocast_bf16=True)
    trainer = BiPOTrainer(model, off, [layer], cfg)
    with pytest.warns(RuntimeWarning, match="depends on the batch"):
        first = trainer.step(trainer.plan()[0])
    assert first["loss"] == math.log(2)  # recomputed in the step's own batch
    assert not trainer.cache.batch_invariant
    with torch.no_grad():
        trainer.params[0].zero_()
    assert trainer.step(trainer.plan()[1])["loss"] == math.log(2)


def test_no_cached_bf16_reference_where_the_attention_can_switch(tiny_model_4l, monkeypatch):
    model, (pairs, layer) = tiny_model_4l, _pairs("tiny")
    longest = max(len(p) for p in build_cache(model, pairs, layer, progress=False).packed)
    assert not build_cache(model, pairs, layer, progress=False).batch_invariant  # fp32: no flag
    with use_matmul_attention(False):  # the fused kernel throughout: not checked, not cached
        assert not build_cache(model, pairs, layer, autocast=BF16, progress=False).batch_invariant
    monkeypatch.setattr(attention, "MATMUL_ATTENTION_MAX_POS", longest - 1)
    cache = build_cache(model, pairs, layer, autocast=BF16, progress=False)
    assert not cache.batch_invariant  # a batch with the longest pair would switch kernel
    cfg = BiPOConfig(epochs=1, batch_size=3, warmup_steps=0, lr=5e-2, autocast_bf16=True)
    trainer = BiPOTrainer(model, cache, [layer], cfg)
    for step in trainer.plan():  # recomputed per batch: log 2 at v = 0 in every one
        with torch.no_grad():
            trainer.params[0].zero_()
        assert trainer.step(step)["loss"] == math.log(2)


def test_the_run_says_how_it_had_its_reference(tiny_model_4l):
    from steerlab.vectors.bipo import fit_bipo_run

    pairs, layer = _pairs("tiny")

    def reference(bf16):
        cfg = BiPOConfig(epochs=1, batch_size=4, warmup_steps=0, autocast_bf16=bf16)
        return fit_bipo_run(tiny_model_4l, pairs, layer=layer, config=cfg, progress=False).reference

    assert reference(False) == "cached" and reference(True) == "cached"
    with use_matmul_attention(False):
        assert reference(True) == "per step"
