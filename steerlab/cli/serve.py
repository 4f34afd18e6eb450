"""``steerlab serve``: the OpenAI-compatible server (logic in :mod:`steerlab.serve.app`).

The one entry point of the server: ``python -m steerlab.serve.app`` delegates here. The
vectors directory, the limits and the port are checked before the model is loaded. The
limits and capacity flags are generated from :class:`~steerlab.serve.ServeLimits` and
:class:`~steerlab.serve.ServeConfig`.
"""

import errno
import inspect
import re
import socket
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import typer

from steerlab.cli import _common
from steerlab.cli._common import DEVICE, MODEL
from steerlab.cli._config import config_options, with_signature


def check_port(host: str, port: int) -> None:
    """ConfigError when ``host:port`` cannot be bound (in use, or not an interface here)."""
    from steerlab.errors import ConfigError

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError(f"--host {host!r}: {exc}; give an interface such as 127.0.0.1.") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            sock.bind(addr)
        except OSError as exc:
            raise ConfigError(_bind_message(host, port, exc)) from None


def _bind_message(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"--port {port}: {host}:{port} is already in use (another server?); "
            "stop it or pick another port, e.g. --port 8001."
        )
    return f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})."


def serve_cmd(
    model: str = MODEL,
    vectors: Path | None = typer.Option(
        None, help="Directory of .safetensors vectors (names = file stems)."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default; no auth)."),
    port: int = _common.count_option(
        8000, help="TCP port (0: any free port).", minimum=0, maximum=65535, what="port"
    ),
    device: str | None = DEVICE,
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = typer.Option(
        "auto",
        help="auto (bfloat16 on a CUDA GPU with bf16, float32 elsewhere) / float32 / "
        "bfloat16 / float16.",
    ),
    model_name: str | None = typer.Option(None, help="Model id reported to clients."),
    quiet: bool = typer.Option(False, help="Do not log requests."),
    **settings: Any,
) -> None:
    """OpenAI-compatible chat-completions server for one model, with named steering vectors.

    Requests are decoded together (one batched forward per step, each with its own
    steering); --max-batch-size, --max-queue and --request-timeout-s bound the load.
    """
    from steerlab.errors import ConfigError
    from steerlab.serve.app import load_vector_dir, serve
    from steerlab.serve.config import ServeConfig
    from steerlab.serve.schema import ServeLimits

    limits, config = _build(ServeLimits, settings), _build(ServeConfig, settings)
    vecs = load_vector_dir(vectors) if vectors is not None else None
    check_port(host, port)
    try:
        serve(
            model,
            vecs,
            host,
            port,
            device=device,
            dtype=dtype,
            limits=limits,
            config=config,
            model_name=model_name,
            quiet=quiet,
            vector_dir=vectors,
        )
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise ConfigError(_bind_message(host, port, exc)) from None
        raise


def _build(cls: Any, settings: dict[str, Any]) -> Any:
    """``cls`` from the flags of its fields that were given (None = left out: the default);
    its errors name the flag (``ServeLimits.max_tokens=0`` -> ``--max-tokens=0``)."""
    from steerlab.errors import ConfigError

    names = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in settings.items() if k in names and v is not None})
    except ConfigError as exc:
        flag = lambda m: "--" + m.group(1).replace("_", "-")  # noqa: E731
        raise ConfigError(re.sub(rf"{cls.__name__}\.(\w+)", flag, str(exc))) from None


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``: the fixed options above plus one flag per
    :class:`~steerlab.serve.ServeLimits` and :class:`~steerlab.serve.ServeConfig` field."""
    from steerlab.serve.config import ServeConfig
    from steerlab.serve.schema import ServeLimits

    fixed = [p for p in inspect.signature(serve_cmd).parameters.values() if p.kind != p.VAR_KEYWORD]
    params = [*fixed, *config_options(ServeLimits), *config_options(ServeConfig)]
    app.command("serve")(with_signature(serve_cmd, params))
