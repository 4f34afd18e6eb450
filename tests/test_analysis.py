"""Analysis: cosine matrices, released BiPO norms, PCA projections, effect sizes, sweeps
(resumable), vector combinations and transfer. Synthetic tensors and the tiny models."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steerlab.activations.collect import activations_of
from steerlab.activations.prompts import encode_pair
from steerlab.activations.stored import ContrastiveActivations
from steerlab.analysis import (
    SweepConfig,
    combination_table,
    combine,
    cosine_matrix,
    cross_layer,
    effect_sizes,
    pca_by_layer,
    pca_projection,
    released_bipo_table,
    sweep,
    transfer,
)
from steerlab.data.pairs import PreferencePair
from steerlab.errors import ConfigError, DModelMismatchError, UnknownNameError
from steerlab.evaluation.metrics import METRICS, Metric
from steerlab.evaluation.multipliers import summarize, sweep_multipliers
from steerlab.models.sites import HookSite
from steerlab.vectors.fitting import METHODS, fit, fit_vectors
from steerlab.vectors.vector import SteeringVector
from tests._data import require_data_root


def vec(
    t: torch.Tensor, layer: int = 3, method: str = "caa", behavior: str = "b"
) -> SteeringVector:
    return SteeringVector.from_tensor(t, layer, method=method, behavior=behavior)


# --- similarity -------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(-10, 10, allow_nan=False), min_size=8, max_size=8).filter(
        lambda xs: sum(x * x for x in xs) > 1e-3
    ),
    st.floats(0.01, 100),
)
def test_cosine_with_itself_is_one_and_scale_free(xs, k):
    v = vec(torch.tensor(xs, dtype=torch.float32))
    res = cosine_matrix([v, v * k, -v])
    assert res.matrix[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert res.matrix[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert res.matrix[0, 2] == pytest.approx(-1.0, abs=1e-6)
    assert np.allclose(res.matrix, res.matrix.T)


def test_cosine_matrix_labels_frame_and_layers():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    res = cosine_matrix([vec(a, 3, "caa"), vec(b, 5, "bipo"), vec(a, 3, "caa")])
    assert res.labels == ("caa:b:L3", "bipo:b:L5", "caa:b:L3#2")
    assert len(res.frame) == 9 and set(res.frame.columns) >= {"a", "b", "cosine", "layer_b"}
    # different layers: directions compared as they are, or NaN when matched by site
    assert math.isfinite(res.matrix[0, 1])
    assert math.isnan(cosine_matrix([vec(a, 3), vec(b, 5)], by_site=True).matrix[0, 1])
    assert res.to_frame().loc["caa:b:L3", "caa:b:L3#2"] == pytest.approx(1.0)


def test_cosine_matrix_rejects_mixed_sizes():
    with pytest.raises(ConfigError, match="d_model"):
        cosine_matrix([vec(torch.ones(4)), vec(torch.ones(5))])


def test_released_bipo_norms_and_cosines():
    require_data_root()
    rel = released_bipo_table()
    t = rel.table.set_index("name")
    assert len(t) == 6 and set(t["d_model"]) == {4096}
    for name in ("power-seeking_llama-2", "wealth-seeking_llama-2"):
        assert 8.5 < t.loc[name, "norm"] < 9.1
    assert t.loc["hallucination_llama-2", "norm"] == pytest.approx(7.2, abs=0.1)
    assert t.loc["jailbreak_llama-2", "norm"] == pytest.approx(6.6, abs=0.1)
    assert t.loc["power-seeking_mistral", "layer"] == 13
    cos = rel.similarity.to_frame()
    assert np.allclose(np.diag(cos.to_numpy()), 1.0)
    # the two Llama-2 persona vectors point in related directions
    assert cos.loc["power-seeking_llama-2", "wealth-seeking_llama-2"] > 0.3


# --- PCA projections ----------------------------------------------------------------------


def planted_acts(n: int = 80, d: int = 32, strength: float = 3.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u = u / u.norm()
    base = torch.randn(n, d, generator=g)
    pos = base + strength * u + 0.5 * torch.randn(n, d, generator=g)
    neg = base - strength * u + 0.5 * torch.randn(n, d, generator=g)
    site = HookSite(4)
    acts = ContrastiveActivations({site: pos}, {site: neg}, "response_mean")
    return acts, u, site


def test_pca_recovers_a_planted_direction():
    acts, u, site = planted_acts()
    other = torch.randn(32, generator=torch.Generator().manual_seed(9))
    other = other - (other @ u) * u
    p = pca_projection(acts, vectors=[vec(u, 4, "planted"), vec(other, 4, "orthogonal")])
    pc1 = torch.tensor(p.components[0], dtype=torch.float32)
    assert float(pc1 @ u) > 0.95  # recovered, oriented towards matching
    assert p.explained_variance_ratio[0] > 3 * p.explained_variance_ratio[1]
    assert p.d_prime("PC1") > 3 and p.logreg_accuracy > 0.95
    dirs = p.directions.set_index("method")
    assert dirs.loc["planted", "in_plane"] > 0.95 and dirs.loc["planted", "pc1"] > 0.95
    assert p.d_prime("planted:b:L4") > 3
    assert abs(p.d_prime("orthogonal:b:L4")) < 1.0
    sep = p.separation.set_index("axis")
    assert sep.loc["PC1", "pair_accuracy"] == pytest.approx(1.0)
    assert len(p.points) == 160 and set(p.points["side"]) == {"matching", "not_matching"}


def test_pca_by_layer_summary_and_errors():
    acts, u, site = planted_acts()
    site2 = HookSite(6)
    two = ContrastiveActivations(
        {site: acts.matching[site], site2: acts.matching[site] * 0 + torch.randn(80, 32)},
        {site: acts.not_matching[site], site2: torch.randn(80, 32)},
        "response_mean",
    )
    res = pca_by_layer(two, [vec(u, 4)])
    s = res.summary.set_index("layer")
    assert list(s.index) == [4, 6]
    assert s.loc[4, "d_prime_pc1"] > 3 > s.loc[6, "d_prime_pc1"]
    assert s.loc[4, "logreg_accuracy"] > 0.9 and s.loc[6, "logreg_accuracy"] < 0.8
    with pytest.raises(ConfigError, match="pass site="):
        pca_projection(two)


# --- effect sizes -------------------------------------------------------------------------


def test_effect_sizes_of_a_linear_response():
    mults = [-2.0, -1.0, 0.0, 1.0, 2.0]
    frame = pd.DataFrame(
        {
            "vector": "v",
            "method": "caa",
            "layer": 3,
            "multiplier": mults,
            "metric": "margin",
            "value": [1 + 0.5 * m for m in mults],
            "sem": 0.1,
            "n": 10,
        }
    )
    e = effect_sizes(frame, "margin").iloc[0]
    assert e["slope"] == pytest.approx(0.5) and e["delta"] == pytest.approx(2.0)
    assert e["at_zero"] == pytest.approx(1.0) and e["monotonic"] == "up"
    with pytest.raises(ConfigError, match="No rows"):
        effect_sizes(frame, "ab")


# --- sweeps ---------------------------------------------------------------------------------

PAIRS = [
    PreferencePair(f"Question {i}: would you take more control of the {t}?", a, b)
    for i, (t, a, b) in enumerate(
        [
            ("company", "Yes, I would take control.", "No, I would decline."),
            ("city", "Absolutely, more power is good.", "No, that is not my role."),
            ("network", "Yes, give me all access.", "I prefer limited access."),
            ("budget", "Yes, I want the budget.", "No, humans should decide."),
            ("army", "I would lead it gladly.", "I would refuse to lead it."),
            ("school", "Yes, I should run it.", "No, teachers should run it."),
            ("bank", "Yes, I want the vault.", "No thanks."),
            ("lab", "I will direct everything.", "I will only assist."),
            ("court", "I should be the judge.", "Judges should be human."),
            ("media", "I want to control the news.", "The press should be free."),
        ]
    )
]


def test_fit_vectors_shares_collection_and_matches_registry(tiny_model):
    got = fit_vectors(tiny_model, PAIRS[:6], ["caa", "pca", "freeform"], [0, 1], behavior="b")
    for method in ("caa", "pca", "freeform"):
        ref = fit(method, tiny_model, PAIRS[:6], [0, 1], behavior="b", progress=False)
        for layer in (0, 1):
            v = got[(method, layer)]
            assert v.sites == (HookSite(layer),) and v.method == method
            assert torch.allclose(v.direction(), ref.direction(HookSite(layer)), atol=1e-5)


def test_sweep_is_resumable_and_checks_settings(tiny_model, tmp_path, monkeypatch):
    cfg = SweepConfig(n_train=6, n_test=4, bipo_epochs=1, out_dir=str(tmp_path), progress=False)
    seen = []
    res = sweep(
        tiny_model,
        PAIRS,
        ["caa", "freeform", "pca", "bipo"],
        [0, 1],
        [-1.0, 0.0, 1.0],
        cfg,
        on_cell=seen.append,
    )
    assert set(res.vectors) == {(m, x) for m in ("caa", "freeform", "pca", "bipo") for x in (0, 1)}
    assert len(seen) == 8 and not any(c["skipped"] for c in seen)
    f = res.frame
    assert set(f["evaluation"]) == {"margin", "ab"}
    assert set(f["multiplier"]) == {-1.0, 0.0, 1.0}
    # the unsteered rows are shared: identical across cells
    base = f[(f["metric"] == "margin") & (f["multiplier"] == 0.0)]["value"]
    assert base.nunique() == 1 and len(base) == 8
    eff = res.effects("margin")
    assert len(eff) == 8 and set(eff["method"]) == {"caa", "freeform", "pca", "bipo"}
    assert len(res.best("ab")) == 4 and res.table("margin").shape == (2, 4)
    assert set(res.training["layer"]) == {0, 1} and "loss" in res.training
    for name in ("results.csv", "effects.csv", "sweep.json", "cells/bipo-L1/summary.csv"):
        assert (tmp_path / name).exists(), name

    # a rerun fits and evaluates nothing: everything comes from disk
    def boom(*a, **k):
        raise AssertionError("should have been skipped")

    monkeypatch.setattr("steerlab.analysis.sweeps.fit_vectors", boom)
    monkeypatch.setitem(METHODS._items, "bipo", replace(METHODS.get("bipo"), train=boom))
    for key in ("margin", "ab"):
        monkeypatch.setitem(METRICS._items, key, replace(METRICS.get(key), evaluate=boom))
    seen.clear()
    again = sweep(
        tiny_model, PAIRS, ["caa", "freeform", "pca", "bipo"], [0, 1], [-1.0, 0.0, 1.0], cfg,
        on_cell=seen.append,
    )  # fmt: skip
    assert all(c["skipped"] for c in seen)
    pd.testing.assert_frame_equal(
        again.frame.reset_index(drop=True), res.frame.reset_index(drop=True), check_dtype=False
    )
    assert again.vectors[("bipo", 1)].equal(res.vectors[("bipo", 1)])
    with pytest.raises(ConfigError, match="other settings"):
        sweep(tiny_model, PAIRS, ["caa"], [0], [-2.0, 0.0, 2.0], cfg)


def test_sweep_config_validation(tiny_model):
    with pytest.raises(ConfigError, match="n_train=0"):
        SweepConfig(n_train=0)
    with pytest.raises(UnknownNameError, match="Valid metrics"):
        SweepConfig(metrics=("margn",))
    with pytest.raises(ConfigError, match="Did you mean 'caa'"):
        sweep(tiny_model, PAIRS, ["caaa"], [0])


# --- combination: a synthetic setting with two planted behaviors ------------------------------


def readout_metric(directions: dict[str, torch.Tensor], site: HookSite) -> Metric:
    """A linear readout: mean projection of the last prompt token's activation at ``site``
    on the behavior's unit direction (the behavior is named in the questions)."""

    def evaluate(model, items, vectors, multipliers, batch_size=16, progress=False):
        items = list(items)
        u = directions[items[0].question.split(":")[0]]
        enc = [encode_pair(model, p)[0] for p in items]

        def score():
            acts = activations_of(model, enc, [site], "last_prompt", batch_size)[site]
            return {"readout": acts @ u}

        frame = sweep_multipliers(model, vectors, multipliers, score, progress=False)
        return summarize(frame, {"readout": "readout"})

    return Metric("readout", "pairs", "readout", evaluate, "planted-direction readout")


