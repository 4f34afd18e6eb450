"""``paired_changes``: means and changes versus x0 with bootstrap CIs, on synthetic items
whose true effects are known."""

import numpy as np
import pandas as pd
import pytest

from steerlab.analysis.effects import PAIRED_COLUMNS, describe_change, paired_changes
from steerlab.errors import ConfigError

METRICS = {"margin": "margin"}


def frame(values: dict[tuple[str, float], np.ndarray]) -> pd.DataFrame:
    rows = []
    for (vec, mult), vals in values.items():
        for i, v in enumerate(vals):
            rows.append({"vector": vec, "method": vec, "layer": 3, "multiplier": mult,
                         "item": i, "margin": v})  # fmt: skip
    return pd.DataFrame(rows)


def items_with_effect(n=200, effect=0.5, spread=40.0, noise=0.2, seed=0):
    """Items that differ by ``spread`` from one another; steering adds ``effect * x``."""
    rng = np.random.default_rng(seed)
    base = rng.normal(3.0, spread, n)
    return frame({("v", x): base + effect * x + rng.normal(0, noise, n) for x in (-1.0, 0.0, 1.0)})


def test_change_is_paired_and_covers_the_true_effect():
    out = paired_changes(items_with_effect(), METRICS)
    assert list(out.columns) == list(PAIRED_COLUMNS)
    row = out[out["multiplier"] == 1.0].iloc[0]
    # the change's CI is set by the per-item noise (0.2), not by the 40-nat spread
    assert row.change_low < 0.5 < row.change_high
    assert row.change_high - row.change_low < 0.1
    # the mean's CI is as wide as the spread makes it and cannot see the effect
    assert row.high - row.low > 5.0
    zero = out[out["multiplier"] == 0.0].iloc[0]
    assert zero.change == 0.0 and zero.change_low == 0.0 and zero.change_high == 0.0
    minus = out[out["multiplier"] == -1.0].iloc[0]
    assert minus.change_low < -0.5 < minus.change_high and minus.change_high < 0


def test_mean_ci_matches_a_direct_bootstrap_and_is_seeded():
    items = items_with_effect(n=50)
    a = paired_changes(items, METRICS, seed=3)
    b = paired_changes(items, METRICS, seed=3)
    pd.testing.assert_frame_equal(a, b)
    vals = items[items["multiplier"] == 1.0]["margin"].to_numpy()
    idx = np.random.default_rng(3).integers(0, 50, size=(2000, 50))
    lo, hi = np.quantile(vals[idx].mean(axis=1), [0.025, 0.975])
    row = a[a["multiplier"] == 1.0].iloc[0]
    assert row["mean"] == pytest.approx(vals.mean()) and row["n"] == 50
    assert (row["low"], row["high"]) == pytest.approx((lo, hi))
    assert not a.equals(paired_changes(items, METRICS, seed=4))


def test_pairs_items_by_id_not_by_row_order():
    items = items_with_effect(n=30)
    shuffled = items.sample(frac=1.0, random_state=1)
    a = paired_changes(items, METRICS).set_index("multiplier")["change"]
    b = paired_changes(shuffled, METRICS).set_index("multiplier")["change"]
    assert a.sort_index().to_numpy() == pytest.approx(b.sort_index().to_numpy())


def test_non_finite_items_and_missing_zero():
    vals = {("v", 0.0): np.array([1.0, 2.0, np.nan, 4.0]),
            ("v", 1.0): np.array([2.0, 3.0, 5.0, np.inf]),
            ("w", 1.0): np.array([1.0, 1.0, 1.0, 1.0])}  # fmt: skip
    out = paired_changes(frame(vals), METRICS).set_index(["vector", "multiplier"])
    assert out.loc[("v", 1.0), "n"] == 3
    assert out.loc[("v", 1.0), "change"] == pytest.approx(1.0)  # items 0 and 1 only
    assert np.isnan(out.loc[("w", 1.0), "change"])  # no x0 for w
    assert out.loc[("w", 1.0), "mean"] == 1.0


def test_refuses_frames_without_items():
    with pytest.raises(ConfigError, match="item"):
        paired_changes(frame({("v", 0.0): np.ones(3)}).drop(columns="item"), METRICS)


def test_strength_frames_are_grouped_by_strength():
    """With a ``strength`` column the conditions are strengths (a two-site vector has
    multiplier NaN there), the change is versus strength 0 and the column is kept."""
    items = items_with_effect(n=40).rename(columns={"multiplier": "strength"})
    items.insert(3, "multiplier", np.where(items["strength"] == 0.0, 0.0, np.nan))
    out = paired_changes(items, METRICS)
    cols = list(PAIRED_COLUMNS)
    assert list(out.columns) == [*cols[:4], "strength", *cols[4:]]
    assert list(out["strength"]) == [-1.0, 0.0, 1.0]
    row = out[out["strength"] == 1.0].iloc[0]
    assert np.isnan(row["multiplier"]) and row["n"] == 40
    assert row.change_low < 0.5 < row.change_high


def test_a_real_strength_frame(tiny_model_4l):
    from steerlab.evaluation import LIKELIHOOD_METRICS, likelihood_margin_fast
    from steerlab.models.sites import HookSite
    from tests._data import SMALL_PAIRS
    from tests._vectors import vec_at

    two = vec_at(tiny_model_4l, [HookSite(1), HookSite(2)], scale=0.5)
    items = likelihood_margin_fast(tiny_model_4l, SMALL_PAIRS, [two], strengths=[0, 0.1],
                                   per_item=True, progress=False)  # fmt: skip
    out = paired_changes(items, LIKELIHOOD_METRICS).set_index(["strength", "metric"])
    steered = items[items["strength"] == 0.1].set_index("item")["margin"]
    base = items[items["strength"] == 0.0].set_index("item")["margin"]
    assert out.loc[(0.1, "margin"), "change"] == pytest.approx((steered - base).mean())
    assert out.loc[(0.1, "margin"), "n"] == len(SMALL_PAIRS)


def test_describe_change_says_no_more_than_the_ci_and_n_allow():
    assert describe_change(1.0, 0.2, 1.8, 20).endswith("rises (CI excludes 0)")
    assert describe_change(-1.0, -1.8, -0.2, 50).endswith("falls (CI excludes 0)")
    assert describe_change(1.0, -0.2, 1.8, 50).endswith("no clear change (CI includes 0)")
    few = describe_change(1.0, 0.2, 1.8, 19)
    assert "too few items" in few and "rises" not in few and "(n = 19)" in few
    assert "rises" in describe_change(1.0, 0.2, 1.8, 4, min_items=3)
    assert describe_change(0.5, 0.25, 0.75, 30).startswith("+0.50 [+0.25, +0.75] (n = 30)")
