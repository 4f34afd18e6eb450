"""Vector management while the server runs: list, add (file or inline data), remove."""

import base64
import json

import pytest
import torch

import steerlab as sl
from steerlab.serve import ServeConfig, ServeLimits, make_server
from steerlab.vectors.vector import SteeringVector
from tests.test_serve import SYSTEM, Client, unit_vector

ROUTE = "/v1/steering/vectors"


def b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.to(torch.float32).contiguous().numpy().tobytes()).decode()


@pytest.fixture
def served(tiny_model, tmp_path):
    unit_vector(tiny_model, 1, 30.0).save(tmp_path / "power.safetensors")
    unit_vector(tiny_model, 0, 8.0, seed=4).save(tmp_path / "later.safetensors")
    config = ServeConfig(max_vectors=4, max_vector_bytes=64 * 4 * 2)  # two sites of d_model 64
    with make_server(tiny_model, {"power": unit_vector(tiny_model, 1, 30.0)}, port=0,
                     config=config, limits=ServeLimits(max_tokens=8),
                     vector_dir=tmp_path) as srv:  # fmt: skip
        yield Client(srv)


def ask(client, name=None, multiplier=3.0):
    steering = [{"vector": name, "multiplier": multiplier}] if name else []
    msgs = [SYSTEM, {"role": "user", "content": "Hello there"}]
    return client.chat(messages=msgs, max_tokens=6, steering=steering)


def post(client, body):
    status, text = client.request("POST", ROUTE, body)
    return status, json.loads(text)


def test_list_add_use_and_remove_while_running(served, tiny_model, tmp_path):
    status, listing = served.request("GET", ROUTE)
    data = json.loads(listing)["data"]
    assert status == 200 and [v["name"] for v in data] == ["power"]
    assert data[0]["sites"] == ["1.resid_post"] and data[0]["d_model"] == 64
    # inline float32 data: the reply equals generate() with the same vector
    t = torch.randn(64, generator=torch.Generator().manual_seed(7)) * 20
    status, added = post(served, {"name": "inline1", "data": b64(t), "site": "0"})
    assert status == 201 and added["sites"] == ["0.resid_post"] and added["source"] == "inline"
    status, reply = ask(served, "inline1", 2.0)
    ref = sl.generate(tiny_model, "Hello there", 6, steering=SteeringVector.from_tensor(t, 0),
                      multiplier=2.0)  # fmt: skip
    assert status == 200 and reply["choices"][0]["message"]["content"] == ref.text
    # from a file under the vector directory
    status, added = post(served, {"name": "later", "path": "later.safetensors"})
    assert status == 201 and added["source"] == "file:later.safetensors"
    assert ask(served, "later")[0] == 200
    models = json.loads(served.request("GET", "/v1/models")[1])["data"][0]
    assert models["steering_vectors"] == ["inline1", "later", "power"]
    # remove: later requests naming it are refused, others still work
    status, text = served.request("DELETE", f"{ROUTE}/inline1")
    assert status == 200 and json.loads(text)["deleted"] is True
    status, reply = ask(served, "inline1")
    assert status == 400 and "Unknown steering vector 'inline1'" in reply["error"]["message"]
    assert ask(served)[0] == 200 and ask(served, "power")[0] == 200


BAD_ADDS = [
    ("no name", {"data": "AAAA", "site": "0"}, 400, "Vector name None is not valid"),
    ("bad name", {"name": "../x", "data": "AAAA", "site": "0"}, 400, "'../x' is not valid"),
    ("path and data", {"name": "x", "path": "a", "data": "b"}, 400, 'either "path"'),
    ("not base64", {"name": "x", "data": "%%%", "site": "0"}, 400, "not valid base64"),
    (
        "wrong d_model",
        {"name": "x", "data": b64(torch.ones(32)), "site": "0"},
        400,
        r"holds 128 bytes.*d_model=64",
    ),
    (
        "nan values",
        {"name": "x", "data": b64(torch.full((64,), float("nan"))), "site": "0"},
        400,
        "64 NaN/inf values",
    ),
    (
        "unknown kind",
        {"name": "x", "data": b64(torch.ones(64)), "site": "0.resid_pst"},
        400,
        "Unknown hook kind 'resid_pst'.*Did you mean 'resid_post'",
    ),
    (
        "layer out of range",
        {"name": "x", "data": b64(torch.ones(64)), "site": "7"},
        400,
        r"Layer 7 is out of range.*0\.\.1",
    ),
    (
        "too large",
        {"name": "x", "data": b64(torch.ones(192)), "sites": ["0", "1", "1.resid_pre"]},
        413,
        "accepts at most 512",
    ),
    (
        "duplicate",
        {"name": "power", "data": b64(torch.ones(64)), "site": "0"},
        409,
        "named 'power' already exists; remove it first",
    ),
    ("outside dir", {"name": "x", "path": "../x.safetensors"}, 403, "outside the server's vector"),
    ("missing file", {"name": "x", "path": "nope.safetensors"}, 404, "No file 'nope.safetensors'"),
    ("not safetensors", {"name": "x", "path": "v.pt"}, 400, "not a .safetensors file.*from_bipo"),
]


@pytest.mark.parametrize("case, body, status, match", BAD_ADDS, ids=[c[0] for c in BAD_ADDS])
def test_bad_vectors_are_refused_with_the_fix(served, case, body, status, match):
    import re

    got, reply = post(served, body)
    assert got == status, reply
    assert re.search(match, reply["error"]["message"]), reply["error"]["message"]
    assert ask(served, "power")[0] == 200  # the server keeps serving


def test_limits_on_vector_count_and_updates(tiny_model, tmp_path):
    config = ServeConfig(max_vectors=1, allow_vector_updates=False)
    with make_server(tiny_model, {"power": unit_vector(tiny_model, 1, 30.0)}, port=0,
                     config=config) as srv:  # fmt: skip
        client = Client(srv)
        status, reply = post(client, {"name": "x", "data": b64(torch.ones(64)), "site": "0"})
        assert status == 403 and "--no-allow-vector-updates" in reply["error"]["message"]
        status, text = client.request("DELETE", f"{ROUTE}/nope")
        assert status == 404 and "Valid vectors: power" in json.loads(text)["error"]["message"]
    with make_server(tiny_model, {}, port=0, config=ServeConfig(max_vectors=1)) as srv:
        client = Client(srv)
        status, reply = post(client, {"name": "x", "path": "x.safetensors"})
        assert status == 403 and "--vectors DIR" in reply["error"]["message"]
        assert post(client, {"name": "a", "data": b64(torch.ones(64)), "site": 0})[0] == 201
        status, reply = post(client, {"name": "b", "data": b64(torch.ones(64)), "site": 0})
        assert status == 409 and "its limit" in reply["error"]["message"]
