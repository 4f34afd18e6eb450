"""The ``steerlab`` command line. Heavy modules are imported inside commands."""

import time

import typer

app = typer.Typer(
    help="steerlab: steering vectors (CAA, freeform, PCA, BiPO) on TransformerLens hooks.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _mount() -> None:
    """Attach the sub-command modules (each imports its heavy dependencies lazily)."""
    from steerlab.cli_eval import register as register_eval
    from steerlab.cli_run import register as register_run
    from steerlab.cli_train import data_app, train_app
    from steerlab.cli_vectors import eval_app, vector_app

    app.add_typer(train_app, name="train")
    app.add_typer(vector_app, name="vector")
    app.add_typer(eval_app, name="eval")
    app.add_typer(data_app, name="data")
    register_eval(eval_app, app)
    register_run(app)


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console()


@app.command()
def demo(
    model: str = typer.Option("embedded", help="Model: 'embedded', an HF id or a local dir."),
    layer: int = typer.Option(14, help="Layer whose resid_post is steered."),
    multiplier: float = typer.Option(8.0, help="Steering strength for the +/- completions."),
    max_new_tokens: int = typer.Option(48, help="Tokens per completion."),
    device: str | None = typer.Option(None, help="cpu / cuda; default: cuda if available."),
) -> None:
    """Steered generation demo: an unsteered and a +/- steered completion."""
    import steerlab as sl
    from steerlab.demo import run_demo

    console = _console()
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


@app.command()
def version() -> None:
    """Print the steerlab version."""
    import steerlab

    typer.echo(steerlab.__version__)


_mount()

if __name__ == "__main__":  # pragma: no cover
    app()
