"""``steerlab run``: the main job.

``register(app)`` adds the command to the typer app. Its options are generated from
:class:`~steerlab.run.RunConfig` (see :mod:`steerlab.cli._config`). Heavy modules are
imported inside the command.
"""

import inspect
import time
from pathlib import Path
from typing import Any

import typer

from steerlab.cli import _common
from steerlab.cli._config import config_options, with_signature


def _run_command(**kwargs: Any) -> None:
    """Fit CAA, freeform, PCA and BiPO at one layer, compare them at matched damage and
    strength, evaluate across multipliers (likelihood margin, A/B probability), generate
    open-ended answers at the matched strengths scored by an offline classifier judge, and
    write a report directory (report.html, results.csv/json, vectors, logs, config.json)."""
    from steerlab.run import RunConfig, run_pipeline

    console = _common.console(stderr=True)
    config_path = kwargs.pop("config", None)
    cfg = RunConfig.build(config_path, kwargs)
    _common.check_behavior(cfg.behavior)
    _common.check_layers(cfg.model, [cfg.layer], "--layer")
    _common.check_out_dir(cfg.out_dir)
    console.print(f"[bold]steerlab run[/] {cfg.behavior} @ layer {cfg.layer} -> {cfg.out_dir}"
                  + (" [yellow](quick)[/]" if cfg.quick else ""))  # fmt: skip
    t0 = time.perf_counter()
    result = run_pipeline(cfg, console=console)
    if result.matched is not None:  # matched damage first: raw multipliers compare lengths
        from steerlab.analysis.matched_findings import matched_findings

        console.print("[bold]matched comparison[/]")
        for line in matched_findings(result.matched):
            console.print(line, highlight=False, markup=False)
    if result.judged is not None:  # the open-ended answers, at the same strengths
        from steerlab.cli import _tables

        n_q = result.generations["question"].nunique()
        note = "KL: nats/token on neutral text at that strength (the matched comparison)."
        _tables.print_changes(result.judged, f"judge_score on {n_q} {cfg.behavior} questions "
                              "(n: scored) at matched strengths, one seed", show_n=True,
                              kl_note=note)  # fmt: skip
    _print_effects(console, result.effects())
    console.print(f"[bold green]done[/] in {time.perf_counter() - t0:.1f} s; report: "
                  f"{result.out_dir / 'report.html'}")  # fmt: skip


def _print_effects(console: Any, effects: Any) -> None:
    from rich.table import Table

    if effects.empty:
        return
    table = Table(title="raw multipliers (vector lengths differ: not a ranking)")
    for col in ("evaluation", "method", "at_min", "at_zero", "at_max", "slope"):
        table.add_column(col, justify="left" if col in ("evaluation", "method") else "right")
    for r in effects.itertuples():
        table.add_row(r.evaluation, r.method, f"{r.at_min:.3g}", f"{r.at_zero:.3g}",
                      f"{r.at_max:.3g}", f"{r.slope:.3g}")  # fmt: skip
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``run`` to ``app``."""
    from steerlab.run.config import RunConfig

    config_param = inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(None, "--config", help="TOML or JSON file of settings (flags win)."),
        annotation=Path | None,
    )
    run_fn = with_signature(_run_command, [config_param, *config_options(RunConfig)])
    app.command("run")(run_fn)


__all__ = ["config_options", "register"]
