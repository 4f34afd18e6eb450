"""The HTTP routes of ``steerlab serve`` (a Starlette app; handlers never touch the model).

- ``POST /v1/chat/completions``: OpenAI chat completions with the steerlab extension
  ``"steering": [{"vector": NAME, "multiplier": 4.0}, ...]`` (or ``"strength": 0.1`` /
  ``"recommended"`` instead of the multiplier); ``"stream": true`` sends
  server-sent events as the tokens are generated, then ``data: [DONE]``.
- ``GET /v1/models``, ``GET /health``.
- ``GET /v1/steering/vectors`` (list), ``GET /v1/steering/vectors/{name}``,
  ``POST /v1/steering/vectors`` (add: ``{"name", "path"}`` or ``{"name", "data", "site"}``),
  ``DELETE /v1/steering/vectors/{name}``.

A handler validates the request, submits a :class:`~steerlab.serve.scheduler.Job` and
relays its events; a client that disconnects cancels its job. Errors are OpenAI-shaped
JSON (``{"error": {"message", "type", "param", "code"}}``).
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from steerlab.serve.scheduler import Job, JobError, QueueFullError
from steerlab.serve.schema import (
    ChatRequest,
    RequestError,
    SteeringEntry,
    chunk_body,
    completion_body,
    error_body,
    new_completion_id,
    parse_chat_request,
    parse_json_body,
)
from steerlab.serve.strengths import resolve_entry
from steerlab.serve.text import TextStream, render_messages
from steerlab.steering.batched import RowSpec
from steerlab.steering.steer import Steering

DRAIN_FACTOR = 16  # bodies up to 16x the limit are read before the 413 is sent
ROUTES_HELP = (
    "POST /v1/chat/completions, GET /v1/models, GET /health and "
    "GET/POST/DELETE /v1/steering/vectors"
)


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Response(body, status, headers=headers, media_type="application/json")


def _error(err: RequestError) -> Response:
    headers = None
    if isinstance(err, QueueFullError):
        headers = {"Retry-After": str(err.retry_after_s)}
    return _json(err.status, err.body(), headers)


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The request body: 413 past ``max_bytes``, 408 when it does not arrive in time."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise RequestError(f"Bad Content-Length {length!r}.") from None
        if n < 0 or n > max_bytes:
            if 0 < n <= DRAIN_FACTOR * max_bytes:  # read it, so the client sees the 413
                await _drain(request, timeout_s)
            raise RequestError(
                f"The body has {n} bytes; this server accepts at most {max_bytes}.", status=413
            )

    async def receive_all() -> bytes:
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > DRAIN_FACTOR * max_bytes:
                break
            if total <= max_bytes:
                chunks.append(chunk)
        if total > max_bytes:
            raise RequestError(
                f"The body has more than {max_bytes} bytes; this server accepts at most "
                f"{max_bytes}.",
                status=413,
            )
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(receive_all(), timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(
            f"The request body did not arrive within {timeout_s:g} s (Content-Length "
            f"{length}); send the whole body at once.",
            status=408,
            code="body_timeout",
        ) from None


async def _drain(request: Request, timeout_s: float) -> None:
    """Read and discard a body (a client still sending cannot read the error otherwise)."""

    async def discard() -> None:
        async for _ in request.stream():
            pass

    try:
        await asyncio.wait_for(discard(), timeout_s)
    except (asyncio.TimeoutError, ClientDisconnect):
        pass


class Handlers:
    """The route handlers of one server (``server`` holds model, store, scheduler, limits)."""

    def __init__(self, server: Any) -> None:
        self.server = server

    # --- chat ----------------------------------------------------------------------------
    def _row_spec(self, req: ChatRequest) -> tuple[RowSpec, int, tuple[SteeringEntry, ...]]:
        """The scheduler's row for ``req``, its prompt length and its steering entries
        with their multipliers (strengths turned into multipliers)."""
        srv = self.server
        ids = srv.model.chat.encode_ids(render_messages(srv.model, req.messages))
        if len(ids) > srv.limits.max_prompt_tokens:
            raise RequestError(
                f"The prompt has {len(ids)} tokens after the chat template; this server "
                f"accepts at most {srv.limits.max_prompt_tokens}. Shorten the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        n_ctx = getattr(srv.model.bridge.cfg, "n_ctx", None)
        if isinstance(n_ctx, int) and len(ids) + req.max_tokens > n_ctx:
            raise RequestError(
                f"prompt ({len(ids)} tokens) + max_tokens ({req.max_tokens}) exceeds the "
                f"model's context of {n_ctx} tokens; lower max_tokens or shorten the messages.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        vectors = srv.store.get_many([e.vector for e in req.steering])
        entries = tuple(
            resolve_entry(e, v, srv.site_norms, srv.model.n_layers, f"steering[{i}]")
            for i, (e, v) in enumerate(zip(req.steering, vectors, strict=True))
        )
        terms = [(e, v) for e, v in zip(entries, vectors, strict=True) if e.multiplier != 0.0]
        steering = (
            Steering(tuple(v for _, v in terms), tuple(e.multiplier for e, _ in terms))
            if terms
            else None
        )
        seed = req.seed if req.seed is not None else int(time.time_ns() % 2**31)
        spec = RowSpec(
            tuple(ids),
            req.max_tokens,
            steering=steering,
            greedy=req.greedy,
            temperature=req.temperature if not req.greedy else 1.0,
            top_p=req.top_p,
            seed=seed,
            stop_at_eos=not req.ignore_eos,
        )
        return spec, len(ids), entries

    async def chat(self, request: Request) -> Response:
        srv = self.server
        try:
            raw = await read_body(request, srv.limits.max_body_bytes, srv.config.body_timeout_s)
            req = parse_chat_request(parse_json_body(raw), srv.store.names(), srv.limits)
            spec, n_prompt, entries = self._row_spec(req)
        except RequestError as err:
            return _error(err)
        except ClientDisconnect:
            return Response(status_code=499)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = Job(
            uuid.uuid4().hex,
            spec,
            lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev),
            srv.config.request_timeout_s,
        )
        try:
            srv.scheduler.submit(job)
        except RequestError as err:
            return _error(err)
        relay = _Relay(srv.scheduler, job, events, TextStream(srv.model.tokenizer, req.stop))
        cid = new_completion_id()
        if req.stream:
            return StreamingResponse(
                self._sse(relay, cid),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        watcher = asyncio.ensure_future(_wait_disconnect(request))
        try:
            pieces = [p async for p in relay.pieces(watcher)]
        except JobFailed as exc:
            return _json(exc.error.status, exc.body())
        finally:
            watcher.cancel()
        if pieces and pieces[-1] is None:  # the client went away; nobody reads this
            return Response(status_code=499)
        text = relay.text
        body = completion_body(
            cid, srv.model_name, text.text, relay.finish, n_prompt, len(text.token_ids),
            entries,
        )  # fmt: skip
        return _json(200, body)

    async def _sse(self, relay: "_Relay", cid: str) -> AsyncIterator[str]:
        """Server-sent events: a role chunk, a chunk per text piece, a finish chunk, [DONE]."""
        name = self.server.model_name
        complete = False
        try:
            yield _event(chunk_body(cid, name, {"role": "assistant", "content": ""}))
            try:
                async for piece in relay.pieces():
                    yield _event(chunk_body(cid, name, {"content": piece}))
            except JobFailed as exc:  # the status line is sent: report in the stream
                yield _event(exc.body())
            else:
                yield _event(chunk_body(cid, name, {}, relay.finish))
            yield "data: [DONE]\n\n"
            complete = True
        finally:
            if not complete:  # the client disconnected: stop generating for it
                relay.cancel()

    # --- other routes --------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        srv = self.server
        model = {
            "id": srv.model_name,
            "object": "model",
            "created": srv.started,
            "owned_by": "steerlab",
            "steering_vectors": srv.store.names(),
        }
        return _json(200, {"object": "list", "data": [model]})

    async def health(self, request: Request) -> Response:
        srv = self.server
        counts = srv.scheduler.counts()
        body = {
            "status": "ok",
            "model": srv.model_name,
            "vectors": srv.store.names(),
            "n_completions": counts["completed"],
            "scheduler": counts,
        }
        return _json(200, body)

    async def list_vectors(self, request: Request) -> Response:
        return _json(200, self.server.store.list_body())

    async def get_vector(self, request: Request) -> Response:
        store = self.server.store
        name = request.path_params["name"]
        if name not in store.names():
            return _error(store.missing(name))
        return _json(200, store.describe(name))

    async def add_vector(self, request: Request) -> Response:
        srv = self.server
        limit = srv.config.max_vector_bytes * 4 // 3 + 65536  # base64 plus the JSON around it
        try:
            raw = await read_body(request, limit, srv.config.body_timeout_s)
            body = parse_json_body(raw)
            return _json(201, srv.store.add_from_body(body))
        except RequestError as err:
            return _error(err)

    async def remove_vector(self, request: Request) -> Response:
        try:
            return _json(200, self.server.store.remove(request.path_params["name"]))
        except RequestError as err:
            return _error(err)


class JobFailed(Exception):
    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error

    def body(self) -> dict[str, Any]:
        e = self.error
        return error_body(e.message, e.type, None, e.code)


class _Relay:
    """One job's events turned into text pieces (for the JSON reply and the stream)."""

    def __init__(self, scheduler: Any, job: Job, events: asyncio.Queue, text: TextStream):
        self.scheduler, self.job, self.events, self.text = scheduler, job, events, text
        self.finish = "stop"

    def cancel(self, completed: bool = False) -> None:
        self.scheduler.cancel(self.job.id, completed=completed)

    async def pieces(self, watcher: "asyncio.Future | None" = None) -> AsyncIterator["str | None"]:
        """Text pieces as tokens arrive; ``None`` last if ``watcher`` (disconnect) fires."""
        while True:
            get = asyncio.ensure_future(self.events.get())
            waiting = {get} if watcher is None else {get, watcher}
            try:
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not get.done():
                    get.cancel()
            if get not in done:
                self.cancel()
                yield None
                return
            ev = get.result()
            if isinstance(ev, JobError):
                raise JobFailed(ev)
            if ev.token is not None:
                piece = self.text.push(ev.token)
                if piece:
                    yield piece
                if self.text.stopped:  # a stop sequence: no more tokens needed
                    self.cancel(completed=True)
                    break
            if ev.done:
                self.finish = "length" if ev.finish_reason == "length" else "stop"
                break
        rest = self.text.finish()
        if rest:
            yield rest


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _wait_disconnect(request: Request) -> None:
    """Returns when the client disconnects (call after the body has been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def build_app(server: Any) -> Starlette:
    """The Starlette app of ``server`` (see :class:`steerlab.serve.app.SteerlabServer`)."""
    h = Handlers(server)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        path = request.url.path
        if status == 404:
            err = RequestError(
                f"No route {path!r}; this server has {ROUTES_HELP}.",
                status=404,
                type="not_found_error",
            )
        elif status == 405:
            err = RequestError(f"{request.method} is not allowed on {path}.", status=405)
        else:
            err = RequestError(str(getattr(exc, "detail", exc)), status=status)
        return _error(err)

    async def server_error(request: Request, exc: Exception) -> Response:
        return _json(500, error_body(f"Internal error: {exc!r}", "server_error"))

    routes = [
        Route("/v1/chat/completions", h.chat, methods=["POST"]),
        Route("/v1/models", h.models, methods=["GET"]),
        Route("/health", h.health, methods=["GET"]),
        Route("/v1/steering/vectors", h.list_vectors, methods=["GET"]),
        Route("/v1/steering/vectors", h.add_vector, methods=["POST"]),
        Route("/v1/steering/vectors/{name}", h.get_vector, methods=["GET"]),
        Route("/v1/steering/vectors/{name}", h.remove_vector, methods=["DELETE"]),
    ]
    handlers = {HTTPException: http_error, Exception: server_error}
    return Starlette(routes=routes, exception_handlers=handlers)  # type: ignore[arg-type]
