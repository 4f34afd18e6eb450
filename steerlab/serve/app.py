"""``steerlab serve``: an OpenAI-compatible HTTP server for one steerlab model.

uvicorn serves the Starlette app of :mod:`steerlab.serve.routes`; one scheduler thread
(:mod:`steerlab.serve.scheduler`) owns the model and decodes every running request in
one batched forward per step, each row with its own steering
(:mod:`steerlab.steering.batched`). Routes: ``POST /v1/chat/completions`` (with the
steerlab extension ``"steering": [{"vector": NAME, "multiplier": 4.0}]`` (or
``"strength": 0.1``: :mod:`steerlab.serve.strengths`) and real
token streaming), ``GET /v1/models``, ``GET /health`` and ``/v1/steering/vectors``
(list, add, remove while running).

Bad requests get a 4xx JSON error ``{"error": {"message", "type", "param", "code"}}``
and the server keeps serving; a full queue gets 503 with ``Retry-After``. The server
binds to 127.0.0.1 unless told otherwise; it has no authentication, so only bind to
other interfaces on a trusted network.
"""

import errno
import logging
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from steerlab.errors import ConfigError

try:  # the serve extra
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ConfigError(
        f"steerlab serve needs uvicorn and starlette ({exc}); install them with "
        "pip install 'steerlab[serve]'."
    ) from exc
from steerlab.models.model import SteerlabModel
from steerlab.serve.config import ServeConfig
from steerlab.serve.routes import build_app
from steerlab.serve.scheduler import Scheduler
from steerlab.serve.schema import ServeLimits
from steerlab.serve.store import VectorStore, load_vector_dir
from steerlab.serve.strengths import SiteNorms, measure_site_norms
from steerlab.serve.text import render_messages
from steerlab.vectors.vector import SteeringVector

LOOPBACK = "127.0.0.1"

__all__ = ["SteerlabServer", "load_vector_dir", "main", "make_server", "render_messages", "serve"]


def bind_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket; a port in use is a ConfigError that says what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"Port {port} on {host} is already in use; pick another with --port (or "
                "stop the program that holds it)."
            ) from None
        raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class SteerlabServer:
    """One model, its named vectors, the scheduler thread and a uvicorn server."""

    def __init__(
        self,
        model: SteerlabModel,
        vectors: Mapping[str, SteeringVector],
        host: str = LOOPBACK,
        port: int = 8000,
        *,
        limits: ServeLimits | None = None,
        config: ServeConfig | None = None,
        model_name: str | None = None,
        quiet: bool = True,
        vector_dir: "str | Path | None" = None,
    ) -> None:
        self.model = model
        self.limits = limits or ServeLimits()
        self.config = config or ServeConfig()
        self.store = VectorStore(model, vectors, self.config, vector_dir)
        self.site_norms = measure_site_norms(model)  # before the scheduler runs the model
        self.model_name = model_name or model.model_id
        self.quiet = quiet
        self.started = int(time.time())
        self.scheduler = Scheduler(model, self.config)
        self.socket = bind_socket(host, port, self.config.backlog)
        self.host = host
        self.app = build_app(self)
        uv_config = uvicorn.Config(
            self.app,
            http="h11",
            loop="asyncio",
            lifespan="off",
            log_level=logging.WARNING if quiet else logging.INFO,
            access_log=not quiet,
            backlog=self.config.backlog,
            timeout_keep_alive=5,
        )
        self._uvicorn = uvicorn.Server(uv_config)
        self._thread: threading.Thread | None = None
        self._running = threading.Event()  # set while serve_forever runs

    @property
    def site_norms(self) -> SiteNorms:
        """Typical norms per ``resid_post`` site (kept by the vector store)."""
        return self.store.site_norms

    @site_norms.setter
    def site_norms(self, value: SiteNorms) -> None:
        self.store.site_norms = value

    @property
    def vectors(self) -> dict[str, SteeringVector]:
        """The vectors held now (a copy)."""
        names = self.store.names()
        return dict(zip(names, self.store.get_many(names)))

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    @property
    def base_url(self) -> str:
        """``http://host:port/v1`` (what an OpenAI client's ``base_url`` should be)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def serve_forever(self, poll_interval: float = 0.1) -> None:
        """Serve until :meth:`shutdown` (or Ctrl-C in the main thread)."""
        del poll_interval  # kept for the old signature; uvicorn polls on its own
        self._running.set()
        self.scheduler.start()
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self.scheduler.stop()
            self._running.clear()

    def start(self, timeout: float = 30.0) -> "SteerlabServer":
        """Serve from a background thread; returns once the server accepts requests."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="steerlab-serve", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"The server on port {self.port} did not start.")
            time.sleep(0.01)
        return self

    def shutdown(self) -> None:
        """Stop serving (from another thread); waits for the server thread."""
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        deadline = time.monotonic() + 30
        while self._running.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)

    def server_close(self) -> None:
        self.scheduler.stop()
        self.socket.close()

    def __enter__(self) -> "SteerlabServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def make_server(
    model: SteerlabModel,
    vectors: "Mapping[str, SteeringVector] | str | Path | None" = None,
    host: str = LOOPBACK,
    port: int = 8000,
    *,
    limits: ServeLimits | None = None,
    config: ServeConfig | None = None,
    model_name: str | None = None,
    quiet: bool = True,
    vector_dir: "str | Path | None" = None,
) -> SteerlabServer:
    """A bound (not yet serving) server: ``.start()`` serves from a thread, or call
    ``serve_forever()``; use it as a context manager to stop it.

    ``vectors``: a name -> vector mapping, a directory of ``.safetensors`` files (names
    = file stems; also where ``POST /v1/steering/vectors`` may load files from) or None.
    ``vector_dir`` (default: the ``vectors`` directory) is where ``POST
    /v1/steering/vectors`` may load files from. ``port=0`` picks a free port (read
    ``server.port``).
    """
    if isinstance(vectors, (str, Path)):
        vector_dir = vector_dir or vectors
        vecs = load_vector_dir(vectors)
    else:
        vecs = dict(vectors or {})
    return SteerlabServer(
        model, vecs, host, port, limits=limits, config=config, model_name=model_name,
        quiet=quiet, vector_dir=vector_dir,
    )  # fmt: skip


