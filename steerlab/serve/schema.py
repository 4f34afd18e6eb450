"""Request validation and response bodies of ``steerlab serve`` (OpenAI chat-completions).

Pure functions on JSON values, no model: :func:`parse_chat_request` turns a request body
into a checked :class:`ChatRequest` or raises :class:`RequestError` (HTTP status, OpenAI
error ``type``, the offending ``param`` and a message that names the bad value and the
fix); the ``*_body`` helpers build the JSON the server sends back.

Accepted body fields: ``messages`` (required; roles system / user / assistant, content a
string or a list of ``{"type": "text", "text": ...}`` parts), ``max_tokens`` (or
``max_completion_tokens``), ``temperature`` (0 = greedy), ``top_p``, ``seed``, ``stream``,
``stop``, ``n`` (1 only), ``model`` (informational: the server has one model) and the
steerlab extensions ``steering`` (a list of ``{"vector": NAME, "multiplier": NUMBER}``)
and ``ignore_eos`` (generate ``max_tokens`` tokens even past end-of-turn, as in vLLM;
for load tests).
Other OpenAI fields (``frequency_penalty``, ``user``...) are accepted and ignored.
"""

import json
import math
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from steerlab.errors import ConfigError, SteerlabError, did_you_mean

ROLES = ("system", "user", "assistant")
MAX_STOP_SEQUENCES = 4
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for; anything beyond is a 400 with the limit in the message.

    max_tokens: largest max_tokens a request may set.
    default_max_tokens: max_tokens when the request sets none (default: the smaller of 128 and max_tokens).
    max_prompt_tokens: largest prompt in tokens after the chat template (1024 prefill in a few seconds on a CPU).
    max_multiplier: largest |multiplier| of a steering entry.
    max_strength: largest |strength| of a steering entry (a share of the typical residual
        norm at the vector's site; 1.0 adds as much as the residual stream holds).
    max_steering: most steering entries per request.
    max_body_bytes: largest request body.
    """

    max_tokens: int = 512
    default_max_tokens: int | None = None
    max_prompt_tokens: int = 1024
    max_multiplier: float = 64.0
    max_strength: float = 2.0
    max_steering: int = 8
    max_body_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        if self.default_max_tokens is None and isinstance(self.max_tokens, int):
            object.__setattr__(self, "default_max_tokens", min(128, self.max_tokens))
        for name in ("max_tokens", "default_max_tokens", "max_prompt_tokens", "max_steering"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ServeLimits.{name}={value!r}; it must be an int >= 1.")
        if self.default_max_tokens > self.max_tokens:  # type: ignore[operator]
            raise ConfigError(
                f"ServeLimits.default_max_tokens={self.default_max_tokens} exceeds "
                f"max_tokens={self.max_tokens}; lower it or raise max_tokens."
            )
        for name in ("max_multiplier", "max_strength"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"ServeLimits.{name}={value!r}; it must be a number > 0.")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"ServeLimits.max_body_bytes={self.max_body_bytes}; use >= 1024.")


class RequestError(SteerlabError):
    """A request the server refuses: becomes ``{"error": {...}}`` with HTTP ``status``."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


#: A steering entry's ``strength`` that means the vector's calibrated recommendation.
RECOMMENDED = "recommended"


@dataclass(frozen=True)
class SteeringEntry:
    """One steering term of a request: the vector's name and its multiplier, or instead
    a strength (a number, or ``"recommended"``) that the server turns into the multiplier
    (``multiplier`` is NaN until then)."""

    vector: str
    multiplier: float
    strength: float | str | None = None

    def as_dict(self) -> dict[str, Any]:
        """What the response echoes: the vector, the multiplier used, and the strength
        when one was asked for."""
        out: dict[str, Any] = {"vector": self.vector, "multiplier": self.multiplier}
        if self.strength is not None:
            out["strength"] = self.strength
        return out


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat-completions request."""

    messages: tuple[dict[str, str], ...]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stream: bool = False
    stop: tuple[str, ...] = ()
    steering: tuple[SteeringEntry, ...] = ()
    model: str | None = None
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object (``NaN`` literals are read as NaN numbers)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError(f"The request body is not UTF-8 text: {exc}.") from None
    except ValueError as exc:
        raise RequestError(
            f"The request body is not valid JSON ({exc}); send a JSON object such as "
            '{"messages": [{"role": "user", "content": "Hi"}]}.'
        ) from None
    if not isinstance(body, dict):
        raise RequestError(
            f"The request body must be a JSON object, got a JSON {type(body).__name__}."
        )
    return body


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if not _is_number(value) or not math.isfinite(value):
        raise RequestError(f"{key}={value!r} is not a finite number.", param=key)
    if not lo <= value <= hi:
        raise RequestError(f"{key}={value!r} is out of range; use {lo} to {hi}.", param=key)
    return float(value)


def _integer(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise RequestError(f"{key}={value!r} must be an integer.", param=key)
    return value


def _seed(body: dict[str, Any]) -> int | None:
    seed = _integer(body, "seed")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise RequestError(
            f"seed={seed} is out of range; use an integer from 0 to 2**63 - 1.", param="seed"
        )
    return seed


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts: only text parts are supported
        texts = []
        for j, part in enumerate(value):
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise RequestError(
                    f"{where}.content[{j}] is not a text part; this server accepts string "
                    'content or parts like {"type": "text", "text": "..."}.',
                    param=f"{where}.content",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(f"{where}.content[{j}].text must be a string.", param=where)
            texts.append(text)
        return "".join(texts)
    raise RequestError(
        f"{where}.content must be a string, got {type(value).__name__}.",
        param=f"{where}.content",
    )


def _messages(body: dict[str, Any]) -> tuple[dict[str, str], ...]:
    if "messages" not in body:
        raise RequestError(
            "The request has no 'messages'; send a list such as "
            '[{"role": "user", "content": "Hi"}].',
            param="messages",
        )
    raw = body["messages"]
    if not isinstance(raw, list) or not raw:
        raise RequestError(
            f"'messages' must be a non-empty list of {{role, content}} objects, got {raw!r:.80}.",
            param="messages",
        )
    out = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RequestError(f"{where} must be an object with role and content.", param=where)
        role = msg.get("role")
        if role not in ROLES:
            raise RequestError(
                f"{where}.role={role!r} is not supported; use one of {', '.join(ROLES)}.",
                param=f"{where}.role",
            )
        out.append({"role": role, "content": _content(msg.get("content"), where)})
    return tuple(out)


def _steering(
    body: dict[str, Any], vector_names: Collection[str], limits: ServeLimits
) -> tuple[SteeringEntry, ...]:
    raw = body.get("steering")
    if raw is None:
        return ()
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise RequestError(
            '\'steering\' must be a list of {"vector": NAME, "multiplier": NUMBER} (or '
            '"strength": NUMBER) objects.',
            param="steering",
        )
    if len(raw) > limits.max_steering:
        raise RequestError(
            f"{len(raw)} steering entries; this server allows at most {limits.max_steering}.",
            param="steering",
        )
    names = sorted(vector_names)
    valid = ", ".join(names) if names else "(none: the server was started without --vectors)"
    out = []
    for i, entry in enumerate(raw):
        where = f"steering[{i}]"
        if not isinstance(entry, dict):
            raise RequestError(
                f'{where} must be an object {{"vector": NAME, "multiplier": NUMBER}}.',
                param=where,
            )
        name = entry.get("vector")
        if not isinstance(name, str) or name not in vector_names:
            hint = did_you_mean(name, names) if isinstance(name, str) else ""
            raise RequestError(
                f"Unknown steering vector {name!r} in {where}.{hint} Valid vectors: {valid}.",
                param=f"{where}.vector",
                code="unknown_vector",
            )
        if "strength" in entry:
            out.append(_strength_entry(entry, name, where, limits))
            continue
        if "multiplier" not in entry:
            raise RequestError(
                f"{where} has no 'multiplier' (or 'strength').", param=f"{where}.multiplier"
            )
        m = _bounded(entry, "multiplier", where, limits.max_multiplier, "a number such as 4.0")
        out.append(SteeringEntry(name, m))
    return tuple(out)


def _bounded(entry: dict[str, Any], key: str, where: str, limit: float, example: str) -> float:
    """``entry[key]`` as a finite float with ``|value| <= limit``, else a RequestError."""
    value = entry[key]
    if not _is_number(value) or not math.isfinite(value):
        raise RequestError(
            f"{where}.{key}={value!r:.40} is not a finite number; send {example}.",
            param=f"{where}.{key}",
        )
    if abs(value) > limit:
        raise RequestError(
            f"{where}.{key}={value!r} is too large; this server allows |{key}| <= {limit:g}.",
            param=f"{where}.{key}",
        )
    return float(value)


def _strength_entry(
    entry: dict[str, Any], name: str, where: str, limits: ServeLimits
) -> SteeringEntry:
    """A steering entry that gives ``strength`` (|k v| / mean ||h|| at the vector's site)."""
    if "multiplier" in entry:
        raise RequestError(
            f"{where} has both 'multiplier' and 'strength'; send one of them.",
            param=f"{where}.strength",
        )
    if entry["strength"] == RECOMMENDED:
        return SteeringEntry(name, math.nan, RECOMMENDED)
    example = (
        f"{RECOMMENDED!r} or a number such as 0.1 (a tenth of the typical residual norm at the "
        "vector's site; useful strengths are mostly 0.05-0.4)"
    )
    return SteeringEntry(
        name, math.nan, _bounded(entry, "strength", where, limits.max_strength, example)
    )


def parse_chat_request(
    body: dict[str, Any], vector_names: Collection[str], limits: ServeLimits
) -> ChatRequest:
    """Validate a chat-completions body; raises :class:`RequestError` on the first problem."""
    messages = _messages(body)
    key = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    max_tokens = _integer(body, key)
    if max_tokens is None:
        max_tokens = int(limits.default_max_tokens or limits.max_tokens)
    elif max_tokens < 1:
        raise RequestError(f"{key}={max_tokens} must be >= 1.", param=key)
    elif max_tokens > limits.max_tokens:
        raise RequestError(
            f"{key}={max_tokens} exceeds this server's limit of {limits.max_tokens} tokens; "
            "ask for fewer (the limit is set with --max-tokens).",
            param=key,
            code="max_tokens_exceeded",
        )
    n = _integer(body, "n")
    if n is not None and n != 1:
        raise RequestError(
            f"n={n}: this server returns one choice per request; use n=1.", param="n"
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"stream={stream!r} must be true or false.", param="stream")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise RequestError(f"ignore_eos={ignore_eos!r} must be true or false.", param="ignore_eos")
    stop_raw = body.get("stop")
    stop: tuple[str, ...] = ()
    if stop_raw is not None:
        stop_list = [stop_raw] if isinstance(stop_raw, str) else stop_raw
        if (
            not isinstance(stop_list, list)
            or not all(isinstance(s, str) and s for s in stop_list)
            or len(stop_list) > MAX_STOP_SEQUENCES
        ):
            raise RequestError(
                f"stop={stop_raw!r:.80} must be a non-empty string or a list of at most "
                f"{MAX_STOP_SEQUENCES} non-empty strings.",
                param="stop",
            )
        stop = tuple(stop_list)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(f"model={model!r} must be a string.", param="model")
    return ChatRequest(
        messages=messages,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 1e-6, 1.0),
        seed=_seed(body),
        stream=stream,
        stop=stop,
        steering=_steering(body, vector_names, limits),
        model=model,
        ignore_eos=ignore_eos,
    )


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut before the first stop sequence, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


# --- response bodies ----------------------------------------------------------------------


def error_body(
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def _envelope(completion_id: str, kind: str, model: str) -> dict[str, Any]:
    """The fields every completion object and chunk opens with (id, object, created, model)."""
    return {"id": completion_id, "object": kind, "created": int(time.time()), "model": model}


def completion_body(
    completion_id: str,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    steering: Sequence[SteeringEntry] = (),
) -> dict[str, Any]:
    """A ``chat.completion`` object with one choice (plus the steering that was applied)."""
    return {
        **_envelope(completion_id, "chat.completion", model),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "steering": [s.as_dict() for s in steering],
    }


def chunk_body(
    completion_id: str, model: str, delta: dict[str, str], finish_reason: str | None = None
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a streamed reply."""
    return {
        **_envelope(completion_id, "chat.completion.chunk", model),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
