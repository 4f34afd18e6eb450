"""Per-item reliability and matched comparisons on synthetic data with known answers."""

import math

import numpy as np
import pandas as pd
import pytest

from steerlab.analysis.reliability import (
    bootstrap_ci,
    bootstrap_indices,
    curves,
    item_slopes,
    matched_kl,
    matched_strength,
    monotonicity,
    reliability,
    slopes,
    strength_at_kl,
)
from steerlab.errors import ConfigError

X = np.array([-0.2, -0.1, 0.0, 0.1, 0.2])


def _items(label: str, slope_per_item: np.ndarray, noise: float = 0.0, seed: int = 0):
    """margin_i(x) = 1 + b_i x (+ noise): the per-item slopes are known."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, b in enumerate(slope_per_item):
        for x in X:
            rows.append(
                {
                    "vector": label,
                    "method": label.split(":")[0],
                    "layer": 14,
                    "strength": x,
                    "item": i,
                    "margin": 1 + b * x + noise * rng.standard_normal(),
                }
            )
    return pd.DataFrame(rows)


def test_slopes_are_exact_least_squares():
    b = np.array([3.0, -1.0, 0.5])
    y = 2.0 + b[:, None] * X[None, :]
    assert slopes(X, y) == pytest.approx(b)
    with pytest.raises(ConfigError, match="at least two strengths"):
        slopes(np.array([0.1, 0.1]), y[:, :2])


def test_item_slopes_and_anti_steerable_share_known_answer():
    b = np.array([10.0, 10.0, 10.0, -5.0])  # one item in four steers the wrong way
    slopes_df = item_slopes(_items("caa:ps:L14", b))
    assert slopes_df["slope"].to_numpy() == pytest.approx(b)
    assert slopes_df["anti_steerable"].tolist() == [False, False, False, True]

    rel = reliability(_items("caa:ps:L14", b), n_boot=500, seed=1).iloc[0]
    assert rel["mean_slope"] == pytest.approx(b.mean())
    assert rel["anti_share"] == pytest.approx(0.25)
    assert rel["slope_low"] <= rel["mean_slope"] <= rel["slope_high"]
    assert rel["anti_low"] <= 0.25 <= rel["anti_high"]
    assert rel["shape"] == "increasing" and rel["monotonic"]
    assert rel["range_effect"] == pytest.approx(b.mean() * 0.4)


def test_bootstrap_ci_covers_the_true_mean_and_is_seeded():
    rng = np.random.default_rng(0)
    n, true = 200, 2.0
    vals = true + rng.standard_normal(n)  # sem = 1/sqrt(200) ~ 0.07
    idx = bootstrap_indices(n, 4000, seed=3)
    mean, lo, hi = bootstrap_ci(vals, idx)
    assert lo < true < hi
    assert hi - lo == pytest.approx(2 * 1.96 / math.sqrt(n), rel=0.2)
    assert np.array_equal(idx, bootstrap_indices(n, 4000, seed=3))
    with pytest.raises(ConfigError, match="confidence level"):
        bootstrap_ci(vals, idx, level=95.0)


def test_bootstrap_is_paired_across_vectors():
    b = np.random.default_rng(1).normal(5, 3, size=60)
    both = pd.concat([_items("a:x:L1", b), _items("b:x:L1", b + 1.0)])
    rel = reliability(both, n_boot=300).set_index("vector")
    # the same resampled items: CI bounds shift by exactly the constant difference
    assert rel.loc["b:x:L1", "slope_low"] - rel.loc["a:x:L1", "slope_low"] == pytest.approx(1.0)
    assert rel.loc["b:x:L1", "slope_high"] - rel.loc["a:x:L1", "slope_high"] == pytest.approx(1.0)


def test_non_monotonic_curves_are_flagged_not_summarised():
    rows = []
    for i in range(5):
        for x in X:  # V-shaped: both ends above the middle, ends equal
            rows.append({"vector": "freeform:x:L14", "strength": x, "item": i, "margin": abs(x)})
    rel = reliability(pd.DataFrame(rows), n_boot=100).iloc[0]
    assert rel["shape"] == "non-monotonic" and not rel["monotonic"]
    assert math.isnan(rel["range_effect"])
    assert monotonicity(X, -X) == "decreasing"
    assert monotonicity(X, np.zeros(5)) == "flat"
    assert monotonicity(X, np.array([0, 1, 0.99, 2, 3]), tol=0.05) == "increasing"


def test_strength_at_kl_interpolates_synthetic_curves():
    x = np.array([-0.2, -0.1, 0.0, 0.1, 0.2, 0.4])
    kl = 5.0 * x**2  # 0.05 at 0.1, 0.2 at 0.2, 0.8 at 0.4
    assert strength_at_kl(x, kl, 0.05) == pytest.approx(0.1)
    assert strength_at_kl(x, kl, 0.2) == pytest.approx(0.2)
    # between grid points: exact for KL = c s^2 (sqrt(KL) is interpolated linearly),
    # where interpolating KL itself would give 0.2 + 0.3 / 0.6 * 0.2 = 0.3 instead of 0.316
    assert strength_at_kl(x, kl, 0.5) == pytest.approx(math.sqrt(0.5 / 5.0))
    assert strength_at_kl(x, kl, 0.1) == pytest.approx(math.sqrt(0.1 / 5.0))
    assert strength_at_kl(x, kl, 0.01) == pytest.approx(math.sqrt(0.01 / 5.0))  # from 0
    # a curve that is not quadratic: exact at the swept points, monotone in between
    lin = 2.0 * np.abs(x)  # 0.2 at 0.1, 0.4 at 0.2, 0.8 at 0.4
    assert strength_at_kl(x, lin, 0.4) == pytest.approx(0.2)
    got = [strength_at_kl(x, lin, lv) for lv in (0.25, 0.3, 0.35)]
    assert 0.1 < got[0] < got[1] < got[2] < 0.2
    assert strength_at_kl(x, kl, 0.2, side=-1) == pytest.approx(-0.2)
    assert math.isnan(strength_at_kl(x, kl, 1.0))  # never reached: no extrapolation
    with pytest.raises(ConfigError, match="needs strength 0"):
        strength_at_kl(x[3:], kl[3:], 0.1)


def test_matched_kl_compares_methods_at_equal_damage():
    # Method A: margin slope 10, KL = 5 x^2; method B: margin slope 20 but KL = 20 x^2
    # (twice as damaging per unit strength). At KL 0.2: A is at x=0.2 (effect 2.0), B at
    # x=0.1 (effect 2.0): equal at matched damage although B's slope is twice A's.
    xs = np.array([0.0, 0.1, 0.2, 0.3])
    rows, kls = [], []
    for label, b, c in (("a:x:L1", 10.0, 5.0), ("b:x:L1", 20.0, 20.0)):
        for x in xs:
            kls.append({"vector": label, "strength": x, "kl": c * x**2})
            for i in range(8):
                rows.append({"vector": label, "strength": x, "item": i, "margin": b * x + i})
    items, kl = pd.DataFrame(rows), pd.DataFrame(kls)
    out = matched_kl(items, kl, levels=(0.05, 0.2, 0.5), n_boot=200)
    got = out.set_index(["vector", "target"])
    assert got.loc[("a:x:L1", 0.2), "strength"] == pytest.approx(0.2)
    assert got.loc[("b:x:L1", 0.2), "strength"] == pytest.approx(0.1)
    assert got.loc[("a:x:L1", 0.2), "effect"] == pytest.approx(2.0)
    assert got.loc[("b:x:L1", 0.2), "effect"] == pytest.approx(2.0)
    assert got.loc[("a:x:L1", 0.2), "effect_low"] == pytest.approx(2.0)  # no item noise
    # B reaches 0.5 nats at x = sqrt(0.5 / 20) = 0.158 (KL = 20 x^2): effect 20 x = 3.16
    assert got.loc[("b:x:L1", 0.5), "effect"] == pytest.approx(20.0 * math.sqrt(0.5 / 20.0))
    assert not got.loc[("a:x:L1", 0.5), "reached"]  # A's KL tops out at 0.45
    assert math.isnan(got.loc[("a:x:L1", 0.5), "effect"])
    # matched relative norm: B's effect is twice A's at the same strength
    ms = matched_strength(items, [0.15], n_boot=50).set_index("vector")
    assert ms.loc["a:x:L1", "effect"] == pytest.approx(1.5)
    assert ms.loc["b:x:L1", "effect"] == pytest.approx(3.0)
    assert not matched_strength(items, [0.5], n_boot=10)["reached"].any()


def test_curves_validate_their_input():
    items = _items("a:x:L1", np.ones(3))
    with pytest.raises(ConfigError, match="needs columns"):
        curves(items.drop(columns="margin"))
    with pytest.raises(ConfigError, match="lacks some"):
        curves(items.iloc[1:])
    with pytest.raises(ConfigError, match="KL frame lacks"):
        curves(items, kl=pd.DataFrame({"vector": ["a:x:L1"], "strength": [0.0], "kl": [0.0]}))


def test_anti_share_counts_moves_against_the_strengths_direction():
    # 10 items; margin = slope_i * x with slopes 1..7 positive, 3 negative. At x = +0.2 the
    # 3 negative-slope items fall (anti); at x = -0.2 the same 3 items rise: still anti.
    slopes_ = np.array([1, 2, 3, 4, 5, 6, 7, -1, -2, -3], dtype=float)
    xs = np.array([-0.2, 0.0, 0.2])
    rows = [
        {"vector": "v:m:L1", "strength": x, "item": i, "margin": s * x}
        for x in xs
        for i, s in enumerate(slopes_)
    ]
    ms = matched_strength(pd.DataFrame(rows), [-0.2, 0.2], n_boot=50).set_index("target")
    assert ms.loc[0.2, "anti_share"] == pytest.approx(0.3)
    assert ms.loc[-0.2, "anti_share"] == pytest.approx(0.3)
    assert ms.loc[-0.2, "effect"] < 0  # the mean moves in the strength's direction
