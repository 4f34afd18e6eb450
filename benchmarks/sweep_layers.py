"""Layer sweep of the embedded model: ``steerlab sweep`` as a script (until the CLI wires it).

    .venv/bin/python benchmarks/sweep_layers.py --behavior power-seeking \
        --layers 4,8,12,14,18,22,26 --methods caa,freeform,pca,bipo \
        --n-train 48 --n-test 16 --bipo-epochs 2 --out runs/sweep-power-seeking

Writes OUT/report.html, results.csv, effects.csv, sweep.json and one folder per
(method, layer) cell; rerunning with the same settings resumes where it stopped.
"""

import sys

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import typer

from steerlab.cli import run, sweep

app = typer.Typer(add_completion=False)


@app.callback()
def main() -> None:
    """steerlab sweep / run."""


run.register(app)
sweep.register(app)

if __name__ == "__main__":
    app(["sweep", *sys.argv[1:]] if sys.argv[1:2] != ["run"] else sys.argv[1:])
