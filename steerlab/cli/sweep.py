"""``steerlab sweep``: layer-by-layer sweep report.

Its options beyond the sweep's own come from :class:`~steerlab.analysis.sweeps.SweepConfig`
(see :func:`steerlab.cli.run.config_options`). Heavy modules are imported inside the command.
"""

import inspect
import time
from pathlib import Path
from typing import Any

import typer

from steerlab.cli.run import _console, _with_signature, config_options


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: give layers as comma-separated ints, e.g. 6,8,10."
        ) from None


def _sweep_command(
    behavior: str = typer.Option(
        "power-seeking", help="Behavior (steerlab.data.list_behaviors())."
    ),
    layers: str = typer.Option("6,8,10,12,14,16,18,20", help="Comma-separated layers."),
    methods: str = typer.Option("caa,freeform,pca,bipo", help="Comma-separated vector methods."),
    multipliers: str = typer.Option("-2,-1,0,1,2", help="Comma-separated multipliers."),
    model: str = typer.Option("embedded", help="'embedded', an HF id or a local dir."),
    device: str | None = typer.Option(None, help="cpu / cuda."),
    out: Path = typer.Option(Path("runs/sweep"), help="Output directory (resumable)."),
    plotlyjs: str = typer.Option(
        "inline", help="'inline' (self-contained report) or 'cdn' (small)."
    ),
    **kwargs: Any,
) -> None:
    """Layer-by-layer sweep: fit each method at each layer, evaluate judge-free metrics,
    write OUT/report.html, results.csv, effects.csv and per-cell files (reruns resume)."""
    import steerlab as sl
    from steerlab.analysis.sweeps import SweepConfig, sweep
    from steerlab.data import load_pairs
    from steerlab.errors import SteerlabError
    from steerlab.reports import report

    console = _console()
    given = {k: v for k, v in kwargs.items() if v is not None}
    if "metrics" in given:
        given["metrics"] = tuple(x.strip() for x in str(given["metrics"]).split(",") if x.strip())
    try:
        cfg = SweepConfig(**given, out_dir=str(out), progress=False)
        mults = [float(x) for x in multipliers.split(",") if x.strip()]
    except (SteerlabError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    layer_list, method_list = _ints(layers), [m.strip() for m in methods.split(",") if m.strip()]
    t0 = time.perf_counter()
    with console.status("loading model and data..."):
        m = sl.load_model(model, device=device)
        data = load_pairs(behavior, seed=cfg.seed)
    n_cells = len(layer_list) * len(method_list)
    done = [0]

    def on_cell(cell: dict[str, Any]) -> None:
        done[0] += 1
        eff = cell["effects"]
        slopes = ", ".join(f"{r.metric} {r.slope:+.3g}" for r in eff.itertuples())
        tag = "[dim](on disk)[/]" if cell["skipped"] else f"[dim]({cell['seconds']:.0f} s)[/]"
        console.print(
            f"[{done[0]}/{n_cells}] {cell['method']:>8} L{cell['layer']:<3} slope: {slopes} {tag}"
        )

    result = sweep(m, data, method_list, layer_list, mults, cfg, on_cell=on_cell)
    path = report(result).save(out / "report.html", plotlyjs=plotlyjs)  # type: ignore[arg-type]
    for key in cfg.metrics:
        best = result.best(key)
        console.print(f"best layer by {key}: " + "; ".join(
            f"{r.method} L{r.layer} (slope {r.slope:.3g})" for r in best.itertuples()))  # fmt: skip
    console.print(f"[bold green]done[/] in {time.perf_counter() - t0:.0f} s; report: {path}")


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to ``app``."""
    from steerlab.analysis.sweeps import SweepConfig

    own = list(inspect.signature(_sweep_command).parameters.values())[:-1]
    extra = config_options(SweepConfig, skip=("out_dir", "progress"))
    sweep_fn = _with_signature(_sweep_command, [*own, *extra])
    app.command("sweep")(sweep_fn)


__all__ = ["register"]
