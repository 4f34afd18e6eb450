"""``steerlab serve``: an OpenAI-compatible HTTP server for one steerlab model.

Stdlib only (``http.server.ThreadingHTTPServer``). Routes:

- ``POST /v1/chat/completions``: messages rendered with the model's chat template
  (assistant turn open), ``temperature`` 0 = greedy, > 0 = sampling (reproducible with
  ``seed``), ``max_tokens``, ``stop``, ``stream`` (server-sent events), and the steerlab
  extension ``"steering": [{"vector": NAME, "multiplier": 4.0}, ...]`` where NAME is the
  stem of a ``.safetensors`` file of the ``--vectors`` directory (loaded at start).
  A request without ``steering`` is answered by the plain model.
- ``GET /v1/models``: the one model (and its steering vectors).
- ``GET /health``: ``{"status": "ok", ...}`` once the model is loaded.

Bad requests get a 4xx JSON error ``{"error": {"message", "type", "param", "code"}}``
and the server keeps serving. Generation runs under one lock (one request on the model at
a time; others wait). The server binds to 127.0.0.1 unless told otherwise; it has no
authentication, so only bind to other interfaces on a trusted network.

Streaming sends the reply in per-token chunks after generation has finished (the model
is not decoded incrementally); clients that read SSE work unchanged.
"""

import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from steerlab.errors import ConfigError, VectorFileError
from steerlab.models.model import SteerlabModel
from steerlab.serve.schema import (
    ChatRequest,
    RequestError,
    ServeLimits,
    apply_stop,
    chunk_body,
    completion_body,
    error_body,
    new_completion_id,
    parse_chat_request,
    parse_json_body,
)
from steerlab.steering.generate import generate
from steerlab.steering.steer import Steering
from steerlab.vectors.vector import SteeringVector

