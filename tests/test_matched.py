"""Named vectors compared at matched KL and matched strength: known answers on synthetic
frames, and invariants of the measured comparison on the tiny model."""

import numpy as np
import pandas as pd
import pytest
import torch

from steerlab.analysis.matched import (
    compare,
    difference,
    direction_verdict,
    fmt_ci,
    leader,
    tabulate,
    verdict,
)
from steerlab.data.neutral import load_neutral_set
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.vectors.vector import SteeringVector
from tests._data import SMALL_PAIRS

X = (-0.2, 0.0, 0.1, 0.2, 0.4)


def _frames(slopes: dict[str, float], n: int, both_fall: bool = False):
    """margin_i(s) = b s for every item; KL(s) = s^2 for every vector (so KL 0.04 is
    reached at s = +-0.2). log p(matching) falls too when ``both_fall``."""
    rows, kl = [], []
    for name, b in slopes.items():
        for s in X:
            dm = -abs(b) * s * s if both_fall else 0.5 * b * s
            dn = dm - b * s
            for i in range(n):
                rows.append({"vector": name, "method": name, "layer": 14, "strength": s,
                             "item": i, "margin": b * s + 1.0, "d_logp_matching": dm,
                             "d_logp_not_matching": dn})  # fmt: skip
            kl.append({"vector": name, "strength": s, "kl": s * s})
    return pd.DataFrame(rows), pd.DataFrame(kl)


def test_tabulate_known_effects_at_matched_kl_and_strength():
    items, kl = _frames({"big": 10.0, "small": 5.0}, n=30)
    comp = tabulate(items, kl, kl_levels=(0.04,), sides=(1, -1), n_boot=200)
    at = comp.at_kl.set_index(["vector", "side"])
    assert at.loc[("big", 1), "strength"] == pytest.approx(0.2)
    assert at.loc[("big", 1), "effect"] == pytest.approx(2.0)
    assert at.loc[("small", -1), "effect"] == pytest.approx(-1.0)
    assert at.loc[("big", 1), "d_logp_matching_effect"] == pytest.approx(1.0)
    at_s = comp.at_strength.set_index(["vector", "target"])
    assert at_s.loc[("small", 0.4), "effect"] == pytest.approx(2.0)
    assert comp.n_items == 30 and comp.strengths == X
    table = comp.table("kl", 0.04)
    assert list(table["margin change"]) == ["+2.00 [+2.00, +2.00]", "+1.00 [+1.00, +1.00]"]
    # every pair moves the intended way on both sides (down is intended at negative strengths)
    down = comp.table("kl", 0.04, side=-1)
    assert list(down["margin change"]) == ["-2.00 [-2.00, -2.00]", "-1.00 [-1.00, -1.00]"]
    assert set(down["pairs moved the wrong way"]) == {"0.00 [0.00, 0.00]"}
    assert set(table["pairs moved the wrong way"]) == {"0.00 [0.00, 0.00]"}


def test_difference_and_verdict_need_a_ci_and_enough_items():
    items, kl = _frames({"big": 10.0, "small": 5.0}, n=30)
    comp = tabulate(items, kl, kl_levels=(0.04,), n_boot=200)
    d = difference(comp, "big", "small", 0.04)
    assert d["reached"] and d["difference"] == pytest.approx(1.0)
    assert verdict(comp, "big", "small", 0.04).startswith("At KL 0.04 nats/token, big moves")
    assert "small moves the margin further than big" not in verdict(comp, "small", "big", 0.04)
    assert "big moves the margin further than small" in verdict(comp, "small", "big", 0.04)
    assert "too few" in verdict(comp, "big", "small", 0.04, min_items=31)
    assert "big moves the margin furthest" in leader(comp, 0.04)
    assert "not reached" in verdict(comp, "big", "small", 0.5)  # KL stops at 0.16
    neg = difference(comp, "big", "small", 0.1, by="strength", side=-1)
    assert neg["difference"] == pytest.approx(0.5)  # at strength -0.1 big moves it further down


