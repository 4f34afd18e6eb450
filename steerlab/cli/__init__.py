"""The ``steerlab`` command line: one module per command group.

``run`` (the main job), ``sweep``, ``calibrate``, ``train``, ``vector``, ``eval`` (+ ``benchmarks``),
``judge``, ``data``, ``serve`` and ``demo``; :mod:`steerlab.cli._common` holds what they share
(the one error handler, console, layer / multiplier parsing, checks that run before any
expensive work, model loading). Every user mistake ends as one line ``error: ...``
naming the value and the fix, exit code 1. Heavy modules are imported inside commands.
"""

import typer

from steerlab.cli._common import new_app

app = new_app(
    "steerlab: steering vectors (CAA, freeform, PCA, BiPO) on TransformerLens hooks.",
    pretty_exceptions_show_locals=False,
)


def _mount() -> None:
    """Attach the command groups (each imports its heavy dependencies lazily)."""
    from steerlab.cli import calibrate, data, demo, judge, run, serve, sweep, train, vector
    from steerlab.cli import eval as eval_cmds

    app.add_typer(train.train_app, name="train")
    app.add_typer(vector.vector_app, name="vector")
    app.add_typer(eval_cmds.eval_app, name="eval")
    app.add_typer(data.data_app, name="data")
    app.add_typer(judge.judge_app, name="judge")
    run.register(app)
    sweep.register(app)
    calibrate.register(app)
    serve.register(app)
    demo.register(app)


@app.command()
def version() -> None:
    """Print the steerlab version."""
    import steerlab

    typer.echo(steerlab.__version__)


_mount()

__all__ = ["app"]

if __name__ == "__main__":  # pragma: no cover
    app()