def serve(
    model: "SteerlabModel | str" = "embedded",
    vectors: "Mapping[str, SteeringVector] | str | Path | None" = None,
    host: str = LOOPBACK,
    port: int = 8000,
    *,
    device: str | None = None,
    dtype: str = "auto",
    limits: ServeLimits | None = None,
    config: ServeConfig | None = None,
    model_name: str | None = None,
    quiet: bool = False,
    vector_dir: "str | Path | None" = None,
) -> None:
    """Load the model (a name goes to :func:`steerlab.load_model`) and serve until Ctrl-C.

    ``vectors``: a name -> vector mapping or a directory of ``.safetensors`` files;
    ``vector_dir``: where ``POST /v1/steering/vectors`` may load files from (default:
    the ``vectors`` directory, or ``config.vector_dir``).
    """
    if isinstance(vectors, (str, Path)):
        load_vector_dir(vectors)  # a bad directory fails before the model loads
    if isinstance(model, str):
        from steerlab.models.loading import load_model

        model = load_model(model, device=device, dtype=dtype)
    server = make_server(
        model, vectors, host, port, limits=limits, config=config, model_name=model_name,
        quiet=quiet, vector_dir=vector_dir,
    )  # fmt: skip
    names = ", ".join(server.store.names()) or "none"
    print(
        f"steerlab serve: {server.base_url} (model {server.model_name}; vectors: {names}; "
        f"batch {server.config.max_batch_size}, queue {server.config.max_queue})",
        flush=True,
    )
    if server.site_norms.norms is None:
        print(
            f"warning: steering by strength is off ({server.site_norms.reason}); requests "
            "must send multipliers.",
            file=sys.stderr,
            flush=True,
        )
    if host not in (LOOPBACK, "localhost", "::1"):
        print(
            f"warning: listening on {host}: this server has no authentication.",
            file=sys.stderr,
            flush=True,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m steerlab.serve.app ARGS`` runs ``steerlab serve ARGS`` (one entry point)."""
    from steerlab.cli import app

    app(["serve", *(sys.argv[1:] if argv is None else argv)], prog_name="steerlab")


if __name__ == "__main__":
    main()
