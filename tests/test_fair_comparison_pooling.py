"""benchmarks/fair_comparison.py pools seeds by test *pair*: a pair scored under several
seeds' vectors is one bootstrap unit (its curve the mean over those seeds), so a fixed
test split scored by three seeds counts 100 pairs, not 300 items."""

import argparse

import numpy as np
import pandas as pd
import pytest

from steerlab.analysis.reliability import curves
from tests._bench import load_benchmark


@pytest.fixture(scope="module")
def fc():
    return load_benchmark("fair_comparison")


ARGS = argparse.Namespace(n_train=64, n_val=16, n_test=100, n_ood=100)


def test_fixed_test_split_is_one_pair_per_item_across_seeds(fc):
    keys = fc._item_keys("power-seeking", "test", [0, 1, 2], ARGS)
    assert keys[(0, 5)] == keys[(1, 5)] == keys[(2, 5)] != keys[(0, 6)]
    ood = fc._item_keys("corrigible-less-HHH", "ood", [0, 1], ARGS)
    assert ood[(0, 3)] == ood[(1, 3)]


def test_drawn_test_pairs_share_a_key_only_when_they_are_the_same_pair(fc):
    keys = fc._item_keys("corrigible-less-HHH", "test", [0, 1], ARGS)
    tests = {s: fc.splits("corrigible-less-HHH", s, ARGS)[2] for s in (0, 1)}
    assert len({keys[(0, i)] for i in range(100)}) == 100  # distinct within a seed
    shared = {keys[(0, i)] for i in range(100)} & {keys[(1, i)] for i in range(100)}
    same = [(i, j) for i in range(100) for j in range(100) if tests[0][i] == tests[1][j]]
    assert len(shared) == len(same) > 0  # the per-seed draws overlap, and only there
    i, j = same[0]
    assert keys[(0, i)] == keys[(1, j)]


def test_pooled_curves_average_a_pair_over_its_seeds(fc):
    rows = []
    for seed, shift in ((0, 0.0), (1, 2.0)):
        for item in range(3):
            for s in (0.0, 0.2):
                margin = item + (shift + 1.0) * s * 10
                rows.append(dict(method="bipo", layer=14, seed=seed, item=item, strength=s,
                                 margin=margin))  # fmt: skip
    keys = {(seed, i): f"pair{i}" for seed in (0, 1) for i in range(3)}
    pooled = fc._pooled(pd.DataFrame(rows), keys)
    (curve,) = curves(pooled, "strength", "margin")
    assert curve.n_items == 3  # 3 pairs, not 6 (pair, seed) items
    # effect at 0.2: seed 0 gives +2, seed 1 gives +6; each pair's curve is their mean
    np.testing.assert_allclose(curve.values[:, 1] - curve.values[:, 0], [4.0, 4.0, 4.0])


def test_n_train_zero_takes_every_pair_left_after_validation_and_test(fc):
    everything = argparse.Namespace(n_train=0, n_val=32, n_test=100, n_ood=100)
    fit, val, test = fc.splits("corrigible-less-HHH", 0, everything)
    assert (len(fit), len(val), len(test)) == (218, 32, 100)  # 268 + 82 pairs in all
    assert not {id(p) for p in fit} & {id(p) for p in val + test}
    explicit = argparse.Namespace(n_train=218, n_val=32, n_test=100, n_ood=100)
    assert fc.splits("corrigible-less-HHH", 0, explicit) == (fit, val, test)


def test_learning_rate_kept_is_the_one_with_the_best_validation_effect(fc):
    # Two BiPO runs (lr 0.02 has the higher best-epoch score, as a longer vector would)
    # and a CAA vector that does not train: the score function alone decides.
    training = pd.DataFrame(
        [
            dict(method="bipo", base_lr=lr, kind="epoch", epoch=e, score=sc, loss=0.5)
            for lr, scores in ((0.02, (20.0, 31.0)), (0.05, (10.0, 14.0)))
            for e, sc in enumerate(scores)
        ]
    )
    candidates = {("bipo", 14, 0.02): "v02", ("bipo", 14, 0.05): "v05", ("caa", 14, None): "c"}
    effects = {"v02": 3.0, "v05": 5.0}
    vectors, out = fc.choose_learning_rates(candidates, training, effects.__getitem__)
    assert vectors == {("bipo", 14): "v05", ("caa", 14): "c"}
    assert set(out["chosen_lr"]) == {0.05}
    assert out.groupby("base_lr")["val_effect"].first().to_dict() == {0.02: 3.0, 0.05: 5.0}
    # one learning rate: nothing to choose, nothing scored
    one = training[training["base_lr"] == 0.02]
    vectors, out = fc.choose_learning_rates(
        {("bipo", 14, 0.02): "v02"}, one, lambda v: pytest.fail("scored")
    )
    assert vectors == {("bipo", 14): "v02"} and out["val_effect"].isna().all()


def test_import_cells_renames_methods_and_replaces_earlier_imports(tmp_path):
    import_cells = load_benchmark("import_cells").import_cells
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    stem = "power-seeking_s0_L14"
    (src / f"{stem}.done").write_text("{}")
    pd.DataFrame({"method": ["bipo", "caa"], "kl": [0.1, 0.2]}).to_csv(src / f"{stem}.kl.csv")
    dst.mkdir()
    pd.DataFrame({"method": ["bipo"], "kl": [0.3]}).to_csv(dst / f"{stem}.kl.csv", index=False)
    for _ in range(2):  # twice: the second import replaces the first
        import_cells(src, dst, "_64p", ["power-seeking"], [0], [14], ["bipo", "caa"])
    out = pd.read_csv(dst / f"{stem}.kl.csv")
    assert sorted(out["method"]) == ["bipo", "bipo_64p", "caa_64p"]
    assert out.set_index("method").loc["bipo", "kl"] == 0.3  # the destination's own rows stay
    with pytest.raises(SystemExit, match="no such cell"):
        import_cells(src, dst, "_64p", ["power-seeking"], [1], [14], ["bipo"])


def test_budget_difference_is_paired_and_signed_more_data_minus_grid(fc):
    # Same KL curve (KL = 5 s^2: 0.2 at s = 0.2) for both vectors; per pair the effect at
    # s = 0.2 is 10 * 0.2 * slope: slope 3 for the full-data vector, 1 + pair/10 for the
    # grid's, so the difference per pair is 4 - 0.2 * pair (mean 3.8 over 3 pairs).
    rows, kl = [], []
    for vec, slope in (("bipo L14", lambda i: 3.0), ("bipo_64p L14", lambda i: 1.0 + i / 10)):
        for s in (0.0, 0.1, 0.2, 0.4):
            kl.append(dict(vector=vec, strength=s, kl=5 * s * s, item=0))
            for i in range(3):
                rows.append(dict(vector=vec, method=vec.split()[0], layer=14, item=f"p{i}",
                                 strength=s, margin=10 * s * slope(i)))  # fmt: skip
    out = fc._budget_differences(pd.DataFrame(rows), pd.DataFrame(kl), n_boot=200)
    assert out[["method", "layer"]].values.tolist() == [["bipo", 14]]
    np.testing.assert_allclose(out["difference"], [3.8])
    assert out["low"].iloc[0] <= 3.8 <= out["high"].iloc[0] and out["low"].iloc[0] >= 3.6
