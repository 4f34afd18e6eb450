"""steerlab serve under concurrent load: bursts, streaming, disconnects, back-pressure.

A forward hook that sleeps (``slow``) makes generation take a known time on the tiny
model, so timing-dependent behaviour (streaming, cancellation, queueing) is tested
deterministically and fast.
"""

import http.client
import json
import socket
import threading
import time
from contextlib import contextmanager

import pytest

import steerlab as sl
from steerlab.serve import ServeConfig, ServeLimits, make_server
from tests.test_serve import SYSTEM, Client, unit_vector

MSGS = [
    "Hello there",
    "Would you like more power and influence?",
    "What is the capital of France?",
    "Tell me a long story about a dragon and a knight.",
]


@contextmanager
def slow(model, seconds):
    """Every forward pass of ``model`` takes at least ``seconds`` longer."""

    def hook(x, hook):
        time.sleep(seconds)
        return x

    with model.bridge.hooks(fwd_hooks=[("blocks.0.hook_resid_post", hook)]):
        yield


def body(i, max_tokens=6, **extra):
    """Request ``i`` of a mixed set: four prompts x (unsteered, two vectors, both)."""
    steering = [
        [],
        [{"vector": "power", "multiplier": 2.0}],
        [{"vector": "wealth", "multiplier": -3.0}],
        [{"vector": "power", "multiplier": 1.0}, {"vector": "wealth", "multiplier": 1.0}],
    ][(i // 4) % 4]
    return {
        "messages": [SYSTEM, {"role": "user", "content": MSGS[i % 4]}],
        "max_tokens": max_tokens,
        "steering": steering,
        **extra,
    }


def vectors(model):
    return {"power": unit_vector(model, 1, 30.0), "wealth": unit_vector(model, 0, 5.0, seed=1)}


@pytest.fixture(scope="module")
def server(tiny_model):
    config = ServeConfig(max_batch_size=8, max_queue=64, body_timeout_s=0.5)
    with make_server(tiny_model, vectors(tiny_model), port=0, config=config,
                     limits=ServeLimits(max_tokens=64)) as srv:  # fmt: skip
        yield srv


def content(reply):
    return reply["choices"][0]["message"]["content"]


def in_threads(fn, args):
    """``fn(*a)`` for every ``a`` in ``args``, all started together; the results in order."""
    results = [None] * len(args)
    barrier = threading.Barrier(len(args))

    def run(i):
        barrier.wait()
        results[i] = fn(*args[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def sse_events(port, payload, on_event=None):
    """``(seconds since the request, event)`` for each SSE event of a streamed request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(payload),
                 {"Content-Type": "application/json"})  # fmt: skip
    resp = conn.getresponse()
    assert resp.status == 200
    events = []
    while True:
        line = resp.readline().decode()
        if not line:
            break
        if line.startswith("data: "):
            data = line[len("data: ") :].strip()
            events.append((time.perf_counter() - t0, data))
            if data == "[DONE]":
                break
    conn.close()
    return events


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# --- bursts and cross-talk -------------------------------------------------------------------


def test_burst_of_32_clients_none_dropped_outputs_equal_serial(server, tiny_model):
    client = Client(server)
    bodies = [body(i, max_tokens=3 + i % 4) for i in range(32)]
    serial = []
    for b in bodies:
        status, reply = client.chat(**b)
        assert status == 200
        serial.append(content(reply))
    assert len(set(serial)) > 8  # prompts and vectors make different outputs
    with slow(tiny_model, 0.003):  # the burst overlaps: batches form, the queue fills
        burst = in_threads(lambda b: client.chat(**b), [(b,) for b in bodies])
    assert [s for s, _ in burst] == [200] * 32  # none dropped
    assert [content(r) for _, r in burst] == serial
    stats = json.loads(client.request("GET", "/health")[1])["scheduler"]
    assert 1 < stats["peak_batch"] <= 8 and stats["running"] == stats["queued"] == 0


def test_streaming_chunks_arrive_as_tokens_are_generated(server, tiny_model):
    client = Client(server)
    payload = body(1, max_tokens=24)
    whole = content(client.chat(**payload)[1])
    with slow(tiny_model, 0.03):
        events = sse_events(server.port, {**payload, "stream": True})
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(e) for _, e in events[:-1]]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert "".join(p or "" for p in pieces) == whole
    times = [t for (t, _), p in zip(events, pieces) if p]
    assert len(times) >= 10
    assert times[0] < 0.4 * events[-1][0]  # the first text arrives well before the end
    assert times[-1] - times[0] > 0.3  # and the rest keeps arriving as it is generated


# --- disconnects -----------------------------------------------------------------------------


def raw_request(port, payload, stream):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    data = json.dumps({**payload, "stream": stream}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(data)}\r\n\r\n").encode()  # fmt: skip
    sock.sendall(head + data)
    return sock


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_its_generation(server, tiny_model, stream):
    client = Client(server)
    counts = lambda: json.loads(client.request("GET", "/health")[1])["scheduler"]  # noqa: E731
    before = counts()["cancelled"]
    with slow(tiny_model, 0.05):  # 60 tokens would take >= 3 s
        sock = raw_request(server.port, body(2, max_tokens=60), stream)
        if stream:  # wait for the stream to start
            got = b""
            while b'"content"' not in got:
                got += sock.recv(4096)
        assert wait_for(lambda: counts()["running"] == 1)
        at_close = counts()["steps"]
        sock.close()
        assert wait_for(lambda: counts()["running"] == 0), counts()
    after = counts()
    assert after["steps"] - at_close < 20  # stopped long before its 60 tokens
    assert after["cancelled"] == before + 1
    status, reply = client.chat(**body(0))
    assert status == 200 and content(reply)


def test_short_body_gets_408_without_blocking_others(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    t0 = time.perf_counter()
    status, _ = Client(server).chat(**body(0))  # served while the short body waits
    assert status == 200 and time.perf_counter() - t0 < 0.5
    reply = b""
    while b"}}" not in reply:  # the JSON error body ends with "}}"
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    sock.close()
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 408") and "did not arrive within 0.5 s" in reply


# --- back-pressure and time limits --------------------------------------------------------


def test_full_queue_gets_503_with_retry_after_then_recovers(tiny_model):
    config = ServeConfig(max_batch_size=1, max_queue=1, retry_after_s=3)
    with make_server(tiny_model, {}, port=0, config=config) as srv:
        client = Client(srv)
        with srv.scheduler.paused():
            waiting = [threading.Thread(target=client.chat, kwargs=body(0)) for _ in range(2)]
            for t in waiting:
                t.start()
            assert wait_for(lambda: srv.scheduler.counts()["queued"] == 2)
            status, headers, text = client.request_full("POST", "/v1/chat/completions", body(0))
        assert status == 503 and headers["Retry-After"] == "3"
        err = json.loads(text)["error"]
        assert err["code"] == "queue_full" and "max_queue=1" in err["message"]
        for t in waiting:
            t.join(30)
        assert client.chat(**body(0))[0] == 200
        assert srv.scheduler.counts()["completed"] == 3


def test_request_time_limit_gives_504_queued_running_and_streamed(tiny_model):
    config = ServeConfig(request_timeout_s=0.3)
    with make_server(tiny_model, {}, port=0, config=config,
                     limits=ServeLimits(max_tokens=64)) as srv:  # fmt: skip
        client = Client(srv)
        with srv.scheduler.paused():  # waits in the queue past its limit
            status, reply = client.chat(**body(0))
        assert status == 504 and reply["error"]["code"] == "request_timeout"
        assert "limit of 0.3 s" in reply["error"]["message"]
        with slow(tiny_model, 0.05):  # 60 tokens take >= 3 s
            t0 = time.perf_counter()
            status, reply = client.chat(**body(0, max_tokens=60))
            assert status == 504 and time.perf_counter() - t0 < 1.5
            events = sse_events(srv.port, body(0, max_tokens=60, stream=True))
        assert events[-1][1] == "[DONE]"
        assert json.loads(events[-2][1])["error"]["type"] == "timeout_error"
        assert client.chat(**body(0, max_tokens=4))[0] == 200


# --- the embedded model ----------------------------------------------------------------------


def test_embedded_concurrent_requests_each_equal_generate_alone(embedded_model):
    vec = {
        "a": unit_vector(embedded_model, 10, 150.0),
        "b": unit_vector(embedded_model, 6, 80.0, 2),
    }
    cases = [(MSGS[0], None, 3), (MSGS[1], ("a", 1.0), 4), (MSGS[3], ("b", -1.0), 5)]
    refs = [
        sl.generate(
            embedded_model, m, n, steering=vec[s[0]] if s else None, multiplier=s[1] if s else 1.0
        ).text  # fmt: skip
        for m, s, n in cases
    ]
    with make_server(embedded_model, vec, port=0) as srv:
        client = Client(srv)
        replies = in_threads(
            lambda m, s, n: client.chat(
                messages=[SYSTEM, {"role": "user", "content": m}],
                max_tokens=n,
                steering=[{"vector": s[0], "multiplier": s[1]}] if s else [],
            ),  # fmt: skip
            cases,
        )
    assert [content(r) for _, r in replies] == refs
