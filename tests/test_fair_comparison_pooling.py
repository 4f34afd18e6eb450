"""benchmarks/fair_comparison.py pools seeds by test *pair*: a pair scored under several
seeds' vectors is one bootstrap unit (its curve the mean over those seeds), so a fixed
test split scored by three seeds counts 100 pairs, not 300 items."""

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steerlab.analysis.reliability import curves

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fc():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(
            "steerlab_bench_fair_comparison", ROOT / "benchmarks" / "fair_comparison.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


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
