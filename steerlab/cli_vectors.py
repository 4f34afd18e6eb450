"""``steerlab vector caa|freeform|pca`` and ``steerlab eval ab|likelihood`` sub-commands.

The lead mounts them with ``app.add_typer(vector_app, name="vector")`` and
``app.add_typer(eval_app, name="eval")``. Heavy modules are imported inside commands.
"""

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import typer

vector_app = typer.Typer(
    help="Fit steering vectors (CAA, freeform, PCA) on a behavior's train split.",
    no_args_is_help=True,
)
eval_app = typer.Typer(
    help="Judge-free evaluation of steering vectors across multipliers.",
    no_args_is_help=True,
)


# --- parsing and shared helpers -----------------------------------------------------------


def parse_layers(text: str) -> list[int]:
    """``'10,12,14'`` -> ``[10, 12, 14]`` (duplicates dropped, order kept)."""
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            layer = int(part)
        except ValueError:
            raise typer.BadParameter(
                f"{part!r} in {text!r} is not a layer number; write e.g. --layers 10,12,14."
            ) from None
        if layer not in out:
            out.append(layer)
    if not out:
        raise typer.BadParameter(f"No layers in {text!r}; write e.g. --layers 10,12,14.")
    return out


def parse_multipliers(text: str) -> list[float]:
    """``'-2,-1,0,1,2'`` -> ``[-2.0, -1.0, 0.0, 1.0, 2.0]``."""
    out: list[float] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise typer.BadParameter(
                f"{part!r} in {text!r} is not a number; write e.g. --multipliers=-2,-1,0,1,2."
            ) from None
    if not out:
        raise typer.BadParameter(f"No multipliers in {text!r}; write e.g. --multipliers=-1,0,1.")
    return out


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console()


def _load_model(name: str, device: str | None):  # type: ignore[no-untyped-def]
    """The model the commands use (one place, so tests can substitute a loaded one)."""
    import steerlab as sl

    return sl.load_model(name, device=device)


def _fail(exc: Exception) -> "typer.Exit":
    """Print a steerlab error (its message names the value and the fix) and exit 1."""
    _console().print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=1)


