"""The fast likelihood margin (packed pairs, cached lower residuals) equals the plain one."""

import numpy as np
import pandas as pd
import pytest

from steerlab.errors import ConfigError, EmptyInputError
from steerlab.evaluation import (
    fast_path_applies,
    likelihood_margin,
    likelihood_margin_fast,
)
from steerlab.models.sites import HookSite
from tests._data import SMALL_PAIRS
from tests._vectors import vec_at

PAIRS = SMALL_PAIRS[:4]
COLUMNS = ["logp_matching", "logp_not_matching", "margin", "prefers_matching"]


def test_fast_items_equal_the_plain_items(tiny_model_4l, shared_prefixes):
    shared = shared_prefixes  # the chat template's common prefix runs once per batch
    m = tiny_model_4l
    one = vec_at(m, [HookSite(1)], seed=0)
    two = vec_at(m, [HookSite(1), HookSite(2)], seed=1, method="bipo")
    top = vec_at(m, [HookSite(-1)], seed=2, method="freeform")  # after the last block
    vecs = [one, two, top]
    assert fast_path_applies(m, vecs)
    mults = [-1.5, 0.0, 2.0]
    fast = likelihood_margin_fast(
        m, PAIRS, vecs, mults, batch_size=3, progress=False, per_item=True
    )
    plain = likelihood_margin(m, PAIRS, vecs, mults, progress=False, per_item=True)
    assert list(fast.columns) == list(plain.columns)
    key = ["vector", "method", "multiplier", "item"]
    pd.testing.assert_frame_equal(fast[key], plain[key])
    assert list(fast["layer"]) == list(plain["layer"])
    np.testing.assert_allclose(fast[COLUMNS], plain[COLUMNS], rtol=1e-4, atol=1e-4)
    assert max(shared) > 0  # (0 in one-row batches)
    steered = fast[fast["multiplier"] != 0]
    base = fast[fast["multiplier"] == 0]["margin"].to_numpy()[: len(PAIRS)]
    assert not np.allclose(steered["margin"].to_numpy()[: len(PAIRS)], base)


def test_fast_summary_and_fallback(tiny_model_4l):
    m = tiny_model_4l
    pre = vec_at(m, [HookSite(1, "resid_pre")])
    assert not fast_path_applies(m, pre)
    fast = likelihood_margin_fast(m, PAIRS, pre, [-1.0, 1.0], progress=False)
    plain = likelihood_margin(m, PAIRS, pre, [-1.0, 1.0], progress=False)
    pd.testing.assert_frame_equal(fast, plain)
    base = likelihood_margin_fast(m, PAIRS, None, progress=False)
    ref = likelihood_margin(m, PAIRS, None, progress=False)
    np.testing.assert_allclose(base["value"], ref["value"], rtol=1e-4, atol=1e-4)
    with pytest.raises(EmptyInputError, match="no pairs"):
        likelihood_margin_fast(m, [], pre)


def test_caches_are_reused_across_calls_on_the_same_pairs(tiny_model_4l):
    m = tiny_model_4l
    a, b = vec_at(m, [HookSite(2)], seed=3), vec_at(m, [HookSite(2)], seed=4, method="pca")
    caches: dict = {}
    first = likelihood_margin_fast(m, PAIRS, a, [0.0, 1.0], progress=False, per_item=True,
                                   caches=caches)  # fmt: skip
    built = caches[2]
    second = likelihood_margin_fast(m, PAIRS, b, [0.0, -1.0], progress=False, per_item=True,
                                    caches=caches)  # fmt: skip
    assert caches[2] is built and list(caches) == [2]  # built once, used by both calls
    alone = likelihood_margin_fast(m, PAIRS, [a, b], [0.0, 1.0, -1.0], progress=False,
                                   per_item=True)  # fmt: skip
    for got, vec, mults in ((first, a, [0.0, 1.0]), (second, b, [0.0, -1.0])):
        want = alone[(alone["method"] == vec.method) & alone["multiplier"].isin(mults)]
        np.testing.assert_array_equal(got["margin"].to_numpy(), want["margin"].to_numpy())
    with pytest.raises(ConfigError, match="holds a cache of 4 pairs at layer 2, but 3"):
        likelihood_margin_fast(m, PAIRS[:3], a, [0.0, 1.0], progress=False, caches=caches)