def test_verdict_says_the_ci_includes_zero_when_it_does():
    items, kl = _frames({"a": 10.0, "b": 10.0}, n=30)
    rng = np.random.default_rng(0)
    items["margin"] += rng.normal(0, 1, len(items))  # noise around the same effect
    comp = tabulate(items, kl, kl_levels=(0.04,), n_boot=500)
    assert "cannot be told apart" in verdict(comp, "a", "b", 0.04)
    assert "no single best" in leader(comp, 0.04)


def test_notes_flag_damage_and_non_monotonic_curves():
    items, kl = _frames({"v": 10.0}, n=25, both_fall=True)
    items.loc[items["strength"] == 0.4, "margin"] = 0.0  # the curve turns down: a V
    comp = tabulate(items, kl, kl_levels=(0.04,), n_boot=100)
    note = comp.table("kl", 0.04)["note"].iloc[0]
    assert "both answers less likely" in note and "not monotonic" in note
    assert fmt_ci(float("nan"), 0.0, 1.0) == "n/r"
    with pytest.raises(ConfigError, match="needs item columns"):
        tabulate(items.drop(columns=["d_logp_matching"]), kl)
    with pytest.raises(ConfigError, match="use 'kl'"):
        comp.table("multiplier")
    with pytest.raises(ConfigError, match="No vector 'w'"):
        comp.effects("w", 0.04)


@pytest.fixture(scope="module")
def vec():
    g = torch.Generator().manual_seed(0)
    return SteeringVector.from_tensor(torch.randn(64, generator=g), 1, method="caa", behavior="x")


def test_compare_on_the_tiny_model_is_norm_free_and_paired(tiny_model, vec):
    vectors = {"v": vec, "long v": vec * 7.0, "minus v": vec * -1.0}
    comp = compare(
        tiny_model, SMALL_PAIRS, vectors, (-0.3, 0.1, 0.3), kl_levels=(1e-4,),
        sides=(1, -1), neutral=load_neutral_set(n=3), n_boot=100,
    )  # fmt: skip
    assert comp.vectors == list(vectors)
    norms = comp.norms.set_index("vector")["strength_at_1"]
    assert norms["long v"] == pytest.approx(7 * norms["v"])
    # in norm units a vector's length does not matter: identical margins and KL
    items = comp.items.set_index(["vector", "strength", "item"])["margin"].sort_index()
    assert items["long v"].to_numpy() == pytest.approx(items["v"].to_numpy(), abs=1e-4)
    kl = comp.kl.set_index(["vector", "strength"])["kl"]
    assert kl[("v", 0.0)] == 0.0 and kl[("v", 0.3)] > 0
    # -v at +s is v at -s
    assert items[("minus v", 0.3)].to_numpy() == pytest.approx(
        items[("v", -0.3)].to_numpy(), abs=1e-4
    )
    zero = comp.items[comp.items["strength"] == 0.0]
    assert (zero[["d_margin", "d_logp_matching", "d_logp_not_matching"]] == 0).all().all()
    d = difference(comp, "v", "long v", 0.1, by="strength")
    assert d["difference"] == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(EmptyInputError):
        compare(tiny_model, SMALL_PAIRS, {})
    with pytest.raises(ConfigError, match="< 0 for side -1"):
        compare(tiny_model, SMALL_PAIRS, {"v": vec}, (0.1,), sides=(-1,))


def test_direction_verdict_reads_each_side_from_its_ci():
    items, kl = _frames({"two-way": 10.0}, n=25)
    comp = tabulate(items, kl, kl_levels=(0.04,), sides=(1, -1), n_boot=100)
    text = direction_verdict(comp, "two-way", 0.04)
    assert text.count("the intended way") == 2
    flat = items.assign(margin=np.where(items["strength"] < 0, 1.0, items["margin"]))
    comp = tabulate(flat, kl, kl_levels=(0.04,), sides=(1, -1), n_boot=100)
    assert "negative strengths give no clear change" in direction_verdict(comp, "two-way", 0.04)
    assert "too few" in direction_verdict(comp, "two-way", 0.04, min_items=26)
    with pytest.raises(ConfigError, match="sides=\\(1, -1\\)"):
        direction_verdict(tabulate(items, kl, kl_levels=(0.04,), n_boot=10), "two-way", 0.04)
