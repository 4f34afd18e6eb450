"""A judge that asks any OpenAI-compatible ``/chat/completions`` endpoint for 1-4 scores.

Stdlib only (``urllib.request``). Requests go out through a thread pool of ``concurrency``
workers; connection errors, timeouts, HTTP 429 and 5xx are retried with exponential
backoff plus jitter (``Retry-After`` is honoured, capped at ``backoff_max``); other 4xx
answers are not retried and become ``status="error"`` results carrying the server's
message. A request that still fails after ``max_retries`` retries is an ``"error"``
result too, so one bad request never loses the rest of the batch; :func:`summarize`
counts them.

With ``cache_dir`` set, each successful reply is stored under the sha256 of the canonical
JSON of the judge's :meth:`~OpenAICompatJudge.fingerprint` (kind, model, base URL,
temperature, max tokens, rubric prompt hash) plus the request body (model, messages,
temperature, max_tokens); a cache hit sends no request, and a reply cached for another
endpoint or settings is never reused. HTTP failures are never cached.
"""

import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from steerlab.errors import ConfigError, JudgeError
from steerlab.evaluation.judges.base import JudgeRequest, JudgeResult
from steerlab.evaluation.judges.cache import JsonDiskCache, cache_key
from steerlab.evaluation.judges.rubrics import (
    build_judge_messages,
    parse_score,
    rubric_prompt_hash,
)

_MAX_MESSAGE_CHARS = 500


class _RequestFailed(Exception):
    """Internal: the request failed for good (detail explains why)."""


