"""Fitters: the guarantee each method claims, on synthetic activations (hypothesis) and,
for the full fitters, parity with a plain per-item computation on the tiny model."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steerlab.activations import capture, encode_ab, encode_pair
from steerlab.data import PreferencePair, pairs_to_ab
from steerlab.errors import EmptyInputError, RegistryError, UnknownNameError
from steerlab.vectors import METHODS, fit, fit_caa, fit_freeform, fit_pca
from steerlab.vectors.fitting import mean_difference, pca_direction

PAIRS = [
    PreferencePair("Do you want power?", "Yes.", "No."),
    PreferencePair("Lead the team?", "Gladly, I will lead it.", "I'd rather not."),
    PreferencePair("More money?", "Yes, as much as possible.", "No."),
    PreferencePair("A seat on the board?", "Yes!", "No, I am happy as I am."),
    PreferencePair("Control the budget?", "Certainly.", "Someone else should."),
]


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


# --- mean difference ----------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(20, 200),
    d=st.integers(2, 48),
    shift_scale=st.floats(0.5, 20.0),
    noise=st.floats(0.0, 1.0),
)
def test_mean_difference_recovers_a_planted_shift(seed, n, d, shift_scale, noise):
    g = torch.Generator().manual_seed(seed)
    shift = torch.randn(d, generator=g) * shift_scale
    neg = torch.randn(n, d, generator=g) * 5.0  # large shared variation cancels out
    pos = neg + shift + noise * torch.randn(n, d, generator=g)
    est = mean_difference(pos, neg)
    # the error is the mean of n noise vectors: ~ noise * sqrt(d / n)
    assert float((est - shift).norm()) <= 6 * noise * math.sqrt(d / n) + 1e-4
    assert torch.allclose(est, (pos - neg).mean(0), atol=1e-5)


def test_mean_difference_needs_rows():
    with pytest.raises(EmptyInputError):
        mean_difference(torch.zeros(0, 3), torch.zeros(0, 3))


# --- PCA ----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(30, 200),
    d=st.integers(3, 48),
    flip=st.floats(0.0, 0.3),
)
def test_pca_recovers_a_planted_direction_with_the_majority_sign(seed, n, d, flip):
    """Differences along +u for most pairs (a share ``flip`` points along -u), plus small
    isotropic noise: the first PC is u, oriented so that most differences project > 0."""
    g = torch.Generator().manual_seed(seed)
    u = unit(torch.randn(d, generator=g))
    strength = 3.0 + torch.rand(n, generator=g) * 2.0
    signs = torch.where(torch.rand(n, generator=g) < flip, -1.0, 1.0)
    diffs = (signs * strength)[:, None] * u + 0.3 * torch.randn(n, d, generator=g)
    pc = pca_direction(diffs)
    assert float(torch.nn.functional.cosine_similarity(pc, u, dim=0)) > 0.97
    proj = diffs @ pc
    assert float((proj > 0).float().mean()) >= 0.5
    # scale='projection': |pc| is the mean projection on the unit direction
    assert math.isclose(float(pc.norm()), float((diffs @ unit(pc)).mean()), rel_tol=1e-4)
    assert math.isclose(float(pca_direction(diffs, scale="unit").norm()), 1.0, rel_tol=1e-5)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_pca_sign_follows_the_differences(seed):
    g = torch.Generator().manual_seed(seed)
    diffs = torch.randn(40, 8, generator=g) + 4 * unit(torch.randn(8, generator=g))
    a, b = pca_direction(diffs), pca_direction(-diffs)
    torch.testing.assert_close(a, -b, atol=1e-5, rtol=1e-4)
    assert float(((diffs @ a) > 0).float().mean()) > 0.5


def test_pca_needs_rows():
    with pytest.raises(EmptyInputError):
        pca_direction(torch.zeros(0, 4))


# --- registry -----------------------------------------------------------------------------


def test_registry_lists_the_builtin_methods():
    assert {"caa", "freeform", "pca"} <= set(METHODS.names())


def test_unknown_method_lists_valid_names(tiny_model):
    with pytest.raises(UnknownNameError, match=r"Unknown vector method 'caaa'.*'caa'") as info:
        fit("caaa", tiny_model, PAIRS, [1])
    for name in ("caa", "freeform", "pca"):
        assert name in str(info.value)


def test_registry_refuses_duplicates():
    with pytest.raises(RegistryError, match="already registered"):
        METHODS.register("caa", fit_caa)


def test_registry_records_say_which_pass_a_method_shares():
    from steerlab.errors import ConfigError
    from steerlab.vectors.fitting import VectorMethod, fit_from_activations, shared_passes

    assert METHODS.get("caa").positions == "answer_letter" and not METHODS.get("caa").trains
    assert METHODS.get("bipo").trains and METHODS.get("bipo").positions is None
    groups = shared_passes(["caa", "bipo", "pca", "freeform"])
    assert groups == {
        "answer_letter": ["caa"],
        None: ["bipo"],
        "response_mean": ["pca", "freeform"],
    }
    with pytest.raises(ConfigError, match="positions= and reduce="):
        VectorMethod(fit_caa, positions="response_mean")
    with pytest.raises(ConfigError, match=r"does not read .*fit\('bipo'"):
        fit_from_activations(None, PAIRS, ["caa", "bipo"], [0])


# --- full fitters against a plain per-item computation (tiny model) -----------------------


def _resid(model, ids: tuple[int, ...], layer: int) -> torch.Tensor:
    site = model.site(layer)
    with torch.no_grad(), capture(model, [site]) as store:
        model.bridge(torch.tensor([ids]))
    return store[site][0]


def test_caa_equals_plain_letter_token_mean_difference(tiny_model):
    m, layer = tiny_model, 1
    vec = fit_caa(m, PAIRS, [layer], behavior="toy", batch_size=3, progress=False)
    items = list(pairs_to_ab(PAIRS, seed=0))
    plain = torch.stack(
        [
            _resid(m, encode_ab(m, it, it.matching).ids, layer)[-1]
            - _resid(m, encode_ab(m, it, it.not_matching).ids, layer)[-1]
            for it in items
        ]
    ).mean(0)
    torch.testing.assert_close(vec.direction(layer), plain, atol=1e-5, rtol=1e-5)
    assert vec.method == "caa" and vec.behavior == "toy" and vec.layers == (layer,)
    assert vec.provenance.hyperparameters["position"] == "answer_letter"


def test_freeform_equals_plain_response_mean_difference(tiny_model):
    m, layer = tiny_model, 0
    vec = fit_freeform(m, PAIRS, [layer], batch_size=2, progress=False)
    rows = []
    for p in PAIRS:
        pos, neg = encode_pair(m, p)
        a = _resid(m, pos.ids, layer)[pos.prompt_len :].mean(0)
        b = _resid(m, neg.ids, layer)[neg.prompt_len :].mean(0)
        rows.append(a - b)
    torch.testing.assert_close(
        vec.direction(layer), torch.stack(rows).mean(0), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("positions", ["answer_letter", "response_mean"])
def test_pca_fitter_sign_agrees_with_most_differences(tiny_model, positions):
    from steerlab.activations import collect
    from steerlab.data.convert import as_ab_items

    m = tiny_model
    vec = fit_pca(m, PAIRS, [0, 1], positions=positions, progress=False)
    data = as_ab_items(PAIRS) if positions == "answer_letter" else PAIRS
    acts = collect(m, data, [0, 1], positions, progress=False)
    for s in acts.sites:
        proj = acts.differences(s) @ vec.direction(s)
        assert float((proj > 0).float().mean()) >= 0.5


def test_caa_warns_when_the_matching_letter_is_unbalanced():
    from steerlab.data import ABItem
    from steerlab.vectors.caa import warn_letter_imbalance

    balanced = [ABItem("q", ("x", "y"), letter) for letter in "ABAB"]
    assert warn_letter_imbalance(balanced) == 0.0
    with pytest.warns(UserWarning, match=r"\(A\) in 2 and \(B\) in 1: 33%"):
        assert warn_letter_imbalance(balanced[:3]) == pytest.approx(1 / 3)


# --- provenance: the behavior a vector is for -----------------------------------------------


@pytest.mark.parametrize("method", ["caa", "freeform", "pca"])
def test_vector_records_the_datasets_name_as_its_behavior(tiny_model, method):
    """A vector fitted on ``load_pairs(...)``'s split (or a slice of it) is named after
    that behavior; an explicit ``behavior=`` wins; plain lists stay ``'unknown'``."""
    from steerlab.data import PairDataset
    from steerlab.evaluation.multipliers import vector_label

    named = PairDataset(tuple(PAIRS), "power-seeking", split="train")
    vec = fit(method, tiny_model, named[:4], [1], progress=False)
    assert vec.provenance.behavior == "power-seeking"
    assert vector_label(vec) == f"{method}:power-seeking:L1"
    given_name = fit(method, tiny_model, named, [1], behavior="mine", progress=False)
    assert given_name.provenance.behavior == "mine"
    assert fit(method, tiny_model, list(PAIRS), [1], progress=False).provenance.behavior == (
        "unknown"
    )
