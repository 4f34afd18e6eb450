"""``steerlab demo``: an unsteered and a +/- steered completion (logic in steerlab.demo)."""

import time

import typer

from steerlab.cli import _common


def demo(
    model: str = typer.Option("embedded", help="Model: 'embedded', an HF id or a local dir."),
    layer: int = typer.Option(14, help="Layer whose resid_post is steered."),
    multiplier: float = typer.Option(8.0, help="Steering strength for the +/- completions."),
    max_new_tokens: int = _common.count_option(48, help="Tokens per completion."),
    device: str | None = typer.Option(None, help="cpu / cuda; default: cuda if available."),
) -> None:
    """Steered generation demo: an unsteered and a +/- steered completion."""
    import steerlab as sl
    from steerlab.demo import run_demo

    _common.check_layers(model, [layer], "--layer")
    console = _common.console()
    t0 = time.perf_counter()
    run_demo(
        console,
        model=model,
        layer=layer,
        multiplier=multiplier,
        max_new_tokens=max_new_tokens,
        device=device,
    )
    console.print(
        f"[dim]demo finished in {time.perf_counter() - t0:.1f}s (steerlab {sl.__version__})"
    )


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command("demo")(demo)
