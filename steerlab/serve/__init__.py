"""``steerlab serve``: an OpenAI-compatible chat-completions server for one steerlab model.

Run it with ``steerlab serve --model embedded --vectors DIR --port 8000`` (the one
entry point; ``python -m steerlab.serve.app ...`` runs the same command). From Python,
:func:`make_server` gives a bound server (``.start()`` serves from a thread; use it as a
context manager) and :func:`serve` blocks. Requests share one batched forward per
decoding step, each row with its own steering (:mod:`steerlab.steering.batched`). The
server module (torch, uvicorn) is imported on first use of these names, so importing
this package is cheap.
"""

from typing import Any

from steerlab.serve.config import ServeConfig
from steerlab.serve.schema import (
    ChatRequest,
    RequestError,
    ServeLimits,
    SteeringEntry,
    parse_chat_request,
)

_APP_NAMES = (
    "SteerlabServer",
    "load_vector_dir",
    "main",
    "make_server",
    "render_messages",
    "serve",
)

__all__ = [
    "ChatRequest",
    "RequestError",
    "ServeConfig",
    "ServeLimits",
    "SteerlabServer",
    "SteeringEntry",
    "load_vector_dir",
    "main",
    "make_server",
    "parse_chat_request",
    "render_messages",
    "serve",
]


def __getattr__(name: str) -> Any:
    if name in _APP_NAMES:
        from steerlab.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'steerlab.serve' has no attribute {name!r}")
