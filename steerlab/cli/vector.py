"""``steerlab vector caa|freeform|pca``: fit vectors on a behavior's train split.

Heavy modules are imported inside the commands.
"""

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import typer

from steerlab.cli import _common
from steerlab.cli._common import BATCH, BEHAVIOR, DEVICE, MODEL, PROGRESS, SEED, RunSettings

vector_app = typer.Typer(
    help="Fit steering vectors (CAA, freeform, PCA) on a behavior's train split.",
    no_args_is_help=True,
)


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
    from steerlab.vectors import SteeringVector, fit

    t0 = time.perf_counter()
    m = _common.load_model(run.model, run.device)
    data = load_pairs(run.behavior)
    train = data.train.head(n_train) if n_train else data.train
    sites = m.sites(layers)  # validates the layers before any work
    t_fit = time.perf_counter()
    vec = fit(method, m, train, [s.layer for s in sites], behavior=run.behavior,
              batch_size=run.batch_size, seed=run.seed, progress=run.progress,
              **(fit_kwargs or {}))  # fmt: skip
    fit_seconds = time.perf_counter() - t_fit
    hp = {
        **dict(vec.provenance.hyperparameters),
        "n_train": len(train),
        "split": "train",
        "train_hash": train.content_hash,
    }
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
        "hyperparameters": {k: v for k, v in hp.items() if isinstance(v, (int, float, str))},
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

    from steerlab.errors import SteerlabError

    try:
        s = fit_and_save(method, _common.parse_layers(layers), n_train, out, run, fit_kwargs)
    except SteerlabError as exc:
        raise _common.fail(exc) from exc
    table = Table(
        title=f"{method} vectors for {s['behavior']} ({s['n_train']} train pairs, "
        f"{s['fit_seconds']:.1f}s)"
    )
    for col in ("layer", "|v|", "file"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for layer, path in s["files"].items():
        table.add_row(layer, f"{s['norms'][layer]:.3f}", path)
    console = _common.console()
    console.print(table)
    console.print(f"summary: {s['summary_file']}")


_LAYERS = typer.Option("14", help="Comma-separated layers, one vector file each: 10,12,14.")
_N_TRAIN = typer.Option(None, "--n-train", min=1, help="Use the first N train pairs (default all).")
_OUT = typer.Option(Path("vectors"), help="Output directory.")


@vector_app.command("caa")
def caa_cmd(
    behavior: str = BEHAVIOR,
    layers: str = _LAYERS,
    n_train: int | None = _N_TRAIN,
    out: Path = _OUT,
    model: str = MODEL,
    device: str | None = DEVICE,
    batch_size: int = BATCH,
    seed: int = SEED,
    progress: bool = PROGRESS,
) -> None:
    """CAA: mean difference at the answer-letter token of A/B prompts."""
    run = RunSettings(behavior, model, device, batch_size, seed, progress)
    _run_fit("caa", layers, n_train, out, run)


@vector_app.command("freeform")
def freeform_cmd(
    behavior: str = BEHAVIOR,
    layers: str = _LAYERS,
    n_train: int | None = _N_TRAIN,
    out: Path = _OUT,
    model: str = MODEL,
    device: str | None = DEVICE,
    batch_size: int = BATCH,
    progress: bool = PROGRESS,
) -> None:
    """Freeform: mean difference of response-token activations (matching - not)."""
    run = RunSettings(behavior, model, device, batch_size, 0, progress)
    _run_fit("freeform", layers, n_train, out, run)


@vector_app.command("pca")
def pca_cmd(
    behavior: str = BEHAVIOR,
    layers: str = _LAYERS,
    n_train: int | None = _N_TRAIN,
    out: Path = _OUT,
    positions: str = typer.Option(
        "response_mean",
        help="'response_mean' (free-form answers, default) or 'answer_letter' (A/B prompts).",
    ),
    model: str = MODEL,
    device: str | None = DEVICE,
    batch_size: int = BATCH,
    seed: int = SEED,
    progress: bool = PROGRESS,
) -> None:
    """PCA: first principal component of the pair differences, sign towards matching."""
    if positions not in ("answer_letter", "response_mean"):
        raise typer.BadParameter(f"--positions {positions!r}: use answer_letter or response_mean.")
    run = RunSettings(behavior, model, device, batch_size, seed, progress)
    _run_fit("pca", layers, n_train, out, run, {"positions": positions})
