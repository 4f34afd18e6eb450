"""Damage: KL(steered || unsteered) on the neutral set, and both answers' log-likelihoods."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from steerlab.data.neutral import load_neutral_set
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.evaluation.damage import kl_damage, logprob_changes, pair_logprob_changes, token_kl
from steerlab.evaluation.likelihood import likelihood_margin
from steerlab.evaluation.strengths import summarize_strengths
from steerlab.models.sites import HookSite
from steerlab.steering.steer import steer
from steerlab.steering.strength import strength_to_multiplier, vector_norms
from steerlab.vectors.vector import Provenance, SteeringVector
from tests._data import SMALL_PAIRS


@pytest.fixture(scope="module")
def neutral():
    return load_neutral_set(n=4)


@pytest.fixture(scope="module")
def vec():
    g = torch.Generator().manual_seed(0)
    return SteeringVector.from_tensor(torch.randn(64, generator=g), 1, method="caa", behavior="x")


def test_token_kl_known_values():
    p = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    q = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1]]))
    want = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert token_kl(p, q).tolist() == pytest.approx([want, 0.0])
    assert token_kl(q, q).eq(0).all()  # exactly 0


def test_kl_is_zero_at_strength_zero_and_grows_with_strength(tiny_model, vec, neutral):
    out = kl_damage(tiny_model, vec, strengths=[0.0, 0.05, 0.2, 0.5, 1.0], neutral=neutral)
    assert list(out.columns) == [
        "vector", "method", "layer", "multiplier", "strength", "kl", "n_tokens"
    ]  # fmt: skip
    kl = out["kl"].to_numpy()
    assert kl[0] == 0.0
    assert np.all(np.diff(kl) > 0)
    norms = vector_norms(tiny_model, vec)
    assert out["multiplier"].iloc[2] == pytest.approx(strength_to_multiplier(vec, 0.2, norms))
    # steering away damages too; KL does not depend on the sign alone being "good"
    neg = kl_damage(tiny_model, vec, multipliers=[0, -1.0, 1.0], neutral=neutral)
    assert neg["kl"].iloc[0] == 0.0 and (neg["kl"].iloc[1:] > 0).all()
    assert (out["n_tokens"] == neg["n_tokens"].iloc[0]).all()


def test_a_zero_delta_hook_gives_exactly_zero_kl(tiny_model, vec, neutral):
    e = neutral.encode(tiny_model)[0]
    ids = torch.tensor([e.ids])
    with torch.no_grad():
        ref = torch.log_softmax(tiny_model.bridge(ids)[0].float(), -1)
        with steer(tiny_model, vec, multiplier=0.0):
            zero = torch.log_softmax(tiny_model.bridge(ids)[0].float(), -1)
    assert token_kl(zero, ref).eq(0).all()


def test_kl_damage_equals_a_plain_computation(tiny_model, vec, neutral):
    out = kl_damage(tiny_model, vec, multipliers=[2.0], neutral=neutral, batch_size=3)
    total, n = 0.0, 0
    for e in neutral.encode(tiny_model):
        ids = torch.tensor([e.ids])
        with torch.no_grad():
            ref = torch.log_softmax(tiny_model.bridge(ids)[0, 1:].float(), -1)
            with steer(tiny_model, vec, multiplier=2.0):
                lp = torch.log_softmax(tiny_model.bridge(ids)[0, 1:].float(), -1)
        total += float((lp.exp() * (lp - ref)).sum())
        n += ids.shape[1] - 1
    assert out["kl"].iloc[0] == pytest.approx(total / n, rel=1e-4)
    assert out["n_tokens"].iloc[0] == n


def test_kl_damage_argument_errors(tiny_model, vec):
    with pytest.raises(ConfigError, match="pass exactly one"):
        kl_damage(tiny_model, vec, multipliers=[1.0], strengths=[0.1])
    with pytest.raises(EmptyInputError, match="at least one steering vector"):
        kl_damage(tiny_model, [])


def test_logprob_changes_known_values():
    items = pd.DataFrame(
        {
            "vector": ["v"] * 4,
            "multiplier": [0.0, 0.0, 1.0, 1.0],
            "item": [0, 1, 0, 1],
            "logp_matching": [-5.0, -4.0, -3.0, -9.0],
            "logp_not_matching": [-6.0, -6.0, -8.0, -12.0],
        }
    )
    out = logprob_changes(items)
    assert out["d_logp_matching"].tolist() == [0.0, 0.0, 2.0, -5.0]
    assert out["d_logp_not_matching"].tolist() == [0.0, 0.0, -2.0, -6.0]
    # item 1: the margin rises by 1 while both answers fall: damage, not steering
    assert out["d_margin"].tolist() == [0.0, 0.0, 4.0, 1.0]
    with pytest.raises(ConfigError, match="include 0 in the multipliers"):
        logprob_changes(items[items["multiplier"] == 1.0])


def test_pair_logprob_changes_on_the_tiny_model(tiny_model, vec):
    out = pair_logprob_changes(tiny_model, SMALL_PAIRS, vec, multipliers=[-1.0, 1.0])
    assert sorted(out["multiplier"].unique()) == [-1.0, 0.0, 1.0]  # 0 added
    zero = out[out["multiplier"] == 0.0]
    assert (zero[["d_logp_matching", "d_logp_not_matching", "d_margin"]] == 0).all().all()
    plain = likelihood_margin(
        tiny_model, SMALL_PAIRS, vec, [0.0, 1.0], progress=False, per_item=True
    )
    p0, p1 = (plain[plain["multiplier"] == m].reset_index() for m in (0.0, 1.0))
    one = out[out["multiplier"] == 1.0].reset_index()
    want = p1["logp_matching"] - p0["logp_matching"]
    assert one["d_logp_matching"].to_numpy() == pytest.approx(want.to_numpy(), abs=1e-3)
    assert one["d_margin"].to_numpy() == pytest.approx(
        (one["d_logp_matching"] - one["d_logp_not_matching"]).to_numpy()
    )


def test_pair_logprob_changes_at_strengths(tiny_model, vec):
    out = pair_logprob_changes(tiny_model, SMALL_PAIRS, vec, strengths=[0.1, 0.3])
    assert sorted(out["strength"].unique()) == [0.0, 0.1, 0.3]
    norms = vector_norms(tiny_model, vec)
    row = out[out["strength"] == 0.3].iloc[0]
    assert row["multiplier"] == pytest.approx(strength_to_multiplier(vec, 0.3, norms))
    assert row["vector"] == "caa:x:L1"
    summary = summarize_strengths(out, {"d_margin": "d_margin"})
    assert list(summary.columns[:5]) == ["vector", "method", "layer", "multiplier", "strength"]
    assert len(summary) == 3 and (summary["n"] == len(SMALL_PAIRS)).all()


def test_fast_kl_equals_the_plain_path(tiny_model_4l, neutral, shared_prefixes):
    shared = shared_prefixes  # the chat template's common prefix runs once per batch
    g = torch.Generator().manual_seed(2)
    one = SteeringVector.from_tensor(torch.randn(64, generator=g), 1, method="caa")
    top = SteeringVector.from_tensor(torch.randn(64, generator=g), 3, method="pca")
    two = SteeringVector(
        {HookSite(1): torch.randn(64, generator=g), HookSite(2): torch.randn(64, generator=g)},
        Provenance(method="freeform"),
    )
    kw = {"multipliers": [0.0, 0.5, -1.5], "neutral": neutral, "batch_size": 3}
    fast = kl_damage(tiny_model_4l, [one, top, two], fast=True, **kw)
    plain = kl_damage(tiny_model_4l, [one, top, two], fast=False, **kw)
    assert fast["kl"].to_numpy() == pytest.approx(plain["kl"].to_numpy(), rel=1e-4, abs=1e-7)
    assert max(shared) > 0  # (0 in one-row batches)
    assert (fast["n_tokens"] == plain["n_tokens"]).all()
    assert fast.drop(columns="kl").equals(plain.drop(columns="kl"))
    attn = SteeringVector.from_tensor(torch.ones(64), 1, kind="attn_out", method="caa")
    with pytest.raises(ConfigError, match="fast=True needs resid_post"):
        kl_damage(tiny_model_4l, attn, fast=True, **kw)
