"""steerlab serve over real HTTP (in-process server thread): validation, parity, steering."""

import json
import re
import urllib.error
import urllib.request

import pytest
import torch

import steerlab as sl
from steerlab.errors import ConfigError, VectorFileError
from steerlab.serve import (
    RequestError,
    ServeLimits,
    load_vector_dir,
    make_server,
    parse_chat_request,
    render_messages,
)
from steerlab.vectors.vector import SteeringVector

SYSTEM = {"role": "system", "content": sl.DEFAULT_SYSTEM_PROMPT}


def unit_vector(model, layer, scale, seed=0):
    t = torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed))
    return SteeringVector.from_tensor(t / t.norm() * scale, layer, behavior="random")


class Client:
    def __init__(self, server):
        self.server = server
        self.root = f"http://127.0.0.1:{server.port}"

    def request(self, method, path, body=None, raw=None):
        status, _, text = self.request_full(method, path, body, raw)
        return status, text

    def request_full(self, method, path, body=None, raw=None):
        """``(status, headers, text)`` of one request."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.root + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, resp.headers, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read().decode()

    def chat(self, **body):
        status, text = self.request("POST", "/v1/chat/completions", body)
        return status, (json.loads(text) if not body.get("stream") or status != 200 else text)


def start(model, vectors, **kw):
    return make_server(model, vectors, port=0, **kw).start()


@pytest.fixture(scope="module")
def tiny_server(tiny_model, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("vectors")
    unit_vector(tiny_model, 1, 30.0).save(tmp_path / "power.safetensors")
    unit_vector(tiny_model, 0, 5.0, seed=1).save(tmp_path / "wealth.safetensors")
    server = start(tiny_model, tmp_path, limits=ServeLimits(max_tokens=16, max_prompt_tokens=200))
    yield Client(server)
    server.shutdown()
    server.server_close()


def hello(**extra):
    return {
        "messages": [SYSTEM, {"role": "user", "content": "Hello there"}],
        "max_tokens": 4,
        **extra,
    }


BAD_REQUESTS = [
    ("malformed JSON", None, b'{"messages": [', 400, "not valid JSON"),
    ("not an object", [1, 2], None, 400, "must be a JSON object"),
    ("missing messages", {"max_tokens": 3}, None, 400, "has no 'messages'"),
    ("empty messages", {"messages": []}, None, 400, "non-empty list"),
    ("bad role", {"messages": [{"role": "tool", "content": "x"}]}, None, 400, "role='tool'"),
    (
        "bad content",
        {"messages": [{"role": "user", "content": 3}]},
        None,
        400,
        "content must be a string",
    ),
    (
        "unknown vector",
        hello(steering=[{"vector": "powr", "multiplier": 1}]),
        None,
        400,
        r"Unknown steering vector 'powr'.*Did you mean 'power'.*Valid vectors: power, wealth",
    ),
    (
        "string multiplier",
        hello(steering=[{"vector": "power", "multiplier": "2"}]),
        None,
        400,
        r"multiplier='2' is not a finite number",
    ),
    (
        "bool multiplier",
        hello(steering=[{"vector": "power", "multiplier": True}]),
        None,
        400,
        "not a finite number",
    ),
    (
        "nan multiplier",
        None,
        b'{"messages": [{"role": "user", "content": "hi"}], "steering": '
        b'[{"vector": "power", "multiplier": NaN}]}',
        400,
        "multiplier=nan is not a finite",
    ),
    (
        "huge multiplier",
        hello(steering=[{"vector": "power", "multiplier": 1e6}]),
        None,
        400,
        r"too large.*\|multiplier\| <= 64",
    ),
    ("missing multiplier", hello(steering=[{"vector": "power"}]), None, 400, "no 'multiplier'"),
    ("too many tokens", hello(max_tokens=17), None, 400, "max_tokens=17 exceeds.*limit of 16"),
    ("zero tokens", hello(max_tokens=0), None, 400, "max_tokens=0 must be >= 1"),
    (
        "prompt too long",
        {"messages": [{"role": "user", "content": "word " * 400}]},
        None,
        400,
        r"prompt has \d+ tokens.*at most 200",
    ),
    ("bad temperature", hello(temperature=-1), None, 400, "temperature=-1 is out of range"),
    ("n > 1", hello(n=2), None, 400, "use n=1"),
    ("bad stream", hello(stream="yes"), None, 400, "stream='yes'"),
    ("bad ignore_eos", hello(ignore_eos=1), None, 400, "ignore_eos=1 must be true or false"),
    ("huge seed", hello(seed=2**70), None, 400, r"seed=\d+ is out of range.*2\*\*63 - 1"),
    (
        "oversized body",
        hello(padding="x" * 1_100_000),
        None,
        413,
        "body has \\d+ bytes; this server accepts at most 1000000",
    ),
]


@pytest.mark.parametrize(
    "name, body, raw, status, match", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_request_gets_a_json_error_and_the_server_keeps_serving(
    tiny_server, name, body, raw, status, match
):
    got, text = tiny_server.request("POST", "/v1/chat/completions", body, raw)
    assert got == status
    err = json.loads(text)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert re.search(match, err["message"]), err["message"]
    ok, reply = tiny_server.chat(**hello())
    assert ok == 200 and reply["choices"][0]["message"]["role"] == "assistant"


def test_routes_models_and_health(tiny_server, tiny_model):
    status, text = tiny_server.request("GET", "/health")
    assert status == 200 and json.loads(text)["status"] == "ok"
    status, text = tiny_server.request("GET", "/v1/models")
    data = json.loads(text)["data"]
    assert status == 200 and data[0]["id"] == tiny_model.model_id
    assert data[0]["steering_vectors"] == ["power", "wealth"]
    status, text = tiny_server.request("POST", "/v1/completions", {"prompt": "x"})
    assert status == 404 and "No route" in json.loads(text)["error"]["message"]
    status, _ = tiny_server.request("GET", "/v1/chat/completions")
    assert status == 405


def test_reply_shape_usage_stream_stop_and_seeded_sampling(tiny_server, tiny_model):
    status, r = tiny_server.chat(**hello(max_tokens=6))
    assert status == 200 and r["object"] == "chat.completion" and r["model"] == tiny_model.model_id
    text = r["choices"][0]["message"]["content"]
    usage = r["usage"]
    assert usage["completion_tokens"] == 6 and r["choices"][0]["finish_reason"] == "length"
    assert usage["total_tokens"] == usage["prompt_tokens"] + 6 and r["steering"] == []
    # stream: the SSE chunks add up to the same text
    status, sse = tiny_server.chat(**hello(max_tokens=6, stream=True))
    events = [e[len("data: ") :] for e in sse.split("\n\n") if e.startswith("data: ")]
    assert status == 200 and events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # stop sequences cut the text
    if len(text) > 3:
        _, cut = tiny_server.chat(**hello(max_tokens=6, stop=[text[2:4]]))
        assert cut["choices"][0]["message"]["content"] == text[:2]
        assert cut["choices"][0]["finish_reason"] == "stop"
    # temperature > 0 samples; the same seed gives the same text
    a = tiny_server.chat(**hello(max_tokens=8, temperature=1.5, seed=7))[1]
    b = tiny_server.chat(**hello(max_tokens=8, temperature=1.5, seed=7))[1]
    assert a["choices"][0]["message"] == b["choices"][0]["message"]
    samples = {
        tiny_server.chat(**hello(max_tokens=8, temperature=1.5, seed=s))[1]["choices"][0][
            "message"
        ]["content"]
        for s in range(4)
    }
    assert len(samples) > 1


def test_vector_dir_and_model_checks(tiny_model, tmp_path):
    with pytest.raises(VectorFileError, match="not a directory"):
        load_vector_dir(tmp_path / "missing")
    assert load_vector_dir(tmp_path) == {}
    wrong = SteeringVector.from_tensor(torch.ones(32), 0)
    with pytest.raises(ConfigError, match="'wrong' does not fit the model"):
        make_server(tiny_model, {"wrong": wrong}, port=0)
    with pytest.raises(RequestError, match="Valid vectors: \\(none"):
        parse_chat_request(hello(steering=[{"vector": "x", "multiplier": 1}]), (), ServeLimits())
    assert ServeLimits(max_tokens=16).default_max_tokens == 16
    with pytest.raises(ConfigError, match="default_max_tokens=32 exceeds max_tokens=16"):
        ServeLimits(max_tokens=16, default_max_tokens=32)


def test_multi_turn_messages_use_the_chat_template(tiny_model):
    msgs = [
        SYSTEM,
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "How are "}, {"type": "text", "text": "you?"}],
        },
    ]
    req = parse_chat_request({"messages": msgs}, (), ServeLimits())
    assert req.messages[-1]["content"] == "How are you?" and req.max_tokens == 128
    text = render_messages(tiny_model, req.messages)
    assert text == tiny_model.tokenizer.apply_chat_template(
        list(req.messages), tokenize=False, add_generation_prompt=True
    )
    order = [text.index(x) for x in (sl.DEFAULT_SYSTEM_PROMPT, "Hi", "Hello!", "How are you?")]
    assert order == sorted(order) and text.endswith("<|im_start|>assistant\n")
    one_turn = render_messages(tiny_model, [SYSTEM, {"role": "user", "content": "Hi"}])
    assert one_turn == tiny_model.chat.prompt_text("Hi")


# --- the embedded model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_server(embedded_model):
    server = start(embedded_model, {"rand": unit_vector(embedded_model, 10, 1.0)})
    yield Client(server)
    server.shutdown()
    server.server_close()


QUESTION = "What is the capital of France?"


def test_plain_request_equals_generate(embedded_server, embedded_model):
    ref = sl.generate(embedded_model, QUESTION, 8)
    status, r = embedded_server.chat(
        messages=[SYSTEM, {"role": "user", "content": QUESTION}], max_tokens=8
    )
    assert status == 200
    assert r["choices"][0]["message"]["content"] == ref.text
    assert r["usage"]["prompt_tokens"] == len(ref.prompt_token_ids[0])
    assert r["usage"]["completion_tokens"] == len(ref.token_ids[0])
    # a user turn alone gets the template's own default system prompt, like system_prompt=""
    ref2 = sl.generate(embedded_model, QUESTION, 4, system_prompt="")
    r2 = embedded_server.chat(messages=[{"role": "user", "content": QUESTION}], max_tokens=4)[1]
    assert r2["choices"][0]["message"]["content"] == ref2.text


def test_steered_request_differs_and_matches_steered_generate(embedded_server, embedded_model):
    msgs = [SYSTEM, {"role": "user", "content": QUESTION}]
    plain = embedded_server.chat(messages=msgs, max_tokens=6)[1]["choices"][0]["message"]
    status, r = embedded_server.chat(
        messages=msgs, max_tokens=6, steering=[{"vector": "rand", "multiplier": 60.0}]
    )
    assert status == 200 and r["steering"] == [{"vector": "rand", "multiplier": 60.0}]
    steered = r["choices"][0]["message"]["content"]
    assert steered != plain["content"]
    vec = unit_vector(embedded_model, 10, 1.0)
    assert steered == sl.generate(embedded_model, QUESTION, 6, steering=vec, multiplier=60.0).text
    again = embedded_server.chat(messages=msgs, max_tokens=6)[1]["choices"][0]["message"]
    assert again == plain  # no steering left behind


def test_pt_only_vector_dir_says_how_to_convert(tmp_path):
    torch.save(torch.ones(64), tmp_path / "power.pt")
    with pytest.raises(VectorFileError, match=r"1 \.pt file\(s\) \(power\.pt\).*from_bipo_pt"):
        load_vector_dir(tmp_path)


def test_port_in_use_is_a_config_error(tiny_server, tiny_model):
    with pytest.raises(ConfigError, match=f"Port {tiny_server.server.port} .* already in use"):
        make_server(tiny_model, {}, port=tiny_server.server.port)


@pytest.mark.parametrize(
    "text, stop, final",
    [
        ("  Hello world, this is a test.  ", (), "Hello world, this is a test."),
        ("Smile 🙂 and wave 🌊!", (), "Smile 🙂 and wave 🌊!"),
        ("One. Two. STOP three four", ("STOP",), "One. Two. "),
        ("a b c d e", ("c d", "x"), "a b "),
    ],
)
def test_text_stream_pieces_add_up_to_the_final_text(tiny_model, text, stop, final):
    from steerlab.serve.text import TextStream

    ids = tiny_model.tokenizer.encode(text, add_special_tokens=False)
    stream = TextStream(tiny_model.tokenizer, stop)
    pieces = [stream.push(t) for t in ids]
    pieces.append(stream.finish())
    assert "".join(pieces) == stream.text == final
    assert not any("\ufffd" in p for p in pieces)  # no half characters
    assert stream.stopped == bool(stop)