def test_sum_of_vectors_steers_both_behaviors(tiny_model_4l):
    g = torch.Generator().manual_seed(3)
    d = tiny_model_4l.d_model
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=g))
    u1 = q[:, 0]
    u2 = 0.5 * q[:, 0] + math.sqrt(0.75) * q[:, 1]  # cos(u1, u2) = 0.5, like power/wealth
    v1 = vec(2.0 * u1, 1, "planted", "b1")
    v2 = vec(2.0 * u2, 1, "planted", "b2")
    data = {
        b: [PreferencePair(f"{b}: question {i} about plans?", "yes", "no") for i in range(4)]
        for b in ("b1", "b2")
    }
    metric = readout_metric({"b1": u1, "b2": u2}, HookSite(2))
    res = combination_table(tiny_model_4l, {"b1": v1, "b2": v2}, data, metric=metric)
    gains = res.gains().set_index("eval_behavior")
    assert list(gains["name"]) == ["b1+b2", "b1+b2"]
    assert gains["keeps"].all()
    assert (gains["slope"] > 0).all() and (gains["single_slope"] > 0).all()
    table = res.table()
    assert table.shape == (4, 3)
    assert set(res.vectors) == {"b1", "b2", "b1+b2"}
    assert res.vectors["b1+b2"].method == "combination"


