"""``steerlab eval ab|likelihood|open`` (behavior evaluations) and the ``eval`` group.

The benchmark commands (``mmlu``, ``truthfulqa``, ``jailbreak``) live in
:mod:`steerlab.cli.benchmarks` and are mounted on the same group. Heavy modules are
imported inside the commands. ``ab`` and ``likelihood`` are judge-free; ``open`` writes
resumable answers and optionally judges them.
"""

import time
from pathlib import Path
from typing import Any

import typer

from steerlab.cli import _common
from steerlab.cli._common import BATCH, BEHAVIOR, DEVICE, MODEL, PROGRESS, SEED, RunSettings

eval_app = typer.Typer(
    help="Evaluate steering vectors across multipliers (judge-free metrics, benchmarks).",
    no_args_is_help=True,
)


JUDGE_KINDS = ("none", "local", "openai", "classifier", "refusal")


def _vectors(paths: list[Path] | None) -> Any:
    from steerlab.vectors.vector import SteeringVector

    return [SteeringVector.load(p) for p in paths] if paths else None


def _judge(
    kind: str,
    model: Any,
    model_name: str,
    *,
    judge_model: str | None,
    url: str | None,
    api_key_env: str | None,
    cache: Path | None,
    path: Path | None,
    device: str | None,
) -> Any:
    """Build the judge named on the command line (None for 'none')."""
    from steerlab.evaluation.judges import make_judge

    if kind not in JUDGE_KINDS:
        raise typer.BadParameter(f"--judge {kind!r}; use one of {', '.join(JUDGE_KINDS)}.")
    if kind == "none":
        return None
    if kind == "local":
        same = judge_model is None or judge_model == model_name
        return make_judge("local", model=model if same else _common.load_model(judge_model, device))
    if kind == "openai":
        if not url or not judge_model:
            raise typer.BadParameter("--judge openai needs --judge-url and --judge-model.")
        env = None if api_key_env in (None, "", "none") else api_key_env
        return make_judge(
            "openai", base_url=url, model=judge_model, api_key_env=env, cache_dir=cache
        )
    if kind == "classifier":
        if path is None:
            raise typer.BadParameter("--judge classifier needs --judge-path (a saved judge).")
        return make_judge("classifier", path=path)
    return make_judge("refusal")


def _save(summary: Any, items: Any, out: Path, echo: bool = True) -> None:
    """``out`` (CSV summary) and ``out`` with ``.items.jsonl`` (per-item rows)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out, index=False)
    items_path = out.with_name(out.stem + ".items.jsonl")
    items.to_json(items_path, orient="records", lines=True, force_ascii=False)
    if echo:
        typer.echo(summary.to_string(index=False))
        typer.echo(f"saved {out} and {items_path}")


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
    m = _common.load_model(run.model, run.device)
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
    _common.console().print(table)


def _run_eval(kind: str, metric: str, vectors: list[Path] | None, multipliers: str,
              n_test: int | None, out: Path | None, items_out: Path | None,
              run: RunSettings) -> None:  # fmt: skip
    from steerlab.errors import SteerlabError
    from steerlab.evaluation import AB_METRICS, LIKELIHOOD_METRICS

    valid = AB_METRICS if kind == "ab" else LIKELIHOOD_METRICS
    if metric not in valid:
        raise typer.BadParameter(f"--metric {metric!r}: choose one of {', '.join(valid)}.")
    mults = _common.parse_multipliers(multipliers)
    t0 = time.perf_counter()
    try:
        summary, items = evaluate(kind, vectors, mults, n_test, run)
    except SteerlabError as exc:
        raise _common.fail(exc) from exc
    what = "A/B items" if kind == "ab" else "test pairs"
    n, secs = int(summary["n"].max()), time.perf_counter() - t0
    _print_eval(summary, metric, f"{metric} on {n} {run.behavior} {what} ({secs:.1f}s)")
    console = _common.console()
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
    behavior: str = BEHAVIOR,
    multipliers: str = _MULTS,
    n_test: int | None = _N_TEST,
    out: Path | None = _CSV,
    items_out: Path | None = _ITEMS,
    metric: str = typer.Option(
        "p_matching", help="Metric shown in the table: p_matching, matching_rate, letter_mass."
    ),
    model: str = MODEL,
    device: str | None = DEVICE,
    batch_size: int = BATCH,
    seed: int = SEED,
    progress: bool = PROGRESS,
) -> None:
    """P(matching answer letter), normalised over A/B, on the behavior's A/B test items."""
    run = RunSettings(behavior, model, device, batch_size, seed, progress)
    _run_eval("ab", metric, vector, multipliers, n_test, out, items_out, run)


