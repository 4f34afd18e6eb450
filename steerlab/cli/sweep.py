"""``steerlab sweep``: layer-by-layer sweep report.

Its options beyond the sweep's own come from :class:`~steerlab.analysis.sweep_plan.SweepConfig`
(see :func:`steerlab.cli.run.config_options`). Heavy modules are imported inside the command.
"""

import inspect
import time
from pathlib import Path
from typing import Any, Literal

import typer

from steerlab.cli import _common
from steerlab.cli._config import config_options, with_signature


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
    plotlyjs: Literal["inline", "cdn"] = typer.Option(
        "inline",
        help="'inline' (self-contained report) or 'cdn' (small).",
    ),
    executor: Literal["serial", "ray"] = _common.EXECUTOR,
    ray_address: str | None = _common.RAY_ADDRESS,
    ray_workers: int = _common.RAY_WORKERS,
    strengths: str = typer.Option(
        "0,0.05,0.1,0.2,0.4",
        help="Strengths |k v| / mean ||h|| of the matched comparison the report leads with.",
    ),
    n_neutral: int = typer.Option(
        16, help="Neutral texts for the matched comparison's KL (0: skip it)."
    ),
    **kwargs: Any,
) -> None:
    """Layer-by-layer sweep: fit each method at each layer, evaluate judge-free metrics,
    write OUT/report.html, results.csv, effects.csv and per-cell files (reruns resume)."""
    from steerlab.analysis import SweepConfig, sweep
    from steerlab.analysis.executors import make_executor
    from steerlab.analysis.matched_findings import sweep_matched, write_matched
    from steerlab.data import load_pairs
    from steerlab.reports import report
    from steerlab.vectors.fitting import METHODS

    console = _common.console(stderr=True)
    given = {k: v for k, v in kwargs.items() if v is not None}
    if "metrics" in given:
        given["metrics"] = tuple(_common.parse_names(str(given["metrics"])))
    cfg = SweepConfig(**given, out_dir=str(out), progress=False)
    mults = _common.parse_multipliers(multipliers)
    strength_list = _common.parse_multipliers(strengths, flag="--strengths")
    if n_neutral < 0:
        raise typer.BadParameter(f"--n-neutral {n_neutral}: use 0 (skip) or a positive count.")
    ex = make_executor(executor, address=ray_address, num_workers=ray_workers)
    method_list = _common.parse_names(methods)
    if not method_list:
        raise typer.BadParameter(f"No methods in {methods!r}; write e.g. --methods caa,pca.")
    for name in method_list:
        METHODS.get(name)
    layer_list = _common.check_layers(model, _common.parse_layers(layers))
    _common.check_out_dir(out)
    t0 = time.perf_counter()
    with console.status("loading model and data..."):
        data = load_pairs(_common.check_behavior(behavior), seed=cfg.seed)
        m = _common.load_model(model, device)
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

    with ex:  # Ray (when asked for) starts here, its workers load the model once each
        result = sweep(m, data, method_list, layer_list, mults, cfg, on_cell=on_cell, executor=ex)
    if n_neutral > 0:
        with console.status("matched comparison (strengths, KL on neutral text)..."):
            result = sweep_matched(m, data, result, strength_list, n_neutral)
            write_matched(out, result.matched)
        console.print(result.info["matched_leader"], highlight=False, markup=False)
    path = report(result).save(out / "report.html", plotlyjs=plotlyjs)  # type: ignore[arg-type]
    for key in cfg.metrics:
        best = result.best(key)
        console.print(f"largest raw-multiplier slope by {key} (not a ranking): " + "; ".join(
            f"{r.method} L{r.layer} (slope {r.slope:.3g})" for r in best.itertuples()))  # fmt: skip
    console.print(f"[bold green]done[/] in {time.perf_counter() - t0:.0f} s; report: {path}")


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to ``app``."""
    from steerlab.analysis import SweepConfig

    own = list(inspect.signature(_sweep_command).parameters.values())[:-1]
    extra = config_options(SweepConfig, skip=("out_dir", "progress"))
    sweep_fn = with_signature(_sweep_command, [*own, *extra])
    app.command("sweep")(sweep_fn)


__all__ = ["register"]