LOOPBACK = "127.0.0.1"
_FALLBACK_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def load_vector_dir(path: "str | Path") -> dict[str, SteeringVector]:
    """Every ``*.safetensors`` vector of a directory, keyed by file stem (sorted)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise VectorFileError(
            f"--vectors {str(path)!r} is not a directory; pass a directory of .safetensors "
            "vectors (saved with SteeringVector.save)."
        )
    return {p.stem: SteeringVector.load(p) for p in sorted(path.glob("*.safetensors"))}


def render_messages(model: SteerlabModel, messages: Sequence[Mapping[str, str]]) -> str:
    """The chat as prompt text: the model's chat template with the assistant turn open.

    Tokenizers without a template get a plain ``Role: content`` layout; templates that
    refuse a system turn get the system text prepended to the first user message.
    """
    msgs = [dict(m) for m in messages]
    tok = model.tokenizer
    if not getattr(tok, "chat_template", None):
        lines = [f"{_FALLBACK_ROLES[m['role']]}: {m['content']}" for m in msgs]
        return "\n".join(lines) + "\nAssistant:"
    try:
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    except Exception:  # e.g. templates without a system role
        system = "\n\n".join(m["content"] for m in msgs if m["role"] == "system")
        rest = [m for m in msgs if m["role"] != "system"]
        if system:
            first_user = next((m for m in rest if m["role"] == "user"), None)
            if first_user is None:
                rest.insert(0, {"role": "user", "content": system})
            else:
                first_user["content"] = f"{system}\n\n{first_user['content']}"
        return tok.apply_chat_template(rest, tokenize=False, add_generation_prompt=True)


class SteerlabServer(ThreadingHTTPServer):
    """One model, its named steering vectors, the limits, and a lock around generation."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        model: SteerlabModel,
        vectors: Mapping[str, SteeringVector],
        host: str = LOOPBACK,
        port: int = 8000,
        *,
        limits: ServeLimits | None = None,
        model_name: str | None = None,
        quiet: bool = True,
    ) -> None:
        for name, vec in vectors.items():
            if not isinstance(vec, SteeringVector):
                raise ConfigError(
                    f"Vector {name!r} is a {type(vec).__name__}, not a SteeringVector."
                )
            try:
                vec.check_model(model.d_model, model.n_layers, model.model_id)
            except Exception as exc:
                raise ConfigError(f"Vector {name!r} does not fit the model: {exc}") from exc
        self.model = model
        self.vectors = dict(vectors)
        self.limits = limits or ServeLimits()
        self.model_name = model_name or model.model_id
        self.quiet = quiet
        self.lock = threading.Lock()
        self.started = int(time.time())
        self.n_completions = 0
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://host:port/v1`` (what an OpenAI client's ``base_url`` should be)."""
        return f"http://{self.server_address[0]}:{self.port}/v1"

    # --- the model side ------------------------------------------------------------------

    def prompt(self, request: ChatRequest) -> tuple[str, tuple[int, ...]]:
        """The rendered prompt and its token ids; too long a prompt is a 400."""
        text = render_messages(self.model, request.messages)
        ids = self.model.chat.encode_ids(text)
        if len(ids) > self.limits.max_prompt_tokens:
            raise RequestError(
                f"The prompt has {len(ids)} tokens after the chat template; this server "
                f"accepts at most {self.limits.max_prompt_tokens}. Shorten the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        n_ctx = getattr(self.model.bridge.cfg, "n_ctx", None)
        if isinstance(n_ctx, int) and len(ids) + request.max_tokens > n_ctx:
            raise RequestError(
                f"prompt ({len(ids)} tokens) + max_tokens ({request.max_tokens}) exceeds the "
                f"model's context of {n_ctx} tokens; lower max_tokens or shorten the messages.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return text, ids

    def complete(self, request: ChatRequest) -> tuple[str, tuple[int, ...], str, int]:
        """``(text, token_ids, finish_reason, prompt_tokens)`` of one request."""
        prompt, ids = self.prompt(request)
        terms = [e for e in request.steering if e.multiplier != 0.0]
        spec = (
            Steering(
                tuple(self.vectors[e.vector] for e in terms), tuple(e.multiplier for e in terms)
            )
            if terms
            else None
        )
        seed = request.seed if request.seed is not None else int(time.time_ns() % 2**31)
        with self.lock:
            res = generate(
                self.model,
                prompt,
                request.max_tokens,
                greedy=request.greedy,
                temperature=request.temperature if not request.greedy else 1.0,
                top_p=request.top_p,
                seed=seed,
                batch_size=1,
                chat=False,
                steering=spec,
            )
            self.n_completions += 1
        token_ids = res.token_ids[0]
        text, stopped = apply_stop(res.texts[0], request.stop)
        finish = "length" if len(token_ids) >= request.max_tokens and not stopped else "stop"
        return text, token_ids, finish, len(ids)

    def models_body(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_name,
                    "object": "model",
                    "created": self.started,
                    "owned_by": "steerlab",
                    "steering_vectors": sorted(self.vectors),
                }
            ],
        }

    def health_body(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.model_name,
            "vectors": sorted(self.vectors),
            "n_completions": self.n_completions,
        }


