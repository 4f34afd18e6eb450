"""Steering by strength in server requests: ``{"vector": NAME, "strength": s}`` gives the
reply of ``steer(model, vec, strength=s)``, whatever the vector's norm."""

import json
import math

import pytest

import steerlab as sl
from steerlab.serve import ServeLimits, make_server
from steerlab.serve.strengths import SiteNorms
from steerlab.steering.strength import with_recommended_strength
from steerlab.vectors.vector import SteeringVector
from tests.test_serve import SYSTEM, Client, unit_vector

PROMPT = "Hello there"


@pytest.fixture(scope="module")
def vectors(tiny_model):
    small = unit_vector(tiny_model, 1, 0.05)  # norms 600x apart: equal strengths, not multipliers
    big = unit_vector(tiny_model, 0, 30.0, seed=3)
    pair = SteeringVector({**unit_vector(tiny_model, 0, 2.0, seed=5).directions,
                           **unit_vector(tiny_model, 1, 2.0, seed=6).directions})  # fmt: skip
    return {
        "small": small,
        "big": big,
        "pair": pair,
        "calibrated": with_recommended_strength(big, 0.3, kl_cap=0.2),
    }


@pytest.fixture(scope="module")
def served(tiny_model, vectors):
    with make_server(tiny_model, vectors, port=0, limits=ServeLimits(max_tokens=8)) as srv:
        yield Client(srv)


def ask(client, *entries):
    msgs = [SYSTEM, {"role": "user", "content": PROMPT}]
    return client.chat(messages=msgs, max_tokens=6, steering=list(entries))


def reference(model, vec, strength):
    with sl.steer(model, vec, strength=strength):
        return sl.generate(model, PROMPT, 6).text


@pytest.mark.parametrize("name", ["small", "big"])
def test_a_strength_gives_the_reply_of_steer_with_that_strength(served, tiny_model, vectors,
                                                                  name):  # fmt: skip
    status, reply = ask(served, {"vector": name, "strength": 0.8})
    assert status == 200, reply
    assert reply["choices"][0]["message"]["content"] == reference(tiny_model, vectors[name], 0.8)
    echo = reply["steering"][0]
    want = sl.steering.strength.strength_to_multiplier(
        vectors[name], 0.8, sl.steering.strength.vector_norms(tiny_model, vectors[name])
    )
    assert echo["strength"] == 0.8 and echo["multiplier"] == pytest.approx(want, rel=1e-6)
    # the same multiplier sent as a multiplier: the same reply
    if abs(want) <= 64:
        same = ask(served, {"vector": name, "multiplier": want})[1]
        assert same["choices"][0]["message"]["content"] == reply["choices"][0]["message"][
            "content"]  # fmt: skip


def test_small_vector_needs_a_multiplier_above_the_limit(served, tiny_model, vectors):
    """The reason for strengths: the small vector's multiplier for 0.8 exceeds 64."""
    norms = sl.steering.strength.vector_norms(tiny_model, vectors["small"])
    k = sl.steering.strength.strength_to_multiplier(vectors["small"], 0.8, norms)
    assert k > 64
    status, reply = ask(served, {"vector": "small", "multiplier": k})
    assert status == 400 and "too large" in reply["error"]["message"]


def test_recommended_strength_and_zero(served, tiny_model, vectors):
    status, reply = ask(served, {"vector": "calibrated", "strength": "recommended"})
    assert status == 200 and reply["steering"][0]["strength"] == 0.3
    assert reply["choices"][0]["message"]["content"] == reference(tiny_model, vectors["big"], 0.3)
    status, reply = ask(served, {"vector": "big", "strength": 0})
    assert status == 200 and reply["steering"][0]["multiplier"] == 0.0
    assert reply["choices"][0]["message"]["content"] == sl.generate(tiny_model, PROMPT, 6).text


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"vector": "big", "strength": 0.1, "multiplier": 1.0}, "both 'multiplier' and"),
        ({"vector": "big", "strength": "lots"}, "not a finite number; send 'recommended' or"),
        ({"vector": "big", "strength": math.inf}, "not a finite number"),
        ({"vector": "big", "strength": 5.0}, "|strength| <= 2"),
        ({"vector": "big", "strength": "recommended"}, "no recommended strength"),
        ({"vector": "pair", "strength": 0.1}, "different multipliers"),
        ({"vector": "big"}, "no 'multiplier' (or 'strength')"),
    ],
)
def test_bad_strength_entries_are_400s_that_say_why(served, entry, words):
    status, reply = ask(served, entry)
    assert status == 400, reply
    assert words in reply["error"]["message"] and reply["error"]["param"].startswith("steering[0]")


def test_the_vector_list_says_how_far_x1_pushes(served, tiny_model, vectors):
    from steerlab.activations.norms import typical_norm

    status, text = served.request("GET", "/v1/steering/vectors")
    listed = {v["name"]: v for v in json.loads(text)["data"]}
    assert status == 200
    want = 0.05 / typical_norm(tiny_model, 1)  # the small vector: |v| = 0.05 at layer 1
    assert listed["small"]["strength_at_x1"] == {"1.resid_post": pytest.approx(want, rel=1e-5)}
    assert set(listed["pair"]["strength_at_x1"]) == {"0.resid_post", "1.resid_post"}
    assert listed["calibrated"]["recommended_strength"] == 0.3
    assert listed["big"]["recommended_strength"] is None


def test_without_norms_a_strength_is_refused_and_multipliers_still_work(tiny_model, vectors):
    with make_server(tiny_model, vectors, port=0) as srv:
        srv.site_norms = SiteNorms(None, "no neutral texts at /nowhere")
        client = Client(srv)
        status, reply = ask(client, {"vector": "big", "strength": 0.1})
        assert status == 400 and reply["error"]["code"] == "strength_unavailable"
        assert "no neutral texts at /nowhere" in reply["error"]["message"]
        assert ask(client, {"vector": "big", "multiplier": 1.0})[0] == 200
        listed = json.loads(client.request("GET", "/v1/steering/vectors")[1])["data"]
        assert all(v["strength_at_x1"] is None for v in listed)