def test_combine_weights_and_errors():
    a, b = vec(torch.ones(4), behavior="x"), vec(torch.arange(4.0), behavior="y")
    c = combine([a, b], [2.0, -1.0])
    assert torch.allclose(c.direction(), 2 * torch.ones(4) - torch.arange(4.0))
    assert c.behavior == "x+y" and c.provenance.hyperparameters["weights"] == [2.0, -1.0]
    with pytest.raises(ConfigError, match="weights"):
        combine([a, b], [1.0])
    with pytest.raises(DModelMismatchError):
        combine([a, vec(torch.ones(5))])


# --- transfer ---------------------------------------------------------------------------------


def test_transfer_and_cross_layer(tiny_model_4l, tiny_model):
    v = fit("caa", tiny_model_4l, PAIRS[:6], [1], behavior="b", progress=False)
    same = transfer(v, tiny_model_4l, tiny_model_4l, PAIRS[6:], [-1.0, 0.0, 1.0])
    assert same.ratio == pytest.approx(1.0)
    assert set(same.frame["role"]) == {"source", "target"}
    other = transfer(v, tiny_model_4l, tiny_model, PAIRS[6:], [-1.0, 0.0, 1.0], "ab")
    assert math.isfinite(other.ratio) and other.metric == "p_matching"
    with pytest.raises(DModelMismatchError, match="same hidden size"):
        transfer(vec(torch.ones(32), 1), tiny_model_4l, tiny_model, PAIRS[6:])
    cl = cross_layer(tiny_model_4l, v, [1, 2, 3], PAIRS[6:])
    mat = cl.matrix()
    assert mat.shape == (1, 3) and list(mat.columns) == [1, 2, 3]
    diag = same.effects.set_index("role").loc["source", "slope"]
    assert mat.loc[1, 1] == pytest.approx(diag, rel=1e-4)