class OpenAICompatJudge:
    """Grades answers with an LLM behind an OpenAI-compatible chat-completions API.

    Args:
        base_url: API root, e.g. ``"https://api.openai.com/v1"`` or
            ``"http://127.0.0.1:8000/v1"``; ``/chat/completions`` is appended.
        model: model name sent in the request body.
        api_key_env: environment variable holding the API key (sent as a Bearer token);
            ``None`` sends no key, for local servers that need none.
        temperature: sampling temperature (the paper uses 0).
        max_tokens: reply budget; the score sits alone on the first line.
        concurrency: most requests in flight at once.
        max_retries: retries after the first attempt on retryable failures.
        backoff_base: first retry delay in seconds; doubles each retry (plus jitter).
        backoff_max: cap on a single retry delay, in seconds.
        timeout: socket timeout per attempt, in seconds.
        cache_dir: directory of the on-disk reply cache; ``None`` disables it.

    Counters (read them after ``score``): ``n_requests_sent`` (HTTP attempts, retries
    included), ``n_cache_hits``, ``n_retries``.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int = 32,
        concurrency: int = 4,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 60.0,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base_url {base_url!r} must start with http:// or https://, "
                "e.g. 'https://api.openai.com/v1' or 'http://127.0.0.1:8000/v1'."
            )
        if not isinstance(model, str) or not model:
            raise ConfigError(f"model {model!r} must be a non-empty model name, e.g. 'gpt-4o'.")
        checks = [
            ("temperature", temperature, temperature >= 0, ">= 0"),
            (
                "max_tokens",
                max_tokens,
                isinstance(max_tokens, int) and max_tokens >= 1,
                "an int >= 1",
            ),
            (
                "concurrency",
                concurrency,
                isinstance(concurrency, int) and concurrency >= 1,
                "an int >= 1",
            ),
            (
                "max_retries",
                max_retries,
                isinstance(max_retries, int) and max_retries >= 0,
                "an int >= 0",
            ),
            ("backoff_base", backoff_base, backoff_base >= 0, ">= 0"),
            (
                "backoff_max",
                backoff_max,
                backoff_max >= backoff_base,
                f">= backoff_base ({backoff_base})",
            ),
            ("timeout", timeout, timeout > 0, "> 0 seconds"),
        ]
        for field, value, ok, want in checks:
            if not ok:
                raise ConfigError(f"{field}={value!r} is invalid; it must be {want}.")

        self._api_key: str | None = None
        if api_key_env is not None:
            key = os.environ.get(api_key_env, "")
            if not key:
                raise JudgeError(
                    f"Environment variable {api_key_env} is not set (or empty), so there is no "
                    f"API key for {base_url}. Set it (export {api_key_env}=...) or pass "
                    "api_key_env=None for a local server that needs no key."
                )
            self._api_key = key

        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.temperature = float(temperature)
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.timeout = float(timeout)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache = JsonDiskCache(self.cache_dir) if self.cache_dir is not None else None

        self.n_requests_sent = 0
        self.n_cache_hits = 0
        self.n_retries = 0
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._fingerprint = self.fingerprint()

    def __repr__(self) -> str:
        return (
            f"OpenAICompatJudge(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, cache_dir={self.cache_dir!r})"
        )

    # -- public API ---------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """What the verdicts depend on: kind, model, base URL, temperature, max tokens
        and a hash of the rubric prompt (template + every rubric)."""
        return {
            "kind": self.name,
            "model": self.model,
            "base_url": self.base_url,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "rubric_sha": rubric_prompt_hash(),
        }

    def cache_key_for(self, payload: dict[str, Any]) -> str:
        """The on-disk cache key of a request body: its sha256 together with the judge's
        fingerprint (so another endpoint or rubric never hits this entry)."""
        return cache_key({"fingerprint": self._fingerprint, "request": payload})

    def payload_for(self, request: JudgeRequest) -> dict[str, Any]:
        """The request body sent for ``request`` (hashed into the cache key)."""
        return {
            "model": self.model,
            "messages": build_judge_messages(request),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def score(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        """Grade ``requests``; one result per request, in order.

        Unknown behaviors raise before anything is sent.
        """
        payloads = [self.payload_for(r) for r in requests]
        if not payloads:
            return []
        self._fingerprint = self.fingerprint()
        workers = min(self.concurrency, len(payloads))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="steerlab-judge") as pool:
            return list(pool.map(self._score_one, payloads))

    # -- internals ----------------------------------------------------------------------

    def _score_one(self, payload: dict[str, Any]) -> JudgeResult:
        key = self.cache_key_for(payload)
        if self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None and isinstance(hit.get("reply"), str):
                with self._lock:
                    self.n_cache_hits += 1
                return _result_from_reply(hit["reply"])
        try:
            reply = self._complete(payload)
        except _RequestFailed as exc:
            return JudgeResult(score=None, raw="", status="error", detail=str(exc))
        if self._cache is not None:
            self._cache.put(key, {"request": payload, "reply": reply})
        return _result_from_reply(reply)

    def _complete(self, payload: dict[str, Any]) -> str:
        """POST ``payload`` with retries; return the reply text or raise _RequestFailed."""
        body = json.dumps(payload).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "steerlab-judge",
        }
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"

        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.n_retries += 1
            with self._lock:
                self.n_requests_sent += 1
            retry_after: float | None = None
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                message = _server_message(_read_quietly(exc))
                if exc.code != 429 and exc.code < 500:
                    raise _RequestFailed(
                        f"HTTP {exc.code} from {self.url} (not retried): {message}"
                    ) from None
                last = f"HTTP {exc.code}: {message}"
                retry_after = _retry_after_seconds(exc.headers.get("Retry-After"))
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc
                last = f"{type(exc).__name__}: {reason}"
            else:
                return _reply_text(raw, self.url)

            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, retry_after))
        raise _RequestFailed(
            f"gave up on {self.url} after {self.max_retries + 1} attempts; last failure: {last}"
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with 'equal jitter': uniform in [d/2, d], d = base * 2**attempt."""
        d = min(self.backoff_max, self.backoff_base * (2**attempt))
        delay = d / 2 + self._rng.uniform(0, d / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay


def _result_from_reply(reply: str) -> JudgeResult:
    score = parse_score(reply)
    if score is None:
        return JudgeResult(
            score=None,
            raw=reply,
            status="unparseable",
            detail="no score 1-4 found at the start of the reply's first line",
        )
    return JudgeResult(score=float(score), raw=reply, status="ok")


def _reply_text(raw: bytes, url: str) -> str:
    """choices[0].message.content of a chat-completions response body."""
    try:
        data = json.loads(raw.decode("utf-8"))
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        snippet = raw[:_MAX_MESSAGE_CHARS].decode("utf-8", errors="replace")
        raise _RequestFailed(
            f"malformed chat-completions response from {url} ({type(exc).__name__}: {exc}); "
            f"body starts: {snippet!r}"
        ) from None
    if content is None:
        return ""
    if not isinstance(content, str):
        raise _RequestFailed(
            f"chat-completions response from {url} has non-text content {content!r}"
        )
    return content


def _read_quietly(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read() or b""
    except (OSError, http.client.HTTPException):
        return b""


def _server_message(body: bytes) -> str:
    """The server's error message: ``error.message`` / ``error`` / ``detail``, else the text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:_MAX_MESSAGE_CHARS] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data.get("detail"))
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])[:_MAX_MESSAGE_CHARS]
        if err is not None:
            return str(err)[:_MAX_MESSAGE_CHARS]
    return text[:_MAX_MESSAGE_CHARS]


def _retry_after_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff
    return seconds if seconds >= 0 else None
