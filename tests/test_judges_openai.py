"""OpenAICompatJudge against a real HTTP server on 127.0.0.1 speaking chat-completions JSON.

The server replies with scripted text; nothing in the client is mocked.
"""

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from steerlab.errors import ConfigError, JudgeError, UnknownNameError
from steerlab.evaluation.judges import (
    Judge,
    JudgeRequest,
    OpenAICompatJudge,
    make_judge,
    summarize,
)

FAST = dict(backoff_base=0.02, backoff_max=0.2, timeout=5.0)
_ANSWER = re.compile(r"<response>\n(.*)\n</response>", re.DOTALL)


def chat_reply(text):
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }


class ScriptedServer(ThreadingHTTPServer):
    """Chat-completions server; ``script(hit_index, body) -> (status, payload, headers)``.

    By default it replies with the text ``REPLY[answer]`` for the graded answer.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port=0, script=None, delay=0.0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.script = script or (lambda i, body: (200, chat_reply(answer_of(body)), {}))
        self.delay = delay
        self.lock = threading.Lock()
        self.hits = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies = []
        self.headers_seen = []
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            index = srv.hits
            srv.hits += 1
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            srv.bodies.append(body)
            srv.headers_seen.append(dict(self.headers))
        try:
            if self.path != "/v1/chat/completions":
                status, payload, headers = 404, {"error": {"message": f"no route {self.path}"}}, {}
            else:
                if srv.delay:
                    time.sleep(srv.delay)
                status, payload, headers = srv.script(index, body)
        finally:
            # Out of flight before the reply is written: a client can send its next request
            # as soon as it has read this reply, possibly before this thread runs again (a
            # busy machine), which made the count one above the client's real concurrency.
            with srv.lock:
                srv.in_flight -= 1
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


def answer_of(body):
    return _ANSWER.search(body["messages"][-1]["content"]).group(1)


@pytest.fixture
def server():
    started = []

    def start(**kw):
        srv = ScriptedServer(**kw).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def req(answer, behavior="power-seeking"):
    return JudgeRequest(behavior=behavior, question="Would you take over the board?", answer=answer)


def judge_for(srv, **kw):
    opts = dict(api_key_env=None, **FAST)
    opts.update(kw)
    return OpenAICompatJudge(srv.base_url, "judge-model", **opts)


# -- happy path, parsing --------------------------------------------------------------------


def test_scores_parse_in_order_and_unparseable_are_counted(server, monkeypatch):
    monkeypatch.setenv("STEERLAB_TEST_KEY", "sk-test-123")
    srv = server()
    judge = judge_for(srv, api_key_env="STEERLAB_TEST_KEY", max_tokens=7)
    answers = ["3", "Score: 2\nIt weighs the options.", "**4**", "I think it is fine", "7", "1."]
    results = judge.score([req(a) for a in answers])

    assert [r.status for r in results] == ["ok", "ok", "ok", "unparseable", "unparseable", "ok"]
    assert [r.score for r in results] == [3.0, 2.0, 4.0, None, None, 1.0]
    assert [r.raw for r in results] == answers  # raw reply text kept verbatim
    s = summarize(results)
    assert s["mean"] == pytest.approx((3 + 2 + 4 + 1) / 4)
    assert (s["n"], s["n_scored"], s["n_unparseable"], s["n_error"]) == (6, 4, 2, 0)

    assert srv.hits == 6 and judge.n_requests_sent == 6 and judge.n_cache_hits == 0
    body = srv.bodies[0]
    assert body["model"] == "judge-model"
    assert body["temperature"] == 0.0 and body["max_tokens"] == 7
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert all(h.get("Authorization") == "Bearer sk-test-123" for h in srv.headers_seen)


def test_no_key_env_sends_no_authorization(server):
    srv = server()
    judge_for(srv).score([req("2")])
    assert "Authorization" not in srv.headers_seen[0]


def test_missing_api_key_names_the_env_var(monkeypatch):
    monkeypatch.delenv("STEERLAB_TEST_KEY", raising=False)
    with pytest.raises(JudgeError, match=r"STEERLAB_TEST_KEY is not set.*api_key_env=None"):
        OpenAICompatJudge("http://127.0.0.1:9/v1", "m", api_key_env="STEERLAB_TEST_KEY")


def test_empty_batch_and_unknown_behavior_send_nothing(server):
    srv = server()
    judge = judge_for(srv)
    assert judge.score([]) == []
    with pytest.raises(UnknownNameError, match="Valid behaviors"):
        judge.score([req("3"), req("3", behavior="power_seeking")])
    assert srv.hits == 0


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"concurrency": 0}, "concurrency=0"),
        ({"max_retries": -1}, "max_retries=-1"),
        ({"timeout": 0.0}, "timeout=0.0"),
        ({"temperature": -0.5}, "temperature=-0.5"),
    ],
)
def test_bad_settings_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        OpenAICompatJudge("http://127.0.0.1:9/v1", "m", api_key_env=None, **kw)
    with pytest.raises(ConfigError, match="must start with http"):
        OpenAICompatJudge("127.0.0.1:9/v1", "m", api_key_env=None)


def test_registry_builds_it():
    judge = make_judge("openai", base_url="http://127.0.0.1:9/v1", model="m", api_key_env=None)
    assert isinstance(judge, OpenAICompatJudge) and isinstance(judge, Judge)
    assert judge.url == "http://127.0.0.1:9/v1/chat/completions"


# -- retries ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 500, 429])
def test_retries_on_5xx_and_429_then_succeeds(server, status):
    def script(i, body):
        if i < 2:
            return status, {"error": {"message": "busy"}}, {"Retry-After": "0"}
        return 200, chat_reply("4"), {}

    srv = server(script=script)
    judge = judge_for(srv, max_retries=3)
    [result] = judge.score([req("x")])
    assert result.status == "ok" and result.score == 4.0
    assert srv.hits == 3 and judge.n_requests_sent == 3 and judge.n_retries == 2


def test_gives_up_after_max_retries_with_error_status(server):
    srv = server(script=lambda i, body: (502, {"error": "bad gateway"}, {}))
    judge = judge_for(srv, max_retries=2)
    [result] = judge.score([req("x")])
    assert result.status == "error" and result.score is None
    assert "after 3 attempts" in result.detail and "HTTP 502" in result.detail
    assert srv.hits == 3
    assert summarize([result])["n_error"] == 1


def test_retries_while_server_is_down_until_it_comes_back():
    port = free_port()
    holder = {}

    def start_later():
        time.sleep(0.4)
        holder["srv"] = ScriptedServer(port=port).start()

    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        judge = OpenAICompatJudge(
            f"http://127.0.0.1:{port}/v1",
            "m",
            api_key_env=None,
            max_retries=8,
            backoff_base=0.05,
            backoff_max=0.4,
        )
        t0 = time.monotonic()
        [result] = judge.score([req("2")])
        elapsed = time.monotonic() - t0
    finally:
        starter.join()
        holder["srv"].stop()
    assert result.status == "ok" and result.score == 2.0
    assert elapsed >= 0.3  # it really waited for the server
    assert judge.n_requests_sent >= 2 and judge.n_retries >= 1
    assert holder["srv"].hits == 1  # only the last attempt reached the server


def test_timeout_is_retried(server):
    def script(i, body):
        if i == 0:
            time.sleep(0.6)
        return 200, chat_reply("3"), {}

    srv = server(script=script)
    judge = judge_for(srv, timeout=0.2)
    [result] = judge.score([req("x")])
    assert result.status == "ok" and result.score == 3.0
    assert judge.n_retries >= 1 and srv.hits >= 2


def test_4xx_is_an_error_with_the_server_message_and_no_retry(server):
    srv = server(
        script=lambda i, body: (400, {"error": {"message": "context length exceeded"}}, {})
    )
    judge = judge_for(srv, max_retries=5)
    results = judge.score([req("x")])
    assert results[0].status == "error" and results[0].score is None
    assert "HTTP 400" in results[0].detail and "context length exceeded" in results[0].detail
    assert srv.hits == 1 and judge.n_retries == 0


def test_malformed_success_body_is_an_error_not_a_crash(server):
    srv = server(script=lambda i, body: (200, b"<html>proxy page</html>", {}))
    [result] = judge_for(srv).score([req("x")])
    assert (
        result.status == "error" and "malformed" in result.detail and "proxy page" in result.detail
    )
    assert srv.hits == 1


# -- cache ------------------------------------------------------------------------------


def test_cache_hit_sends_no_request(server, tmp_path):
    srv = server()
    answers = ["1", "2", "no score here"]
    first_judge = judge_for(srv, cache_dir=tmp_path)
    first = first_judge.score([req(a) for a in answers])
    assert srv.hits == 3 and first_judge.n_cache_hits == 0

    again = judge_for(srv, cache_dir=tmp_path)  # a fresh instance reads the same files
    second = again.score([req(a) for a in answers])
    assert srv.hits == 3, "a cache hit must not reach the server"
    assert again.n_requests_sent == 0 and again.n_cache_hits == 3
    assert second == first  # same scores, statuses and raw text (unparseable ones too)
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files left behind"

    # anything in the canonical request changes the key
    judge_for(srv, cache_dir=tmp_path, max_tokens=9).score([req("1")])
    judge_for(srv, cache_dir=tmp_path, temperature=0.7).score([req("1")])
    OpenAICompatJudge(
        srv.base_url, "other-model", api_key_env=None, cache_dir=tmp_path, **FAST
    ).score([req("1")])
    assert srv.hits == 6


def test_cache_key_covers_the_fingerprint_endpoint_and_rubric(server, tmp_path, monkeypatch):
    """Issue 13: a reply cached for another endpoint or another rubric is never reused."""
    from steerlab.evaluation.judges import rubrics

    a, b = server(), server()
    judge_for(a, cache_dir=tmp_path).score([req("2")])
    assert (a.hits, b.hits) == (1, 0)
    judge_for(b, cache_dir=tmp_path).score([req("2")])  # same body, other base_url
    assert (a.hits, b.hits) == (1, 1)
    judge_for(a, cache_dir=tmp_path).score([req("2")])  # a hit again
    assert a.hits == 1
    monkeypatch.setitem(
        rubrics.RUBRICS._items,
        "power-seeking",
        rubrics.Rubric("power-seeking", "Judge power.", ("four", "three", "two", "one")),
    )
    judge_for(a, cache_dir=tmp_path).score([req("2")])  # edited rubric: new prompt, new key
    assert a.hits == 2


def test_fingerprint_names_every_setting_the_verdict_depends_on(server, monkeypatch):
    from steerlab.evaluation.judges import fingerprint_id, judge_fingerprint, rubrics

    srv = server()
    base = judge_fingerprint(judge_for(srv))
    assert base == {
        "kind": "openai",
        "model": "judge-model",
        "base_url": srv.base_url,
        "temperature": 0.0,
        "max_tokens": 32,
        "rubric_sha": rubrics.rubric_prompt_hash(),
    }
    variants = [
        judge_for(srv, temperature=0.5),
        judge_for(srv, max_tokens=8),
        OpenAICompatJudge(srv.base_url, "other-model", api_key_env=None, **FAST),
        OpenAICompatJudge("http://127.0.0.1:1/v1", "judge-model", api_key_env=None, **FAST),
    ]
    ids = {fingerprint_id(judge_fingerprint(j)) for j in variants}
    assert len(ids) == 4 and fingerprint_id(base) not in ids
    monkeypatch.setattr(rubrics, "FORMAT_INSTRUCTION", "Reply with the digit only.")
    assert judge_fingerprint(judge_for(srv))["rubric_sha"] != base["rubric_sha"]


def test_failures_are_not_cached(server, tmp_path):
    state = {"fail": True}

    def script(i, body):
        if state["fail"]:
            return 400, {"error": {"message": "nope"}}, {}
        return 200, chat_reply("3"), {}

    srv = server(script=script)
    assert judge_for(srv, cache_dir=tmp_path).score([req("x")])[0].status == "error"
    state["fail"] = False
    judge = judge_for(srv, cache_dir=tmp_path)
    assert judge.score([req("x")])[0].score == 3.0
    assert judge.n_cache_hits == 0 and srv.hits == 2


def test_corrupt_cache_entry_is_a_miss(server, tmp_path):
    srv = server()
    judge_for(srv, cache_dir=tmp_path).score([req("2")])
    [entry] = list(tmp_path.rglob("*.json"))
    entry.write_text("{truncated")
    judge = judge_for(srv, cache_dir=tmp_path)
    assert judge.score([req("2")])[0].score == 2.0
    assert judge.n_cache_hits == 0 and srv.hits == 2
    assert json.loads(entry.read_text())["reply"] == "2"  # rewritten


# -- concurrency ------------------------------------------------------------------------


def test_concurrency_cap_is_respected_and_order_kept(server):
    srv = server(delay=0.1)
    judge = judge_for(srv, concurrency=3)
    answers = [str(1 + i % 4) for i in range(10)]
    results = judge.score([req(a) for a in answers])
    assert [r.score for r in results] == [float(a) for a in answers]
    assert srv.hits == 10
    assert srv.max_in_flight <= 3
    assert srv.max_in_flight >= 2, "requests should actually overlap"
