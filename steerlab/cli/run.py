"""``steerlab run``: the main job.

``register(app)`` adds the command to the typer app. The options of ``run`` are
generated from :class:`~steerlab.run.RunConfig` (one ``--flag`` per field, its help
text from the field), so a new setting appears on the command line by itself. Heavy
modules are imported inside the commands.
"""

import inspect
import time
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import typer


def _option_type(tp: Any) -> Any:
    """The CLI type of a config field: tuples become comma-separated strings."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args and typing.get_origin(tp) is not tuple and len(args) == 1:
        tp = args[0]  # X | None -> X
    if typing.get_origin(tp) is tuple or tp is tuple:
        return str | None
    for base in (bool, int, float):
        if tp is base:
            return base | None
    return str | None


def _flag(name: str, tp: Any) -> list[str]:
    dash = "--" + name.replace("_", "-")
    return [f"{dash}/--no-{dash[2:]}"] if _option_type(tp) == bool | None else [dash]


def config_options(cls: Any, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per dataclass field, ``None`` default (= not given)."""
    params = []
    for f in fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not MISSING else None
        shown = (
            ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in default)
            if isinstance(default, tuple)
            else default
        )
        help_text = f.metadata.get("help") or _doc_of(cls, f.name)
        opt = typer.Option(None, *_flag(f.name, f.type), help=help_text,
                           show_default=str(shown) if shown is not None else False)  # fmt: skip
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=_option_type(f.type)
            )
        )
    return params


def _doc_of(cls: Any, name: str) -> str:
    """The ``name: text`` line of a dataclass docstring (how SweepConfig documents fields)."""
    for line in (cls.__doc__ or "").splitlines():
        line = line.strip()
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    return ""


def _with_signature(func: Any, params: list[inspect.Parameter]) -> Any:
    """A new function calling ``func(**kwargs)`` whose signature typer reads as ``params``."""

    def command(**kwargs: Any) -> None:
        func(**kwargs)

    command.__name__, command.__doc__ = func.__name__, func.__doc__
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _run_command(**kwargs: Any) -> None:
    """Fit CAA, freeform, PCA and BiPO at one layer, evaluate across multipliers (likelihood
    margin, A/B probability, open-ended answers scored by an offline classifier judge) and
    write a report directory (report.html, results.csv/json, vectors, logs, config.json)."""
    from steerlab.errors import SteerlabError
    from steerlab.run import RunConfig, run_pipeline

    console = _console()
    config_path = kwargs.pop("config", None)
    try:
        cfg = RunConfig.build(config_path, kwargs)
    except SteerlabError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"[bold]steerlab run[/] {cfg.behavior} @ layer {cfg.layer} -> {cfg.out_dir}"
                  + (" [yellow](quick)[/]" if cfg.quick else ""))  # fmt: skip
    t0 = time.perf_counter()
    result = run_pipeline(cfg, console=console)
    _print_effects(console, result.effects())
    console.print(f"[bold green]done[/] in {time.perf_counter() - t0:.1f} s; report: "
                  f"{result.out_dir / 'report.html'}")  # fmt: skip


def _print_effects(console: Any, effects: Any) -> None:
    from rich.table import Table

    if effects.empty:
        return
    table = Table(title="steering effect (slope over multipliers)")
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
    run_fn = _with_signature(_run_command, [config_param, *config_options(RunConfig)])
    app.command("run")(run_fn)


__all__ = ["config_options", "register"]
