"""Judge-free evaluation: A/B behavioral probability and likelihood margin under steering.

Parity with a plain computation (full forward, log_softmax over the vocabulary), batch-size
invariance, multiplier 0 = the unsteered model (computed once), the tidy frame layout.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from steerlab.activations import encode_ab, encode_pair, letter_token_ids, right_pad
from steerlab.data import ABItem, pairs_to_ab
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.evaluation import (
    AB_METRICS,
    LIKELIHOOD_METRICS,
    ab_probability,
    batch_response_logprobs,
    check_multipliers,
    conditions,
    likelihood_margin,
    logits_at,
    response_logprobs,
    summarize,
    sweep_multipliers,
    vector_label,
    vector_layer,
)
from steerlab.vectors.vector import SteeringVector
from tests._data import SMALL_PAIRS

PAIRS = SMALL_PAIRS
ITEMS = list(pairs_to_ab(PAIRS, seed=0))
SUMMARY_COLUMNS = ["vector", "method", "layer", "multiplier", "metric", "value", "sem", "n"]


def rand_vec(model, layer=1, scale=4.0, seed=0, method="caa") -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector.from_tensor(
        torch.randn(model.d_model, generator=g) * scale, layer, method=method, behavior="toy"
    )


@torch.no_grad()
def plain_logprob(model, question: str, response: str) -> float:
    """Full unpadded forward, log_softmax over the whole vocabulary at every position."""
    enc = model.chat.encode(question, response)
    logits = model.bridge(torch.tensor([enc.ids]))[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[t - 1, enc.ids[t]]) for t in range(enc.prompt_len, len(enc.ids)))


@torch.no_grad()
def plain_p_matching(model, item: ABItem) -> float:
    enc = encode_ab(model, item)
    logits = model.bridge(torch.tensor([enc.ids]))[0, -1]
    lid = letter_token_ids(model)
    pa, pb = torch.softmax(logits[[lid.a, lid.b]].double(), dim=-1).tolist()
    return pa if item.matching == "A" else pb


# --- likelihood ---------------------------------------------------------------------------


def test_response_logprobs_equal_a_plain_computation(tiny_model):
    enc = [e for p in PAIRS for e in encode_pair(tiny_model, p)]
    fast = response_logprobs(tiny_model, enc, batch_size=3)
    plain = [
        plain_logprob(tiny_model, p.question, r)
        for p in PAIRS
        for r in (p.matching, p.not_matching)
    ]
    np.testing.assert_allclose(fast.numpy(), plain, atol=1e-4, rtol=0)
    one = response_logprobs(tiny_model, enc, batch_size=1)
    torch.testing.assert_close(fast, one, atol=1e-5, rtol=1e-5)


def test_unsteered_margin_equals_a_plain_computation_on_the_embedded_model(embedded_model):
    m, pairs = embedded_model, PAIRS[:2]
    frame = likelihood_margin(m, pairs, None, [0], batch_size=2, progress=False, per_item=True)
    plain_pos = [plain_logprob(m, p.question, p.matching) for p in pairs]
    plain_neg = [plain_logprob(m, p.question, p.not_matching) for p in pairs]
    # fp32 sums over a response's tokens: a padded batch of 2 and one unpadded row round
    # differently (up to 1.9e-4 on a -36 nat sum on an AVX2-only CPU, 5e-6 relative)
    np.testing.assert_allclose(frame["logp_matching"], plain_pos, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(frame["logp_not_matching"], plain_neg, atol=1e-4, rtol=1e-5)
    margin = summarize(frame, LIKELIHOOD_METRICS)  # what likelihood_margin() returns
    value = margin.loc[margin["metric"] == "margin", "value"].item()
    want = float(np.mean(np.subtract(plain_pos, plain_neg)))
    assert math.isclose(value, want, rel_tol=1e-5, abs_tol=2e-4)


def test_logits_at_equals_the_full_forward(tiny_model):
    batch = right_pad([encode_pair(tiny_model, p)[0] for p in PAIRS], tiny_model.pad_token_id)
    positions = torch.tensor([0, 3, 7])
    with torch.no_grad():
        full = tiny_model.bridge(batch.ids, attention_mask=batch.attention_mask)
        part = logits_at(tiny_model, batch.ids, batch.attention_mask, positions)
    torch.testing.assert_close(part, full[:, positions], atol=1e-5, rtol=1e-5)


def test_batch_response_logprobs_is_differentiable_through_a_steering_hook(tiny_model):
    """What the BiPO trainer needs: gradients reach a vector added at a hook."""
    v = torch.zeros(tiny_model.d_model, requires_grad=True)
    batch = right_pad([encode_pair(tiny_model, p)[0] for p in PAIRS[:2]], tiny_model.pad_token_id)
    name = tiny_model.site(0).hook_name(tiny_model)
    with tiny_model.bridge.hooks(fwd_hooks=[(name, lambda x, hook: x + v)]):
        lp = batch_response_logprobs(tiny_model, batch)
    lp.sum().backward()
    assert v.grad is not None and float(v.grad.norm()) > 0


def test_vector_margin_at_multiplier_zero_equals_the_unsteered_margin(tiny_model):
    vec = rand_vec(tiny_model)
    base = likelihood_margin(tiny_model, PAIRS, None, progress=False)
    steered = likelihood_margin(tiny_model, PAIRS, vec, [-1, 0, 1], progress=False)
    at0 = steered[steered["multiplier"] == 0].set_index("metric")["value"]
    pd.testing.assert_series_equal(at0, base.set_index("metric")["value"], check_exact=True)
    moved = steered[(steered["multiplier"] == 1) & (steered["metric"] == "margin")]["value"].item()
    assert moved != at0["margin"]  # a non-zero multiplier does steer


# --- A/B probability ----------------------------------------------------------------------


def test_ab_probability_invariant_to_batch_size_and_equal_to_plain(tiny_model):
    vec = rand_vec(tiny_model)
    one = ab_probability(
        tiny_model, ITEMS, vec, [0, 2], batch_size=1, progress=False, per_item=True
    )
    four = ab_probability(
        tiny_model, ITEMS, vec, [0, 2], batch_size=4, progress=False, per_item=True
    )
    for col in ("p_matching", "p_a", "p_b", "letter_mass"):
        np.testing.assert_allclose(one[col], four[col], atol=1e-5, rtol=0)
    plain = [plain_p_matching(tiny_model, it) for it in ITEMS]
    np.testing.assert_allclose(one[one["multiplier"] == 0]["p_matching"], plain, atol=1e-5)
    assert not np.allclose(one[one["multiplier"] == 2]["p_matching"], plain, atol=1e-4)


def test_ab_probability_on_the_embedded_model(embedded_model):
    items = ITEMS[:2]
    frame = summarize(
        ab_probability(embedded_model, items, progress=False, per_item=True), AB_METRICS
    )
    assert list(frame.columns) == SUMMARY_COLUMNS
    values = frame.set_index("metric")["value"]
    assert 0.0 <= values["p_matching"] <= 1.0
    assert values["letter_mass"] > 0.2  # the instruct model does answer with a letter
    p = [plain_p_matching(embedded_model, it) for it in items]
    assert math.isclose(values["p_matching"], float(np.mean(p)), abs_tol=1e-5)


def test_ab_accepts_pairs_and_rejects_empty(tiny_model):
    a = ab_probability(tiny_model, PAIRS[:2], progress=False, per_item=True)  # pairs_to_ab(seed=0)
    b = ab_probability(tiny_model, pairs_to_ab(PAIRS[:2], seed=0), progress=False, per_item=True)
    np.testing.assert_allclose(a["p_matching"], b["p_matching"])
    with pytest.raises(EmptyInputError):
        ab_probability(tiny_model, [], progress=False)


# --- frames, labels and the multiplier loop ----------------------------------------------


def test_tidy_frame_has_one_row_per_vector_multiplier_metric(tiny_model):
    v1, v2 = rand_vec(tiny_model, 0, method="caa"), rand_vec(tiny_model, 1, method="pca")
    frame = ab_probability(tiny_model, ITEMS[:2], [v1, v2], [-1, 0, 1], progress=False)
    assert list(frame.columns) == SUMMARY_COLUMNS
    assert len(frame) == 2 * 3 * 3
    assert set(frame["method"]) == {"caa", "pca"}
    assert sorted(set(frame["layer"])) == [0, 1]
    assert set(frame["vector"]) == {"caa:toy:L0", "pca:toy:L1"}
    assert (frame["n"] == 2).all()
    # the unsteered values are shared at multiplier 0
    at0 = frame[frame["multiplier"] == 0].groupby("metric")["value"].nunique()
    assert (at0 == 1).all()


def test_multiplier_zero_is_computed_once(tiny_model):
    calls = []

    def score():
        calls.append(1)
        return {"x": [float(len(calls))]}

    vecs = [rand_vec(tiny_model, 0), rand_vec(tiny_model, 1)]
    frame = sweep_multipliers(tiny_model, vecs, [-1, 0, 1], score, progress=False)
    assert len(calls) == 1 + 2 * 2
    assert frame[frame["multiplier"] == 0]["x"].nunique() == 1


def test_labels_layers_and_overrides(tiny_model):
    multi = rand_vec(tiny_model, 0) + rand_vec(tiny_model, 1)
    assert vector_layer(multi) == "0+1"
    assert vector_label(rand_vec(tiny_model, 1)) == "caa:toy:L1"
    same = [rand_vec(tiny_model, 1, seed=0), rand_vec(tiny_model, 1, seed=1)]
    labels = {c.label for c in conditions(same, [1])}
    assert labels == {"caa:toy:L1", "caa:toy:L1#2"}
    cond = conditions(same, [1], method="mine", layer="x")[0]
    assert (cond.method, cond.layer) == ("mine", "x")
    base = conditions(None, [-2, 2])
    assert [(c.vector, c.multiplier, c.label) for c in base] == [(None, 0.0, "unsteered")]


def test_check_multipliers():
    assert check_multipliers([1, 1.0, -2]) == (1.0, -2.0)
    assert check_multipliers(0.5) == (0.5,)
    for bad in ([float("nan")], [True], [float("inf")]):
        with pytest.raises(ConfigError, match="finite number"):
            check_multipliers(bad)
    with pytest.raises(EmptyInputError):
        check_multipliers([])


def test_summarize_mean_sem_and_count():
    items = pd.DataFrame(
        {
            "vector": ["v"] * 4,
            "method": ["caa"] * 4,
            "layer": pd.Series([3] * 4, dtype=object),
            "multiplier": [1.0] * 4,
            "item": range(4),
            "score": [1.0, 2.0, 3.0, 6.0],
        }
    )
    out = summarize(items, {"s": "score"})
    row = out.iloc[0]
    assert (row["value"], row["n"], row["layer"]) == (3.0, 4, 3)
    assert math.isclose(row["sem"], np.std([1, 2, 3, 6], ddof=1) / 2)
    with pytest.raises(ConfigError, match="not in the item frame"):
        summarize(items, {"s": "missing"})


def test_evaluation_leaves_the_model_unchanged(tiny_model):
    ids = torch.tensor([encode_pair(tiny_model, PAIRS[0])[0].ids])
    with torch.no_grad():
        before = tiny_model.bridge(ids)
    likelihood_margin(tiny_model, PAIRS[:1], rand_vec(tiny_model), [3], progress=False)
    with torch.no_grad():
        after = tiny_model.bridge(ids)
    assert torch.equal(before, after)