# --- settings shared by every command -----------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """What every command shares (recorded in the summaries).

    behavior: a registered behavior (``steerlab.data.list_behaviors()``).
    model / device: what :func:`steerlab.load_model` loads, and where.
    batch_size: sequences per forward pass.
    seed: seed of the A/B letter order built from free-form pairs.
    progress: show progress bars.
    """

    behavior: str = "power-seeking"
    model: str = "embedded"
    device: str | None = None
    batch_size: int = 16
    seed: int = 0
    progress: bool = True


_BEHAVIOR = typer.Option(
    "power-seeking", "--behavior", "-b",
    help="Behavior (steerlab.data.list_behaviors(): power-seeking, wealth-seeking...).",
)  # fmt: skip
_MODEL = typer.Option("embedded", help="'embedded', a Hugging Face id or a local dir.")
_DEVICE = typer.Option(None, help="cpu / cuda; default: cuda if available.")
_BATCH = typer.Option(16, min=1, help="Sequences per forward pass.")
_SEED = typer.Option(0, help="Seed of the A/B letter order built from free-form pairs.")
_PROGRESS = typer.Option(True, help="Show progress bars.")


# --- steerlab vector ... ------------------------------------------------------------------


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
    m = _load_model(run.model, run.device)
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
        s = fit_and_save(method, parse_layers(layers), n_train, out, run, fit_kwargs)
    except SteerlabError as exc:
        raise _fail(exc) from exc
    table = Table(
        title=f"{method} vectors for {s['behavior']} ({s['n_train']} train pairs, "
        f"{s['fit_seconds']:.1f}s)"
    )
    for col in ("layer", "|v|", "file"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for layer, path in s["files"].items():
        table.add_row(layer, f"{s['norms'][layer]:.3f}", path)
    console = _console()
    console.print(table)
    console.print(f"summary: {s['summary_file']}")


_LAYERS = typer.Option("14", help="Comma-separated layers, one vector file each: 10,12,14.")
_N_TRAIN = typer.Option(None, "--n-train", min=1, help="Use the first N train pairs (default all).")
_OUT = typer.Option(Path("vectors"), help="Output directory.")


@vector_app.command("caa")
def caa_cmd(
    behavior: str = _BEHAVIOR,
    layers: str = _LAYERS,
    n_train: int | None = _N_TRAIN,
    out: Path = _OUT,
    model: str = _MODEL,
    device: str | None = _DEVICE,
    batch_size: int = _BATCH,
    seed: int = _SEED,
    progress: bool = _PROGRESS,
) -> None:
    """CAA: mean difference at the answer-letter token of A/B prompts."""
    run = RunSettings(behavior, model, device, batch_size, seed, progress)
    _run_fit("caa", layers, n_train, out, run)


@vector_app.command("freeform")
def freeform_cmd(
    behavior: str = _BEHAVIOR,
    layers: str = _LAYERS,
    n_train: int | None = _N_TRAIN,
    out: Path = _OUT,
    model: str = _MODEL,
    device: str | None = _DEVICE,
    batch_size: int = _BATCH,
    progress: bool = _PROGRESS,
) -> None:
    """Freeform: mean difference of response-token activations (matching - not)."""
    run = RunSettings(behavior, model, device, batch_size, 0, progress)
    _run_fit("freeform", layers, n_train, out, run)


@vector_app.command("pca")
def pca_cmd(
    behavior: str = _BEHAVIOR,
    layers: str = _LAYERS,
    n_train: int | None = _N_TRAIN,
    out: Path = _OUT,
    positions: str = typer.Option(
        "response_mean",
        help="'response_mean' (free-form answers, default) or 'answer_letter' (A/B prompts).",
    ),
    model: str = _MODEL,
    device: str | None = _DEVICE,
    batch_size: int = _BATCH,
    seed: int = _SEED,
    progress: bool = _PROGRESS,
) -> None:
    """PCA: first principal component of the pair differences, sign towards matching."""
    if positions not in ("answer_letter", "response_mean"):
        raise typer.BadParameter(f"--positions {positions!r}: use answer_letter or response_mean.")
    run = RunSettings(behavior, model, device, batch_size, seed, progress)
    _run_fit("pca", layers, n_train, out, run, {"positions": positions})


# --- steerlab eval ... --------------------------------------------------------------------


def evaluate(
    kind: str,
    vectors: list[Path] | None,
    multipliers: list[float],
    n_test: int | None,
    run: RunSettings,
) -> tuple[Any, Any]:
    """Load the vectors, the model and the first ``n_test`` items of the behavior's test
    split; return the (summary, per-item) frames of ``ab_probability`` (``kind='ab'``,
    on ``test_ab``) or ``likelihood_margin`` (``kind='likelihood'``, on ``test``)."""
    from steerlab.data import load_pairs, pairs_to_ab
    from steerlab.evaluation import (
        AB_METRICS,
        LIKELIHOOD_METRICS,
        ab_probability_items,
        likelihood_margin_items,
        summarize,
    )
    from steerlab.vectors import load_vector

    vecs = [load_vector(p) for p in vectors or []]
    m = _load_model(run.model, run.device)
    for v in vecs:
        v.check_model(m.d_model, m.n_layers, m.model_id)
    data = load_pairs(run.behavior, seed=run.seed)
    kw: dict[str, Any] = {"batch_size": run.batch_size, "progress": run.progress}
    if kind == "ab":
        items = data.test_ab if data.test_ab is not None else pairs_to_ab(data.test, run.seed)
        items = items.head(n_test) if n_test else items
        frame = ab_probability_items(m, items, vecs or None, multipliers, **kw)
        return summarize(frame, AB_METRICS), frame
    pairs = data.test.head(n_test) if n_test else data.test
    frame = likelihood_margin_items(m, pairs, vecs or None, multipliers, **kw)
    return summarize(frame, LIKELIHOOD_METRICS), frame


def _print_eval(summary: Any, metric: str, title: str) -> None:
    from rich.table import Table

    sub = summary[summary["metric"] == metric]
    mults = sorted(sub["multiplier"].unique())
    table = Table(title=title)
    table.add_column("vector (method:behavior:layer)")
    for mult in mults:
        table.add_column(f"x{mult:g}", justify="right")
    for label, group in sub.groupby("vector", sort=False):
        cells = []
        for mult in mults:
            row = group[group["multiplier"] == mult]
            value, sem = float(row["value"].iloc[0]), float(row["sem"].iloc[0])
            cells.append(f"{value:.3f}" + (f" ± {sem:.3f}" if sem == sem else ""))
        table.add_row(str(label), *cells)
    _console().print(table)


def _run_eval(kind: str, metric: str, vectors: list[Path] | None, multipliers: str,
              n_test: int | None, out: Path | None, items_out: Path | None,
              run: RunSettings) -> None:  # fmt: skip
    from steerlab.errors import SteerlabError
    from steerlab.evaluation import AB_METRICS, LIKELIHOOD_METRICS

    valid = AB_METRICS if kind == "ab" else LIKELIHOOD_METRICS
    if metric not in valid:
        raise typer.BadParameter(f"--metric {metric!r}: choose one of {', '.join(valid)}.")
    mults = parse_multipliers(multipliers)
    t0 = time.perf_counter()
    try:
        summary, items = evaluate(kind, vectors, mults, n_test, run)
    except SteerlabError as exc:
        raise _fail(exc) from exc
    what = "A/B items" if kind == "ab" else "test pairs"
    n, secs = int(summary["n"].max()), time.perf_counter() - t0
    _print_eval(summary, metric, f"{metric} on {n} {run.behavior} {what} ({secs:.1f}s)")
    console = _console()
    for path, frame, name in ((out, summary, "results"), (items_out, items, "per-item results")):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(path, index=False)
            console.print(f"{name}: {path}")


_VECTOR = typer.Option(
    None, "--vector", "-v", help="A vector file (repeat for several); none: the unsteered model."
)
_MULTS = typer.Option("-2,-1,0,1,2", help="Comma-separated multipliers: --multipliers=-2,-1,0,1,2.")
_N_TEST = typer.Option(None, "--n-test", min=1, help="Use the first N test items (default all).")
_CSV = typer.Option(None, "--out", help="Write the tidy results (CSV).")
_ITEMS = typer.Option(None, "--items-out", help="Write per-item results (CSV).")


@eval_app.command("ab")
def ab_cmd(
    vector: list[Path] | None = _VECTOR,
    behavior: str = _BEHAVIOR,
    multipliers: str = _MULTS,
    n_test: int | None = _N_TEST,
    out: Path | None = _CSV,
    items_out: Path | None = _ITEMS,
    metric: str = typer.Option(
        "p_matching", help="Metric shown in the table: p_matching, matching_rate, letter_mass."
    ),
    model: str = _MODEL,
    device: str | None = _DEVICE,
    batch_size: int = _BATCH,
    seed: int = _SEED,
    progress: bool = _PROGRESS,
) -> None:
    """P(matching answer letter), normalised over A/B, on the behavior's A/B test items."""
    run = RunSettings(behavior, model, device, batch_size, seed, progress)
    _run_eval("ab", metric, vector, multipliers, n_test, out, items_out, run)


@eval_app.command("likelihood")
def likelihood_cmd(
    vector: list[Path] | None = _VECTOR,
    behavior: str = _BEHAVIOR,
    multipliers: str = _MULTS,
    n_test: int | None = _N_TEST,
    out: Path | None = _CSV,
    items_out: Path | None = _ITEMS,
    metric: str = typer.Option(
        "margin",
        help="Metric shown in the table: margin, logp_matching, logp_not_matching, "
        "prefers_matching.",
    ),
    model: str = _MODEL,
    device: str | None = _DEVICE,
    batch_size: int = _BATCH,
    progress: bool = _PROGRESS,
) -> None:
    """Mean log p(matching) - log p(not_matching) (response tokens) on the test pairs."""
    run = RunSettings(behavior, model, device, batch_size, 0, progress)
    _run_eval("likelihood", metric, vector, multipliers, n_test, out, items_out, run)
