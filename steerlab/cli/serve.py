"""``steerlab serve``: the OpenAI-compatible server (logic in :mod:`steerlab.serve.app`)."""

from pathlib import Path

import typer


def serve_cmd(
    model: str = typer.Option("embedded", help="'embedded', an HF id or a local dir."),
    vectors: Path | None = typer.Option(
        None, help="Directory of .safetensors vectors (names = file stems)."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default; no auth)."),
    port: int = typer.Option(8000, help="TCP port."),
    device: str | None = typer.Option(None, help="cpu / cuda."),
    dtype: str = typer.Option("float32", help="float32 / bfloat16 / float16."),
    model_name: str | None = typer.Option(None, help="Model id reported to clients."),
    max_tokens: int = typer.Option(512, help="Largest max_tokens a request may ask for."),
    max_prompt_tokens: int = typer.Option(4096, help="Largest prompt (tokens)."),
    max_multiplier: float = typer.Option(64.0, help="Largest |multiplier| of a steering entry."),
    quiet: bool = typer.Option(False, help="Do not log requests."),
) -> None:
    """OpenAI-compatible chat-completions server for one model, with named steering vectors."""
    from steerlab.serve.app import serve
    from steerlab.serve.schema import ServeLimits

    limits = ServeLimits(
        max_tokens=max_tokens,
        max_prompt_tokens=max_prompt_tokens,
        max_multiplier=max_multiplier,
    )
    serve(
        model,
        vectors,
        host,
        port,
        device=device,
        dtype=dtype,
        limits=limits,
        model_name=model_name,
        quiet=quiet,
    )


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.command("serve")(serve_cmd)