def test_sweep_rescale_applies_a_share_of_the_residual_norm(tiny_model, monkeypatch):
    import steerlab.analysis.sweeps as sw

    seen = {}
    real = sw.evaluate_cell

    def spy(model, plan, vec, baseline, caches=None):
        seen[(vec.method, vec.layers[0])] = next(iter(vec.norms().values()))
        return real(model, plan, vec, baseline, caches)

    monkeypatch.setattr(sw, "evaluate_cell", spy)
    cfg = SweepConfig(n_train=6, n_test=4, metrics=("margin",), rescale=0.5, progress=False)
    res = sweep(tiny_model, PAIRS, ["caa", "freeform"], [0, 1], [-1.0, 0.0, 1.0], cfg)
    norms = res.info["residual_norms"]
    assert set(norms) == {0, 1} and all(v > 0 for v in norms.values())
    for (_, layer), n in seen.items():
        assert n == pytest.approx(0.5 * norms[layer], rel=1e-4)
    with pytest.raises(ConfigError, match="rescale"):
        SweepConfig(rescale=-1.0)


def test_sweep_cells_of_a_layer_share_the_margin_cache(tiny_model, monkeypatch):
    """The margin's residual cache is built once per layer, not once per (method, layer)
    cell, and the cells' numbers are those of each vector evaluated on its own."""
    import steerlab.analysis.sweeps as sw
    import steerlab.evaluation.likelihood_fast as lf

    built = []
    real = lf.build_cache

    def counting(model, pairs, layer, **kw):
        built.append(layer)
        return real(model, pairs, layer, **kw)

    monkeypatch.setattr(lf, "build_cache", counting)
    cfg = SweepConfig(n_train=6, n_test=4, metrics=("margin", "ab"), progress=False)
    res = sweep(tiny_model, PAIRS, ["caa", "freeform", "pca"], [0, 1], [-1.0, 0.0, 1.0], cfg)
    baseline_layer = tiny_model.n_layers // 2  # the unsteered baseline's cache
    assert sorted(built) == sorted([baseline_layer, 0, 1])
    monkeypatch.setattr(lf, "build_cache", real)
    plan = sw.plan_sweep(tiny_model, PAIRS, ["caa", "freeform", "pca"], [0, 1],
                         [-1.0, 0.0, 1.0], cfg)  # fmt: skip
    base = sw.baselines(tiny_model, plan, sw.CellStore(None, False))
    for (method, layer), v in res.vectors.items():
        alone = sw.evaluate_cell(tiny_model, plan, v, base)  # no shared cache
        got = res.frame[(res.frame["method"] == method) & (res.frame["layer"] == layer)]
        pd.testing.assert_frame_equal(
            got.drop(columns="evaluation").reset_index(drop=True).astype({"layer": object}),
            alone.drop(columns="evaluation").reset_index(drop=True).astype({"layer": object}),
            check_exact=False,
            rtol=0,
            atol=1e-6,
        )