class _Handler(BaseHTTPRequestHandler):
    server: SteerlabServer
    server_version = "steerlab-serve"

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            sys.stderr.write(f"[steerlab serve] {self.address_string()} {format % args}\n")

    # --- plumbing ------------------------------------------------------------------------

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, err: RequestError) -> None:
        self._send_json(err.status, err.body())

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError("The request has no Content-Length header.", status=411)
        try:
            n = int(length)
        except ValueError:
            raise RequestError(f"Bad Content-Length {length!r}.") from None
        if n < 0 or n > self.server.limits.max_body_bytes:
            raise RequestError(
                f"The body has {n} bytes; this server accepts at most "
                f"{self.server.limits.max_body_bytes}.",
                status=413,
            )
        return self.rfile.read(n)

    # --- routes --------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            self._send_json(200, self.server.health_body())
        elif path == "/v1/models":
            self._send_json(200, self.server.models_body())
        elif path == "/v1/chat/completions":
            self._send_error(RequestError("Use POST for /v1/chat/completions.", status=405))
        else:
            self._not_found(path)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/v1/chat/completions":
            self._not_found(path)
            return
        try:
            body = parse_json_body(self._read_body())
            request = parse_chat_request(body, self.server.vectors.keys(), self.server.limits)
            text, token_ids, finish, n_prompt = self.server.complete(request)
        except RequestError as err:
            self._send_error(err)
            return
        except Exception as exc:  # keep serving; report the failure to the client
            self.log_error("generation failed: %r", exc)
            self._send_json(500, error_body(f"Generation failed: {exc}", "server_error"))
            return
        cid = new_completion_id()
        if request.stream:
            self._stream(cid, text, token_ids, finish)
            return
        payload = completion_body(
            cid, self.server.model_name, text, finish, n_prompt, len(token_ids), request.steering
        )
        self._send_json(200, payload)

    def _not_found(self, path: str) -> None:
        self._send_error(
            RequestError(
                f"No route {path!r}; this server has POST /v1/chat/completions, "
                "GET /v1/models and GET /health.",
                status=404,
                type="not_found_error",
            )
        )

    def _stream(self, cid: str, text: str, token_ids: tuple[int, ...], finish: str) -> None:
        """Server-sent events: a role chunk, one chunk per token, a finish chunk, [DONE]."""
        name = self.server.model_name
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        events = [chunk_body(cid, name, {"role": "assistant", "content": ""})]
        events += [
            chunk_body(cid, name, {"content": p})
            for p in token_pieces(self.server.model, text, token_ids)
        ]
        events.append(chunk_body(cid, name, {}, finish))
        for event in events:
            self.wfile.write(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


def token_pieces(model: SteerlabModel, text: str, token_ids: Sequence[int]) -> list[str]:
    """``text`` split at token boundaries (non-empty pieces that concatenate to ``text``)."""
    cuts = []
    for k in range(1, len(token_ids) + 1):
        prefix = model.tokenizer.decode(list(token_ids[:k]), skip_special_tokens=True).lstrip()
        cuts.append(min(len(prefix), len(text)))
    pieces, last = [], 0
    for c in cuts:
        if c > last:
            pieces.append(text[last:c])
            last = c
    if last < len(text):
        pieces.append(text[last:])
    return pieces


def make_server(
    model: SteerlabModel,
    vectors: "Mapping[str, SteeringVector] | str | Path | None" = None,
    host: str = LOOPBACK,
    port: int = 8000,
    *,
    limits: ServeLimits | None = None,
    model_name: str | None = None,
    quiet: bool = True,
) -> SteerlabServer:
    """A bound (not yet serving) server; call ``serve_forever()`` (e.g. in a thread).

    ``vectors``: a name -> vector mapping, a directory of ``.safetensors`` files (names
    = file stems) or None. ``port=0`` picks a free port (read ``server.port``).
    """
    vecs = load_vector_dir(vectors) if isinstance(vectors, (str, Path)) else dict(vectors or {})
    return SteerlabServer(
        model, vecs, host, port, limits=limits, model_name=model_name, quiet=quiet
    )


def serve(
    model: "SteerlabModel | str" = "embedded",
    vectors: "Mapping[str, SteeringVector] | str | Path | None" = None,
    host: str = LOOPBACK,
    port: int = 8000,
    *,
    device: str | None = None,
    dtype: str = "float32",
    limits: ServeLimits | None = None,
    model_name: str | None = None,
    quiet: bool = False,
) -> None:
    """Load the model (a name goes to :func:`steerlab.load_model`) and serve until Ctrl-C."""
    if isinstance(model, str):
        from steerlab.models.loading import load_model

        model = load_model(model, device=device, dtype=dtype)
    server = make_server(
        model, vectors, host, port, limits=limits, model_name=model_name, quiet=quiet
    )
    names = ", ".join(sorted(server.vectors)) or "none"
    print(
        f"steerlab serve: {server.base_url} (model {server.model_name}; vectors: {names})",
        flush=True,
    )
    if host not in (LOOPBACK, "localhost", "::1"):
        print(
            f"warning: listening on {host}: this server has no authentication.",
            file=sys.stderr,
            flush=True,
        )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m steerlab.serve.app ...``: the same command as ``steerlab serve ...``."""
    from steerlab.cli import app

    app(["serve", *(sys.argv[1:] if argv is None else argv)], prog_name="steerlab")


if __name__ == "__main__":
    main()