@eval_app.command("likelihood")
def likelihood_cmd(
    vector: list[Path] | None = _VECTOR,
    behavior: str = BEHAVIOR,
    multipliers: str = _MULTS,
    n_test: int | None = _N_TEST,
    out: Path | None = _CSV,
    items_out: Path | None = _ITEMS,
    metric: str = typer.Option(
        "margin",
        help="Metric shown in the table: margin, logp_matching, logp_not_matching, "
        "prefers_matching.",
    ),
    model: str = MODEL,
    device: str | None = DEVICE,
    batch_size: int = BATCH,
    progress: bool = PROGRESS,
) -> None:
    """Mean log p(matching) - log p(not_matching) (response tokens) on the test pairs."""
    run = RunSettings(behavior, model, device, batch_size, 0, progress)
    _run_eval("likelihood", metric, vector, multipliers, n_test, out, items_out, run)


_VECTOR_HELP = "A .safetensors steering vector (repeat for several); none = unsteered only."


@eval_app.command("open")
def open_cmd(
    behavior: str = typer.Option("power-seeking", help="Behavior: questions and judge rubric."),
    vector: list[Path] | None = typer.Option(None, "--vector", "-v", help=_VECTOR_HELP),
    multipliers: str = typer.Option("-2,-1,0,1,2", help="Comma-separated multipliers."),
    questions: str = typer.Option(
        "bipo", help="'bipo' (the behavior's test questions) or 'caa' (CAA's open-ended set)."
    ),
    n: int | None = typer.Option(None, help="Use the first N questions."),
    max_new_tokens: int = typer.Option(200, help="Tokens per answer (paper: 200)."),
    batch_size: int = typer.Option(8, help="Questions per generation batch."),
    judge: str = typer.Option("none", help="none / local / openai / classifier / refusal."),
    judge_model: str | None = typer.Option(None, help="local: a model name; openai: the model id."),
    judge_url: str | None = typer.Option(
        None, help="openai: base URL, e.g. http://127.0.0.1:8000/v1."
    ),
    judge_api_key_env: str | None = typer.Option(
        "OPENAI_API_KEY", help="openai: env var with the key ('none' for none)."
    ),
    judge_cache: Path | None = typer.Option(None, help="openai: reply cache directory."),
    judge_path: Path | None = typer.Option(None, help="classifier: a saved classifier judge."),
    model: str = typer.Option("embedded", help="'embedded', an HF id or a local dir."),
    device: str | None = typer.Option(None, help="cpu / cuda."),
    out: Path = typer.Option(
        Path("results/open_ended.jsonl"), help="Answers JSONL (resumed if it exists)."
    ),
) -> None:
    """Steered open-ended answers (resumable JSONL), optionally judged 1-4."""
    from steerlab.data import load_open_ended, load_pairs
    from steerlab.evaluation.open_ended import run_open_ended, summarize_open_ended

    m = _common.load_model(model, device)
    if questions == "bipo":
        data = load_pairs(behavior)
        qs = list(data.open_ended)
        examples = {p.question: (p.matching, p.not_matching) for p in data.test}
    elif questions == "caa":
        qs, examples = list(load_open_ended(behavior)), None
    else:
        raise typer.BadParameter(f"--questions {questions!r}; use 'bipo' or 'caa'.")
    qs = qs[:n] if n else qs
    j = _judge(
        judge,
        m,
        model,
        judge_model=judge_model,
        url=judge_url,
        api_key_env=judge_api_key_env,
        cache=judge_cache,
        path=judge_path,
        device=device,
    )
    frame = run_open_ended(
        m,
        qs,
        _vectors(vector),
        _common.parse_multipliers(multipliers),
        out,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        judge=j,
        behavior=behavior,
        examples=examples,
    )
    typer.echo(f"{len(frame)} answers in {out}")
    if j is not None:
        summary = summarize_open_ended(frame)
        csv = out.with_name(out.stem + ".summary.csv")
        summary.to_csv(csv, index=False)
        typer.echo(summary.to_string(index=False))
        typer.echo(f"saved {csv}")


def _mount() -> None:
    from steerlab.cli import benchmarks

    benchmarks.register(eval_app)


_mount()
