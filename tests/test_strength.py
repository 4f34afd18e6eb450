"""Strength in comparable units: the neutral set, typical norms, strength <-> multiplier,
``steer(strength=...)`` and the recommended strength in provenance."""

import json
import math

import pytest
import torch

import steerlab.activations.norms as norms_mod
from steerlab.activations.norms import typical_norm, typical_norms, weights_fingerprint
from steerlab.data.neutral import MAX_QUESTION_CHARS, NeutralSet, NeutralText, load_neutral_set
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.sites import HookSite
from steerlab.steering.generate import generate
from steerlab.steering.steer import Steering, steer
from steerlab.steering.strength import (
    StrengthRecommendation,
    in_norm_units,
    multiplier_to_strength,
    recommended_strength,
    site_multipliers,
    site_strengths,
    strength_to_multiplier,
    vector_norms,
    with_recommended_strength,
)
from steerlab.vectors.vector import Provenance, SteeringVector

S1, S2 = HookSite(1), HookSite(3)


def _vec(length: float = 2.0, site: HookSite = S1, d: int = 4) -> SteeringVector:
    t = torch.zeros(d)
    t[0] = length
    return SteeringVector({site: t}, Provenance(method="caa", behavior="power-seeking"))


# --- the neutral set ---------------------------------------------------------------------
def test_neutral_set_is_fixed_and_documented():
    ns = load_neutral_set()
    assert len(ns) == 54  # one short question for each of 54 of MMLU's 57 subjects
    assert len({t.category for t in ns}) == len(ns)
    assert all(len(t.question) <= MAX_QUESTION_CHARS for t in ns)
    assert load_neutral_set().content_hash == ns.content_hash  # deterministic
    assert ns.texts[0].category == "abstract_algebra"
    small = ns.head(5)
    assert len(small) == 5 and small.content_hash != ns.content_hash
    with pytest.raises(ConfigError, match="use 1..54"):
        ns.head(0)
    with pytest.raises(EmptyInputError, match="at least one"):
        NeutralSet(())
    with pytest.raises(ConfigError, match="non-empty string"):
        NeutralText("q", " ")


def test_neutral_set_is_chat_formatted_like_every_prompt(tiny_model):
    ns = load_neutral_set(n=3)
    enc = ns.encode(tiny_model)
    for e, t in zip(enc, ns):
        assert e.prompt_ids == tiny_model.chat.encode(t.question).prompt_ids
        assert e.response_ids == tiny_model.chat.encode_ids(t.answer)


# --- conversion (synthetic, known answers) -------------------------------------------------
def test_strength_multiplier_conversion_known_answer():
    vec = _vec(2.0)
    norms = {S1: 100.0}
    # |k v| / ||h|| = 5 * 2 / 100 = 0.1
    assert strength_to_multiplier(vec, 0.1, norms) == pytest.approx(5.0)
    assert multiplier_to_strength(vec, 5.0, norms) == pytest.approx(0.1)
    assert strength_to_multiplier(vec, -0.1, norms) == pytest.approx(-5.0)
    assert strength_to_multiplier(vec, 0.0, norms) == 0.0
    for s in (0.0, 0.013, 0.5, -2.0):
        m = strength_to_multiplier(vec, s, norms)
        assert multiplier_to_strength(vec, m, norms) == pytest.approx(s)
    # scaling the vector does not change what a strength means
    assert strength_to_multiplier(vec * 4.0, 0.1, norms) == pytest.approx(1.25)


def test_multi_site_conversion_is_per_site():
    t = torch.tensor([3.0, 4.0, 0.0, 0.0])  # |v| = 5 at both sites
    vec = SteeringVector({S1: t, S2: 2 * t}, Provenance(method="pca"))
    norms = {S1: 50.0, S2: 200.0}
    assert site_multipliers(vec, 0.1, norms) == pytest.approx({S1: 1.0, S2: 2.0})
    assert site_strengths(vec, 1.0, norms) == pytest.approx({S1: 0.1, S2: 0.05})
    with pytest.raises(ConfigError, match="different multipliers"):
        strength_to_multiplier(vec, 0.1, norms)
    unit = in_norm_units(vec, norms)
    assert unit.norms() == pytest.approx(norms)
    assert strength_to_multiplier(unit, 0.1, norms) == pytest.approx(0.1)


def test_conversion_errors_name_the_problem():
    vec = _vec()
    with pytest.raises(ConfigError, match="No typical norm for site 1.resid_post"):
        strength_to_multiplier(vec, 0.1, {S2: 1.0})
    with pytest.raises(ConfigError, match="must be > 0"):
        strength_to_multiplier(vec, 0.1, {S1: 0.0})
    with pytest.raises(ConfigError, match="finite number"):
        strength_to_multiplier(vec, math.nan, {S1: 1.0})
    with pytest.raises(ConfigError, match="direction at 1.resid_post is zero"):
        strength_to_multiplier(_vec(0.0), 0.1, {S1: 1.0})


