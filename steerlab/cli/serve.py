"""``steerlab serve``: the OpenAI-compatible server (logic in :mod:`steerlab.serve.app`).

The one entry point of the server: ``python -m steerlab.serve.app`` delegates here. The
vectors directory, the limits and the port are checked before the model is loaded.
"""

import errno
import socket
from pathlib import Path
from typing import Literal

import typer

from steerlab.cli import _common
from steerlab.cli._common import DEVICE, MODEL


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
    dtype: Literal["float32", "bfloat16", "float16"] = typer.Option(
        "float32",
        help="float32 / bfloat16 / float16.",
    ),
    model_name: str | None = typer.Option(None, help="Model id reported to clients."),
    max_tokens: int = _common.count_option(512, help="Largest max_tokens a request may ask for."),
    max_prompt_tokens: int = _common.count_option(4096, help="Largest prompt (tokens)."),
    max_multiplier: float = typer.Option(64.0, help="Largest |multiplier| of a steering entry."),
    quiet: bool = typer.Option(False, help="Do not log requests."),
) -> None:
    """OpenAI-compatible chat-completions server for one model, with named steering vectors."""
    from steerlab.errors import ConfigError
    from steerlab.serve.app import load_vector_dir, serve
    from steerlab.serve.schema import ServeLimits

    limits = ServeLimits(
        max_tokens=max_tokens,
        max_prompt_tokens=max_prompt_tokens,
        max_multiplier=max_multiplier,
    )
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
            model_name=model_name,
            quiet=quiet,
        )
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise ConfigError(_bind_message(host, port, exc)) from None
        raise


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.command("serve")(serve_cmd)
