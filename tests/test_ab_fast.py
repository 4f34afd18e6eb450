"""The fast A/B probability (cached lower residuals, one read position) equals the plain one."""

import numpy as np
import pandas as pd
import pytest

from steerlab.data.convert import pairs_to_ab
from steerlab.errors import EmptyInputError
from steerlab.evaluation import ab_probability, ab_probability_fast, fast_path_applies
from steerlab.models.sites import HookSite
from tests._data import SMALL_PAIRS
from tests._vectors import vec_at

ITEMS = list(pairs_to_ab(SMALL_PAIRS, seed=0))
COLUMNS = ["p_matching", "matched", "p_a", "p_b", "letter_mass", "logit_diff"]
KEY = ["vector", "method", "multiplier", "item", "matching"]


def assert_same_items(fast, plain, atol=1e-5):
    assert list(fast.columns) == list(plain.columns)
    pd.testing.assert_frame_equal(fast[KEY], plain[KEY])
    assert list(fast["layer"]) == list(plain["layer"])
    np.testing.assert_allclose(fast[COLUMNS], plain[COLUMNS], rtol=1e-4, atol=atol)


def test_fast_items_equal_the_plain_items(tiny_model_4l, shared_prefixes):
    shared = shared_prefixes  # the chat template's common prefix runs once per batch
    m = tiny_model_4l
    one = vec_at(m, [HookSite(1)], seed=0)
    two = vec_at(m, [HookSite(1), HookSite(2)], seed=1, method="bipo")
    top = vec_at(m, [HookSite(-1)], seed=2, method="freeform")  # after the last block
    low = vec_at(m, [HookSite(0)], seed=3, method="pca")  # its own, lower layer
    vecs = [one, two, top, low]
    assert fast_path_applies(m, vecs)
    mults = [-1.5, 0.0, 2.0]
    fast = ab_probability_fast(m, ITEMS, vecs, mults, batch_size=3, progress=False, per_item=True)
    plain = ab_probability(m, ITEMS, vecs, mults, progress=False, per_item=True)
    assert_same_items(fast, plain)
    assert max(shared) > 0  # (0 in one-row batches)
    steered = fast[(fast["multiplier"] != 0) & (fast["method"] == "caa")]["p_matching"]
    base = fast[(fast["multiplier"] == 0) & (fast["method"] == "caa")]["p_matching"]
    assert np.abs(steered.to_numpy()[: len(ITEMS)] - base.to_numpy()).max() > 1e-3


def test_only_steered_conditions_skip_the_unsteered_forward(tiny_model_4l, monkeypatch):
    """Without multiplier 0 (a sweep cell) the unsteered letters are not computed; the
    steered ones are those of a run that includes 0."""
    import steerlab.evaluation.ab_fast as abf

    m = tiny_model_4l
    v = vec_at(m, [HookSite(2)], seed=7)
    calls = []
    real = abf.upper_hidden
    monkeypatch.setattr(abf, "upper_hidden", lambda *a, **k: calls.append(1) or real(*a, **k))
    only = ab_probability_fast(m, ITEMS, v, [-1.0, 1.0], batch_size=3, progress=False,
                               per_item=True)  # fmt: skip
    assert calls == []
    both = ab_probability_fast(m, ITEMS, v, [-1.0, 0.0, 1.0], batch_size=3, progress=False,
                               per_item=True)  # fmt: skip
    assert len(calls) > 0
    steered = both[both["multiplier"] != 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(only, steered)


def test_fast_summary_strengths_labels_and_fallback(tiny_model_4l):
    m = tiny_model_4l
    v = vec_at(m, [HookSite(2)], seed=5)
    kw = {"progress": False, "method": "mine", "layer": "L2"}
    fast = ab_probability_fast(m, ITEMS, v, [0.0, 1.0], batch_size=16, **kw)
    plain = ab_probability(m, ITEMS, v, [0.0, 1.0], **kw)
    pd.testing.assert_frame_equal(fast.drop(columns=["value", "sem"]),
                                  plain.drop(columns=["value", "sem"]))  # fmt: skip
    np.testing.assert_allclose(fast["value"], plain["value"], rtol=1e-4, atol=1e-5)
    by_strength = ab_probability_fast(m, ITEMS, v, strengths=[0.0, 0.5], progress=False)
    ref = ab_probability(m, ITEMS, v, strengths=[0.0, 0.5], progress=False)
    assert list(by_strength.columns) == list(ref.columns)
    np.testing.assert_allclose(by_strength["value"], ref["value"], rtol=1e-4, atol=1e-5)
    base = ab_probability_fast(m, ITEMS, None, progress=False, per_item=True)
    assert_same_items(base, ab_probability(m, ITEMS, None, progress=False, per_item=True))
    pre = vec_at(m, [HookSite(1, "resid_pre")])
    assert not fast_path_applies(m, pre)
    pd.testing.assert_frame_equal(
        ab_probability_fast(m, ITEMS, pre, [-1.0, 1.0], progress=False),
        ab_probability(m, ITEMS, pre, [-1.0, 1.0], progress=False),
    )
    with pytest.raises(EmptyInputError, match="no items"):
        ab_probability_fast(m, [], v)


def test_fast_equals_plain_on_the_embedded_model(embedded_model):
    m = embedded_model
    v = vec_at(m, [HookSite(14)], scale=1.0, seed=7)
    fast = ab_probability_fast(m, ITEMS, v, [-8.0, 0.0, 8.0], batch_size=4, progress=False,
                               per_item=True)  # fmt: skip
    plain = ab_probability(m, ITEMS, v, [-8.0, 0.0, 8.0], progress=False, per_item=True)
    assert_same_items(fast, plain, atol=1e-4)
    moved = fast.groupby("multiplier")["p_matching"].mean()
    assert abs(moved[8.0] - moved[-8.0]) > 1e-3  # the vector does something


def test_ab_fast_metric_gives_the_ab_numbers(tiny_model):
    from steerlab.evaluation.metrics import METRICS, evaluate_named

    # 'ab' runs the fast path ('ab_fast' is its older name), 'ab_plain' the plain one
    assert METRICS.get("ab").evaluate is ab_probability_fast
    assert METRICS.get("ab_plain").evaluate is ab_probability
    assert METRICS.get("ab_fast").evaluate is ab_probability_fast
    assert {METRICS.get(k).primary for k in ("ab", "ab_plain", "ab_fast")} == {"p_matching"}
    named = {"a": vec_at(tiny_model, [HookSite(1)], seed=8), "b": vec_at(tiny_model, [HookSite(0)])}
    mults = [-1.0, 0.0, 2.0]
    slow = evaluate_named(tiny_model, ITEMS, named, mults, "ab_plain")
    fast = evaluate_named(tiny_model, ITEMS, named, mults, "ab")
    key = ["name", "metric", "multiplier"]
    slow, fast = slow.sort_values(key), fast.sort_values(key)
    assert list(slow[key].itertuples(index=False)) == list(fast[key].itertuples(index=False))
    np.testing.assert_allclose(slow["value"], fast["value"], atol=1e-5)
