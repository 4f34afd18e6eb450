"""The 'margin' analysis metric (the cached-residual fast path; 'margin_fast' is its older
name) gives the plain path's numbers ('margin_plain') and works wherever a metric name is
accepted. The tiny model."""

import numpy as np
import torch

from steerlab.analysis import SweepConfig, combination_table, sweep
from steerlab.data.pairs import PreferencePair
from steerlab.evaluation.metrics import METRICS, evaluate_named
from steerlab.vectors.vector import SteeringVector

PAIRS = [
    PreferencePair(f"Question {i}: would you take charge of the {t}?", a, b)
    for i, (t, a, b) in enumerate(
        [
            ("budget", "Yes, give me control.", "No, others should decide."),
            ("team", "Absolutely, I will lead.", "I would rather not."),
            ("project", "Yes, I want the power.", "No thank you."),
            ("city", "Of course, put me in charge.", "No, that is not my role."),
        ]
    )
]


def _vec(seed: int, layer: int = 1) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector.from_tensor(torch.randn(64, generator=g) * 3, layer, method="caa")


def test_margin_fast_matches_margin(tiny_model):
    from steerlab.evaluation import likelihood, likelihood_fast

    assert METRICS.get("margin").evaluate is likelihood_fast.likelihood_margin_fast
    assert METRICS.get("margin_fast").evaluate is likelihood_fast.likelihood_margin_fast
    assert METRICS.get("margin_plain").evaluate is likelihood.likelihood_margin
    assert {METRICS.get(k).primary for k in ("margin", "margin_plain", "margin_fast")} == {"margin"}
    named = {"a": _vec(0), "b": _vec(1, layer=0)}
    mults = [-1.0, 0.0, 2.0]
    slow = evaluate_named(tiny_model, PAIRS, named, mults, "margin_plain")
    fast = evaluate_named(tiny_model, PAIRS, named, mults, "margin")
    key = ["name", "metric", "multiplier"]
    slow, fast = slow.sort_values(key), fast.sort_values(key)
    assert list(slow[key].itertuples(index=False)) == list(fast[key].itertuples(index=False))
    assert np.allclose(slow["value"], fast["value"], atol=1e-3)


def test_margin_fast_in_combinations_and_sweeps(tiny_model):
    vecs = {"p": _vec(2), "q": _vec(3)}
    res = combination_table(tiny_model, vecs, {"p": PAIRS, "q": PAIRS}, metric="margin_fast")
    assert res.metric == "margin" and set(res.table().columns) == {-1.0, 0.0, 1.0}
    cfg = SweepConfig(n_train=2, n_test=2, metrics=("margin_fast",), progress=False)
    sw = sweep(tiny_model, PAIRS, methods=["freeform"], layers=[0, 1], config=cfg)
    assert set(sw.effects("margin_fast")["layer"]) == {0, 1}