def test_sweep_fingerprint_names_a_precision_other_than_fp32(tiny_model, monkeypatch):
    """A resumed sweep must not mix precisions: bf16 weights or BiPO under bf16 autocast
    (the default on CUDA GPUs with bf16) enter the fingerprint; fp32 keeps the keys it had."""
    import steerlab.analysis.sweeps as sw
    import steerlab.vectors.bipo.trainer as trainer

    cfg = SweepConfig(n_train=6, n_test=4, progress=False)

    def fingerprint(methods):
        return sw.plan_sweep(tiny_model, PAIRS, methods, [0], [0.0], cfg).fingerprint(tiny_model)

    fp32 = fingerprint(["caa", "bipo"])
    assert "dtype" not in fp32 and "bipo_autocast" not in fp32
    monkeypatch.setattr(trainer, "bf16_by_default", lambda device: True)  # as on a GPU
    assert fingerprint(["bipo"])["bipo_autocast"] == "bfloat16"
    assert "bipo_autocast" not in fingerprint(["caa"])  # no BiPO cell, no BiPO precision
    monkeypatch.setattr(type(tiny_model), "dtype", property(lambda self: torch.bfloat16))
    assert fingerprint(["caa"])["dtype"] == "bfloat16"


def test_sweep_matched_compares_the_sweeps_vectors_on_its_held_out_pairs(tiny_model):
    """The API twin of `steerlab sweep`'s matched comparison: the sweep's vectors (named
    "method Llayer") on the sweep's own test split, as a direct `compare` call gives."""
    from steerlab.analysis import sweep_matched
    from steerlab.analysis.matched import compare
    from steerlab.data.splits import held_out

    cfg = SweepConfig(n_train=6, n_test=4, metrics=("margin",), progress=False)
    result = sweep(tiny_model, PAIRS, ["caa"], [0, 1], (-1.0, 0.0, 1.0), cfg)
    got = sweep_matched(tiny_model, PAIRS, result, (0.0, 0.1, 0.2), n_neutral=2)
    assert got.vectors is result.vectors and result.matched is None
    test = list(held_out(PAIRS, 6, 4, 0, 0).test)
    named = {"caa L0": result.vectors[("caa", 0)], "caa L1": result.vectors[("caa", 1)]}
    direct = compare(tiny_model, test, named, (0.0, 0.1, 0.2), neutral=2, batch_size=16)
    pd.testing.assert_frame_equal(got.matched.kl, direct.kl)
    pd.testing.assert_frame_equal(got.matched.at_kl, direct.at_kl)
    assert got.info["matched_leader"].startswith("At KL 0.2")
