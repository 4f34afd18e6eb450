"""``steerlab calibrate``: which layer and how strong, per method, under a damage cap.

Its options beyond the command's own come from
:class:`~steerlab.analysis.calibrate.CalibrateConfig` (see
:func:`steerlab.cli._config.config_options`). Heavy modules are imported inside the command.
"""

import inspect
import time
import typing
from pathlib import Path
from typing import Any, Literal

import typer

from steerlab.cli import _common
from steerlab.cli._config import config_options, with_signature

_OWN = ("methods", "layers", "strengths", "kl_cap")


def _parse_tuple(name: str, text: str, cast: Any) -> tuple[Any, ...]:
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    try:
        return tuple(cast(p) for p in parts)
    except ValueError:
        flag = "--" + name.replace("_", "-")
        raise typer.BadParameter(
            f"{text!r} is not a comma-separated list of numbers; write e.g. {flag} 0.05,0.2."
        ) from None


def _calibrate_command(
    behavior: str = typer.Option(
        "power-seeking", help="Behavior (steerlab.data.list_behaviors())."
    ),
    methods: str = typer.Option(
        "caa,freeform,pca,bipo",
        help="Comma-separated vector methods; add 'prompt' for the prompting "
        "baseline, 'reps' for RePS.",
    ),
    layers: str | None = typer.Option(
        None, help="Comma-separated candidate layers (default: 8 layers mid-model)."
    ),
    strengths: str | None = typer.Option(
        None, help="Comma-separated strengths |k v| / mean ||h|| (default 0,0.025,...,0.4)."
    ),
    kl_cap: float | None = typer.Option(None, help="Damage cap, nats/token (default 0.2)."),
    quick: bool = typer.Option(False, "--quick", help="About 2 minutes: small settings."),
    model: str = typer.Option("embedded", help="'embedded', an HF id or a local dir."),
    device: str | None = typer.Option(None, help="cpu / cuda."),
    out: Path = typer.Option(Path("runs/calibrate"), help="Output directory."),
    plotlyjs: Literal["inline", "cdn"] = typer.Option(
        "inline", help="'inline' (self-contained report) or 'cdn' (small)."
    ),
    executor: Literal["serial", "ray"] = _common.EXECUTOR,
    ray_address: str | None = _common.RAY_ADDRESS,
    ray_workers: int = _common.RAY_WORKERS,
    **kwargs: Any,
) -> None:
    """Choose (layer, strength) per method on validation pairs under a KL cap, report on
    the test pairs with CIs; write OUT/report.html, CSV tables, summary.json and
    OUT/vectors/ (each vector carries its recommended strength)."""
    from steerlab.analysis.calibrate import CalibrateConfig, calibrate
    from steerlab.analysis.executors import make_executor
    from steerlab.reports.calibrate import calibration_report
    from steerlab.vectors.fitting import METHODS

    console = _common.console(stderr=True)
    given: dict[str, Any] = {}
    types = typing.get_type_hints(CalibrateConfig)
    for key, value in kwargs.items():
        if value is None:
            continue
        if typing.get_origin(types[key]) is tuple or tuple in typing.get_args(types[key]):
            inner = typing.get_args(types[key])
            cast = (
                float if float in inner or any(float in typing.get_args(a) for a in inner) else int
            )
            value = _parse_tuple(key, value, cast)
        given[key] = value
    method_list = _common.parse_names(methods)
    if not method_list:
        raise typer.BadParameter(f"No methods in {methods!r}; write e.g. --methods caa,pca.")
    for name in method_list:
        METHODS.get(name)
    over: dict[str, Any] = {"methods": tuple(method_list), **given}
    if layers is not None:
        over["layers"] = tuple(_common.check_layers(model, _common.parse_layers(layers)))
    if strengths is not None:
        over["strengths"] = tuple(_common.parse_multipliers(strengths, flag="--strengths"))
    if kl_cap is not None:
        over["kl_cap"] = kl_cap
    cfg = CalibrateConfig.quick(**over) if quick else CalibrateConfig(**over)
    ex = make_executor(executor, address=ray_address, num_workers=ray_workers)
    _common.check_out_dir(out)
    t0 = time.perf_counter()
    with console.status("loading model and data..."):
        m = _common.load_model(model, device)

    def on_stage(text: str, seconds: float) -> None:
        console.print(f"[dim]{seconds:6.0f} s[/] {text}")

    with ex:  # Ray (when asked for) starts here; its workers load the model once each
        result = calibrate(m, _common.check_behavior(behavior), config=cfg, on_stage=on_stage,
                           executor=ex)  # fmt: skip
    result.save(out)
    path = calibration_report(result).save(out / "report.html", plotlyjs=plotlyjs)
    for line in result.findings():
        console.print(f"- {line}")
    console.print(f"[bold green]done[/] in {time.perf_counter() - t0:.0f} s; report: {path}")


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to ``app``."""
    from steerlab.analysis.calibrate import CalibrateConfig

    own = list(inspect.signature(_calibrate_command).parameters.values())[:-1]
    extra = config_options(CalibrateConfig, skip=_OWN)
    app.command("calibrate")(with_signature(_calibrate_command, [*own, *extra]))


__all__ = ["register"]
