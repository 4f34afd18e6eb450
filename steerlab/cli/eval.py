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

from steerlab.cli import _common, _judge
from steerlab.cli._common import (
    BATCH,
    BEHAVIOR,
    DEVICE,
    FORCE_OTHER,
    MODEL,
    PROGRESS,
    SEED,
    VECTOR,
    RunSettings,
)

eval_app = _common.new_app(
    "Evaluate steering vectors across multipliers (judge-free metrics, benchmarks)."
)


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
    from steerlab.data import load_pairs
    from steerlab.evaluation import (
        AB_METRICS,
        LIKELIHOOD_METRICS,
        ab_probability,
        likelihood_margin,
        summarize,
    )

    vecs = _common.load_vectors(vectors) or []
    data = load_pairs(_common.check_behavior(run.behavior), seed=run.seed)
    m = _common.load_model(run.model, run.device)
    _common.check_vectors(m, vecs, run.force_other_model)
    kw: dict[str, Any] = {"batch_size": run.batch_size, "progress": run.progress}
    split = data.split(n_test=n_test, seed=run.seed)
    if kind == "ab":
        frame = ab_probability(m, split.test_ab, vecs or None, multipliers, per_item=True, **kw)
        return summarize(frame, AB_METRICS), frame
    frame = likelihood_margin(m, split.test, vecs or None, multipliers, per_item=True, **kw)
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
    from steerlab.evaluation import AB_METRICS, LIKELIHOOD_METRICS

    valid = AB_METRICS if kind == "ab" else LIKELIHOOD_METRICS
    if metric not in valid:
        raise typer.BadParameter(f"--metric {metric!r}: choose one of {', '.join(valid)}.")
    mults = _common.parse_multipliers(multipliers)
    for path, flag in ((out, "--out"), (items_out, "--items-out")):
        if path is not None:
            _common.check_out_file(path, flag)
    t0 = time.perf_counter()
    summary, items = evaluate(kind, vectors, mults, n_test, run)
    what = "A/B items" if kind == "ab" else "test pairs"
    n, secs = int(summary["n"].max()), time.perf_counter() - t0
    _print_eval(summary, metric, f"{metric} on {n} {run.behavior} {what} ({secs:.1f}s)")
    console = _common.console()
    for path, frame, name in ((out, summary, "results"), (items_out, items, "per-item results")):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(path, index=False)
            console.print(f"{name}: {path}")


_MULTS = typer.Option("-2,-1,0,1,2", help="Comma-separated multipliers: --multipliers=-2,-1,0,1,2.")
_N_TEST = _common.count_option(None, "--n-test", help="Use the first N test items (default all).")
_CSV = typer.Option(None, "--out", help="Write the tidy results (CSV).")
_ITEMS = typer.Option(None, "--items-out", help="Write per-item results (CSV).")


@eval_app.command("ab")
def ab_cmd(
    vector: list[Path] | None = VECTOR,
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
    force_other_model: bool = FORCE_OTHER,
) -> None:
    """P(matching answer letter), normalised over A/B, on the behavior's A/B test items."""
    run = RunSettings(behavior, model, device, batch_size, seed, progress, force_other_model)
    _run_eval("ab", metric, vector, multipliers, n_test, out, items_out, run)


@eval_app.command("likelihood")
def likelihood_cmd(
    vector: list[Path] | None = VECTOR,
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
    force_other_model: bool = FORCE_OTHER,
) -> None:
    """Mean log p(matching) - log p(not_matching) (response tokens) on the test pairs."""
    run = RunSettings(behavior, model, device, batch_size, 0, progress, force_other_model)
    _run_eval("likelihood", metric, vector, multipliers, n_test, out, items_out, run)


@eval_app.command("open")
def open_cmd(
    behavior: str = typer.Option("power-seeking", help="Behavior: questions and judge rubric."),
    vector: list[Path] | None = VECTOR,
    multipliers: str = typer.Option("-2,-1,0,1,2", help="Comma-separated multipliers."),
    questions: str = typer.Option(
        "bipo", help="'bipo' (the behavior's test questions) or 'caa' (CAA's open-ended set)."
    ),
    n: int | None = _common.count_option(None, help="Use the first N questions (default all)."),
    max_new_tokens: int = _common.count_option(200, help="Tokens per answer (paper: 200)."),
    batch_size: int = _common.count_option(8, help="Questions per generation batch."),
    judge: str = _judge.JUDGE,
    judge_model: str | None = _judge.JUDGE_MODEL,
    judge_url: str | None = _judge.JUDGE_URL,
    judge_api_key_env: str | None = _judge.JUDGE_KEY_ENV,
    judge_cache: Path | None = _judge.JUDGE_CACHE,
    judge_path: Path | None = typer.Option(None, help="classifier: a saved classifier judge."),
    self_judge: bool = _judge.SELF_JUDGE,
    model: str = MODEL,
    device: str | None = DEVICE,
    out: Path = typer.Option(
        Path("results/open_ended.jsonl"), help="Answers JSONL (resumed if it exists)."
    ),
    force_other_model: bool = FORCE_OTHER,
) -> None:
    """Steered open-ended answers (resumable JSONL), optionally judged 1-4."""
    from steerlab.data import load_open_ended, load_pairs
    from steerlab.evaluation.open_ended import run_open_ended, summarize_open_ended

    if questions not in ("bipo", "caa"):
        raise typer.BadParameter(f"--questions {questions!r}; use 'bipo' or 'caa'.")
    mults = _common.parse_multipliers(multipliers)
    _common.check_out_file(out)
    build_judge = _judge.judge_builder(
        judge,
        model,
        judge_model=judge_model,
        url=judge_url,
        api_key_env=judge_api_key_env,
        cache=judge_cache,
        path=judge_path,
        device=device,
        self_judge=self_judge,
    )
    vecs = _common.load_vectors(vector)
    if questions == "bipo":
        data = load_pairs(_common.check_behavior(behavior))
        qs = list(data.open_ended)
        examples = {p.question: (p.matching, p.not_matching) for p in data.test}
    else:
        qs, examples = list(load_open_ended(behavior)), None
    qs = qs[:n] if n else qs
    m = _common.load_model(model, device)
    _common.check_vectors(m, vecs, force_other_model)
    j = build_judge(m)
    frame = run_open_ended(
        m,
        qs,
        vecs,
        mults,
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
        for w in summary.attrs.get("warnings", []):
            typer.echo(f"warning: {w}", err=True)
        if summary.attrs.get("warnings"):
            summary = summary.assign(warning="; ".join(summary.attrs["warnings"]))
        summary.to_csv(csv, index=False)
        typer.echo(summary.to_string(index=False))
        typer.echo(f"saved {csv}")


def _mount() -> None:
    from steerlab.cli import benchmarks

    benchmarks.register(eval_app)


_mount()
