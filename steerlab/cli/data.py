"""``steerlab data fetch|verify``."""

from pathlib import Path

import typer

data_app = typer.Typer(help="Datasets: download and verify.", no_args_is_help=True)


@data_app.command("fetch")
def data_fetch(
    names: list[str] | None = typer.Argument(
        None,
        help="Groups (bipo, caa, anthropic-evals, truthfulqa, advbench) or paths; default all.",
    ),
    dest: Path | None = typer.Option(None, help="Destination (default: the download cache)."),
) -> None:
    """Download dataset files from their upstream URLs and check their sha256."""
    from steerlab.data import fetch

    report = fetch(names or None, dest)
    typer.echo(str(report))


@data_app.command("verify")
def data_verify(
    root: Path | None = typer.Option(None, help="Data root (default: resolved)."),
) -> None:
    """Check the sha256 of every data file present under the data root."""
    from steerlab.data import verify

    typer.echo(str(verify(root)))