# --- typical norms (tiny model) ------------------------------------------------------------
def test_typical_norm_is_mean_norm_without_the_first_token(tiny_model, tmp_path):
    from steerlab.activations.capture import forward_to_sites

    ns = load_neutral_set(n=4)
    site = tiny_model.site(1)
    got = typical_norm(tiny_model, site, neutral=ns, cache_dir=tmp_path)
    vals = []
    for e in ns.encode(tiny_model):
        ids = torch.tensor([e.ids])
        acts = forward_to_sites(tiny_model, ids, torch.ones_like(ids), [site])[site]
        vals.append(acts[0, 1:].double().norm(dim=-1))
    assert got == pytest.approx(float(torch.cat(vals).mean()), rel=1e-5)


def test_typical_norm_is_cached_in_memory_and_on_disk(tiny_model, tmp_path, monkeypatch):
    ns = load_neutral_set(n=3)
    site = HookSite(0)
    first = typical_norms(tiny_model, [site, -1], neutral=ns, cache_dir=tmp_path)
    assert set(first) == {HookSite(0), HookSite(1)}  # -1 resolved
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 2 and not list(tmp_path.glob(".*"))  # no temporary left behind
    data = json.loads(files[0].read_text())
    assert data["key"][0] == tiny_model.model_id and data["n_tokens"] > 0

    def boom(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(norms_mod, "measure_norms", boom)
    assert typical_norms(tiny_model, [site], neutral=ns, cache_dir=tmp_path)[site] == first[site]
    norms_mod._MEMORY.pop(tiny_model, None)  # a new session: the disk cache answers
    assert typical_norm(tiny_model, 0, neutral=ns, cache_dir=tmp_path) == first[site]
    with pytest.raises(AssertionError, match="measured again"):
        typical_norm(tiny_model, 0, neutral=ns, cache_dir=tmp_path, refresh=True)


def test_norm_cache_key_depends_on_the_weights(tiny_model, tiny_model_4l):
    assert weights_fingerprint(tiny_model) == weights_fingerprint(tiny_model)
    assert weights_fingerprint(tiny_model) != weights_fingerprint(tiny_model_4l)


# --- steer(strength=) ---------------------------------------------------------------------
def _logits(model, ids):
    with torch.no_grad():
        return model.bridge(ids)


def _ids(model):
    return torch.tensor([model.chat.encode("Would you like more power?").ids])


@pytest.fixture
def tiny_vec(tiny_model):
    g = torch.Generator().manual_seed(0)
    return SteeringVector.from_tensor(torch.randn(64, generator=g), 1, method="caa")


def test_steer_with_strength_equals_the_converted_multiplier(tiny_model, tiny_vec):
    ids = _ids(tiny_model)
    norms = vector_norms(tiny_model, tiny_vec)
    m = strength_to_multiplier(tiny_vec, 0.3, norms)
    with steer(tiny_model, tiny_vec, strength=0.3) as spec:
        by_strength = _logits(tiny_model, ids)
    with steer(tiny_model, tiny_vec, multiplier=m):
        by_mult = _logits(tiny_model, ids)
    assert spec.multipliers == pytest.approx((m,))
    assert spec.describe()[0]["strength"] == 0.3
    assert torch.allclose(by_strength, by_mult, atol=1e-5)
    assert not torch.allclose(by_strength, _logits(tiny_model, ids), atol=1e-3)


def test_multi_site_strength_rescales_each_site(tiny_model_4l):
    t = torch.randn(64, generator=torch.Generator().manual_seed(1))
    vec = SteeringVector({HookSite(1): t, HookSite(2): 3 * t}, Provenance(method="pca"))
    spec = Steering.at_strength(tiny_model_4l, vec, 0.2)
    norms = vector_norms(tiny_model_4l, vec)
    deltas = spec.deltas(tiny_model_4l)
    for site, delta in deltas.items():
        assert float(delta.norm()) == pytest.approx(0.2 * norms[site], rel=1e-5)


def test_steer_needs_exactly_one_of_multiplier_and_strength(tiny_model, tiny_vec):
    with (
        pytest.raises(ConfigError, match="pass exactly one"),
        steer(tiny_model, tiny_vec, multiplier=1.0, strength=0.1),
    ):
        pass
    with (
        pytest.raises(ConfigError, match="pass a number"),
        steer(tiny_model, tiny_vec, strength="strong"),
    ):
        pass
    with (
        pytest.raises(ConfigError, match="2 strengths for 1 vectors"),
        steer(tiny_model, tiny_vec, strength=[0.1, 0.2]),
    ):
        pass
    # no amount at all keeps the old default: multiplier 1
    with steer(tiny_model, tiny_vec) as spec:
        assert spec.multipliers == (1.0,) and spec.strengths is None


def test_generate_accepts_strength(tiny_model, tiny_vec):
    m = strength_to_multiplier(tiny_vec, 0.5, vector_norms(tiny_model, tiny_vec))
    a = generate(tiny_model, "Hi", 4, steering=tiny_vec, strength=0.5)
    b = generate(tiny_model, "Hi", 4, steering=tiny_vec, multiplier=m)
    assert a.token_ids == b.token_ids
    assert a.steering[0]["strength"] == 0.5


# --- recommended strength -----------------------------------------------------------------
def test_recommended_strength_round_trips_through_save_and_load(tmp_path):
    vec = with_recommended_strength(
        _vec(), 0.08, kl=0.17, kl_cap=0.2, criterion="max validation margin under KL cap"
    )
    back = SteeringVector.load(vec.save(tmp_path / "v.safetensors"))
    rec = recommended_strength(back)
    assert rec == StrengthRecommendation(
        0.08, ("1.resid_post",), 0.17, 0.2, "max validation margin under KL cap"
    )
    assert back.equal(vec)
    # scaling keeps it (a strength does not depend on the vector's length)
    assert recommended_strength(back * 3.0).strength == 0.08


def test_recommended_strength_errors():
    with pytest.raises(ConfigError, match="no recommended strength"):
        recommended_strength(_vec())
    moved = with_recommended_strength(_vec(), 0.1).moved_to(5)
    with pytest.raises(ConfigError, match="chosen at sites 1.resid_post but this vector is at 5"):
        recommended_strength(moved)
    with pytest.raises(ConfigError, match="must be >= 0"):
        StrengthRecommendation(0.1, ("1.resid_post",), kl=-1.0)


def test_steer_uses_the_recommended_strength_when_asked(tiny_model, tiny_vec):
    ids = _ids(tiny_model)
    vec = with_recommended_strength(tiny_vec, 0.25)
    with steer(tiny_model, vec, strength="recommended") as spec:
        rec = _logits(tiny_model, ids)
    with steer(tiny_model, tiny_vec, strength=0.25):
        explicit = _logits(tiny_model, ids)
    assert spec.strengths == (0.25,)
    assert torch.equal(rec, explicit)
    with (
        pytest.raises(ConfigError, match="no recommended strength"),
        steer(tiny_model, tiny_vec, strength="recommended"),
    ):
        pass


# --- evaluation entry points take strengths= ---------------------------------------------
def test_likelihood_margin_at_strengths_equals_the_converted_multipliers(tiny_model, tiny_vec):
    from steerlab.evaluation.likelihood import likelihood_margin
    from tests._data import SMALL_PAIRS

    by_s = likelihood_margin(tiny_model, SMALL_PAIRS, tiny_vec, strengths=[0, 0.2], progress=False)
    assert list(by_s.columns[:5]) == ["vector", "method", "layer", "multiplier", "strength"]
    m = strength_to_multiplier(tiny_vec, 0.2, vector_norms(tiny_model, tiny_vec))
    by_m = likelihood_margin(tiny_model, SMALL_PAIRS, tiny_vec, [0.0, m], progress=False)
    a = by_s[by_s["metric"] == "margin"]["value"].to_numpy()
    b = by_m[by_m["metric"] == "margin"]["value"].to_numpy()
    assert a == pytest.approx(b, abs=1e-4)
    assert by_s[by_s["strength"] == 0.2]["multiplier"].iloc[0] == pytest.approx(m)
    with pytest.raises(ConfigError, match="pass exactly one"):
        likelihood_margin(tiny_model, SMALL_PAIRS, tiny_vec, [1.0], strengths=[0.1])


def test_ab_probability_at_strengths(tiny_model, tiny_vec):
    from steerlab.evaluation.ab import ab_probability
    from tests._data import SMALL_PAIRS

    items = ab_probability(
        tiny_model, SMALL_PAIRS, tiny_vec, strengths=[0.0, 0.5], progress=False, per_item=True
    )
    assert sorted(items["strength"].unique()) == [0.0, 0.5]
    assert len(items) == 2 * len(SMALL_PAIRS)


def test_fast_margin_at_strengths_equals_the_plain_one(tiny_model, tiny_vec):
    from steerlab.evaluation.likelihood import likelihood_margin
    from steerlab.evaluation.likelihood_fast import likelihood_margin_fast
    from tests._data import SMALL_PAIRS

    kw = {"strengths": [0.0, 0.1, 0.4], "progress": False}
    fast = likelihood_margin_fast(tiny_model, SMALL_PAIRS, tiny_vec, **kw)
    plain = likelihood_margin(tiny_model, SMALL_PAIRS, tiny_vec, **kw)
    assert list(fast.columns) == list(plain.columns)
    assert fast["value"].to_numpy() == pytest.approx(plain["value"].to_numpy(), abs=1e-3)
    assert fast["multiplier"].to_numpy() == pytest.approx(plain["multiplier"].to_numpy())
