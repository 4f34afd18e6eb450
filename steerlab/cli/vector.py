"""``steerlab vector fit METHOD``: fit vectors on a behavior's train split.

One command per method of the registry :data:`steerlab.vectors.fitting.METHODS` that is
fitted from collected activations (``caa``, ``freeform``, ``pca``...); its options are the
shared ones plus the method's own keyword arguments (read from its fitter's signature).
Methods fitted by a training loop have their own ``steerlab train METHOD`` command.
``steerlab vector caa`` etc. remain as aliases of ``steerlab vector fit caa``.
Heavy modules are imported inside the commands.
"""

import inspect
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

import typer
from rich.markup import escape

from steerlab.cli import _common
from steerlab.cli._common import BATCH, BEHAVIOR, DEVICE, MODEL, PROGRESS, SEED, RunSettings
from steerlab.cli.export import export_cmd

vector_app = _common.new_app("Fit steering vectors on a behavior's train split.")
fit_app = _common.new_app(
    "Fit a vector with a registered method (steerlab.vectors.fitting.METHODS); "
    "training methods such as BiPO: steerlab train METHOD."
)
vector_app.add_typer(fit_app, name="fit")
vector_app.command("export")(export_cmd)


def fit_and_save(
    method: str,
    layers: list[int],
    n_train: int | None,
    out: Path,
    run: RunSettings,
    fit_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit ``method`` on the first ``n_train`` pairs (default all) of the behavior's train
    split; save ``{method}_{behavior}_L{layer}.safetensors`` per layer and
    ``{method}_{behavior}_summary.json`` under ``out``. Returns the summary."""
    from steerlab.data import load_pairs
    from steerlab.data.fingerprints import FINGERPRINTS_KEY
    from steerlab.data.pairs import training_record
    from steerlab.vectors import SteeringVector, fit

    t0 = time.perf_counter()
    _common.check_out_dir(out)
    _common.check_behavior(run.behavior)
    _common.check_layers(run.model, layers)
    data = load_pairs(run.behavior)
    train = data.split(n_train=n_train).train
    m = _common.load_model(run.model, run.device)
    sites = m.sites(layers)
    t_fit = time.perf_counter()
    vec = fit(method, m, train, [s.layer for s in sites], behavior=run.behavior,
              batch_size=run.batch_size, seed=run.seed, progress=run.progress,
              **(fit_kwargs or {}))  # fmt: skip
    fit_seconds = time.perf_counter() - t_fit
    hp = {**dict(vec.provenance.hyperparameters), **training_record(train)}
    prov = replace(vec.provenance, model_id=m.model_id, hyperparameters=hp)
    vec = SteeringVector(vec.directions, prov)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for site in vec.sites:
        path = out / f"{method}_{run.behavior}_L{site.layer}.safetensors"
        vec.at_site(site).save(path)
        files[str(site.layer)] = str(path)
    summary = {
        "method": method,
        "behavior": run.behavior,
        "model_id": m.model_id,
        "n_train": len(train),
        "layers": [s.layer for s in vec.sites],
        "files": files,
        "norms": {str(s.layer): n for s, n in vec.norms().items()},
        "strength_at_x1": _common.strength_at_x1(m, vec),
        "hyperparameters": {
            k: v
            for k, v in hp.items()
            if isinstance(v, (int, float, str)) and k != FINGERPRINTS_KEY
        },  # fmt: skip
        "settings": asdict(run),
        "fit_seconds": round(fit_seconds, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
        "created_at": prov.created_at,
        "steerlab_version": prov.steerlab_version,
    }
    summary_path = out / f"{method}_{run.behavior}_summary.json"
    summary_path.write_text(json.dumps(summary, indent=2))
    summary["summary_file"] = str(summary_path)
    return summary


def _run_fit(method: str, layers: str, n_train: int | None, out: Path, run: RunSettings,
             fit_kwargs: dict[str, Any] | None = None) -> None:  # fmt: skip
    from rich.table import Table

    s = fit_and_save(method, _common.parse_layers(layers), n_train, out, run, fit_kwargs)
    table = Table(
        title=f"{method} vectors for {s['behavior']} ({s['n_train']} train pairs, "
        f"{s['fit_seconds']:.1f}s)"
    )
    strengths = s["strength_at_x1"] or {}
    cols = ("layer", "|v|", *(["strength of x1"] if strengths else []), "file")
    for col in cols:
        table.add_column(col, justify="left" if col == "file" else "right")
    for layer, path in s["files"].items():
        at_x1 = [f"{strengths[layer]:.3g}"] if strengths else []
        table.add_row(layer, f"{s['norms'][layer]:.3f}", *at_x1, path)
    if strengths:
        table.caption = (
            "strength of x1: |v| / mean ||h|| at the layer (0.1 = a tenth of the typical "
            "residual norm); compare vectors at equal strengths (steer(..., strength=), "
            "steerlab eval --strengths), not equal multipliers."
        )
    console = _common.console()
    console.print(table)
    console.print(f"summary: {s['summary_file']}")


_LAYERS = typer.Option("14", help="Comma-separated layers, one vector file each: 10,12,14.")
_N_TRAIN = _common.count_option(
    None, "--n-train", help="Use the first N train pairs (default all)."
)
_OUT = typer.Option(Path("vectors"), help="Output directory.")

#: Options every fit command has; ``seed`` only where the fitter takes one.
_SHARED = {
    "behavior": (str, BEHAVIOR),
    "layers": (str, _LAYERS),
    "n_train": (int | None, _N_TRAIN),
    "out": (Path, _OUT),
    "model": (str, MODEL),
    "device": (str | None, DEVICE),
    "batch_size": (int, BATCH),
    "seed": (int, SEED),
    "progress": (bool, PROGRESS),
}
_SETTINGS = ("behavior", "model", "device", "batch_size", "seed", "progress")


def _own_options(fitter: Any) -> list[inspect.Parameter]:
    """The fitter's own keyword arguments of simple type, as typer options."""
    params = []
    for p in inspect.signature(fitter).parameters.values():
        simple = p.annotation in (str, int, float, bool)
        if p.kind is not p.KEYWORD_ONLY or p.name in _SHARED or not simple:
            continue
        annotation: Any = p.annotation
        if p.name == "positions":  # the activation positions a fitter can read
            from steerlab.activations import POSITIONS

            annotation = Literal[POSITIONS]  # type: ignore[valid-type]
        flag = "--" + p.name.replace("_", "-")
        opt = typer.Option(p.default, flag, help=f"{p.name} of the fitter.")
        params.append(inspect.Parameter(p.name, p.KEYWORD_ONLY, default=opt,
                                        annotation=annotation))  # fmt: skip
    return params


def fit_command(method: str, fitter: Any) -> Any:
    """A typer command fitting ``method``; its signature is built from ``fitter``'s."""
    takes = inspect.signature(fitter).parameters
    shared = [n for n in _SHARED if n != "seed" or "seed" in takes]
    own = _own_options(fitter)

    def command(**kw: Any) -> None:
        run = RunSettings(**{k: kw.pop(k) for k in _SETTINGS if k in kw})
        fit_kwargs = {p.name: kw.pop(p.name) for p in own}
        _run_fit(method, kw["layers"], kw["n_train"], kw["out"], run, fit_kwargs or None)

    params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=_SHARED[n][1],
                                annotation=_SHARED[n][0]) for n in shared]  # fmt: skip
    command.__name__ = f"{method}_cmd"
    doc = (inspect.getdoc(fitter) or f"Fit a {method} vector.").split("\n\n")[0]
    command.__doc__ = escape(_common.one_line(doc))  # rich markup: keep [brackets]
    command.__signature__ = inspect.Signature([*params, *own])  # type: ignore[attr-defined]
    return command


def _mount() -> None:
    """One ``fit METHOD`` command (and a ``METHOD`` alias) per activation-fitted method."""
    from steerlab.cli.train import train_app
    from steerlab.vectors.fitting import METHODS

    trained = {c.name for c in train_app.registered_commands}
    for name in METHODS.names():
        entry = METHODS.get(name)
        if getattr(entry, "trains", False) or name in trained:
            continue
        cmd = fit_command(name, getattr(entry, "fit", entry))
        fit_app.command(name)(cmd)
        vector_app.command(name, hidden=True)(cmd)


_mount()
