"""``steerlab eval ab|likelihood|open`` (behavior evaluations) and the ``eval`` group.

The benchmark commands (``mmlu``, ``truthfulqa``, ``jailbreak``) live in
:mod:`steerlab.cli.benchmarks` and are mounted on the same group. Heavy modules are
imported inside the commands. ``ab`` and ``likelihood`` are judge-free; ``open`` writes
resumable answers and optionally judges them.
"""

import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer

from steerlab.cli import _common, _judge, _tables
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
from steerlab.cli._config import extend, options, with_signature

eval_app = _common.new_app(
    "Evaluate steering vectors across multipliers (judge-free metrics, benchmarks)."
)


def evaluate(
    kind: str,
    vectors: list[Path] | None,
    multipliers: list[float],
    n_test: int | None,
    run: RunSettings,
    strengths: list[float] | None = None,
    n_neutral: int = 0,
) -> tuple[Any, Any, Any]:
    """Load the vectors, the model and the first ``n_test`` items of the behavior's test
    split; return the (summary, per-item) frames of the A/B probability (``kind='ab'``,
    on ``test_ab``) or the likelihood margin (``kind='likelihood'``, on ``test``), both
    through their fast paths (cached lower residuals; they fall back to the plain
    functions where those do not apply). Multiplier 0 is added when vectors are given:
    the changes are measured against it. With ``strengths`` the vectors are evaluated
    at those strengths (|k v| / mean ||h|| at each site: matched norm) instead of
    ``multipliers``; strength 0 is added likewise. The third frame is the KL damage of
    the same conditions on ``n_neutral`` neutral texts (``kl_damage``), None without
    vectors or with ``n_neutral`` 0."""
    from steerlab.data import load_pairs
    from steerlab.evaluation import (
        AB_METRICS,
        LIKELIHOOD_METRICS,
        ab_probability_fast,
        likelihood_margin_fast,
    )
    from steerlab.evaluation.multipliers import DEFAULT_MULTIPLIERS, summarize
    from steerlab.evaluation.strengths import summarize_strengths

    vecs = _common.load_vectors(vectors) or []
    data = load_pairs(_common.check_behavior(run.behavior), seed=run.seed)
    m = _common.load_model(run.model, run.device)
    _common.check_vectors(m, vecs, run.force_other_model)
    kw: dict[str, Any] = {"batch_size": run.batch_size, "progress": run.progress,
                          "per_item": True}  # fmt: skip
    mults: Any = DEFAULT_MULTIPLIERS  # the entry points' default: taken with strengths=
    if strengths is None:
        mults = _tables.with_x0(multipliers, vecs)
    else:
        kw["strengths"] = _tables.with_x0(strengths, vecs)
    split = data.split(n_test=n_test, seed=run.seed)
    if kind == "ab":
        frame = ab_probability_fast(m, split.test_ab, vecs or None, mults, **kw)
        metrics = AB_METRICS
    else:
        frame = likelihood_margin_fast(m, split.test, vecs or None, mults, **kw)
        metrics = LIKELIHOOD_METRICS
    summary = (summarize if strengths is None else summarize_strengths)(frame, metrics)
    kl = _tables.kl_damage_of(m, vecs, mults, kw.get("strengths"), n_neutral, run.progress)
    return summary, frame, kl


def _run_eval(kind: str, metric: str, vector: list[Path] | None, multipliers: str | None,
              strengths: str | None, n_test: int | None, out: Path | None,
              items_out: Path | None, table_out: Path | None, n_neutral: int,
              run: RunSettings) -> None:  # fmt: skip
    from steerlab.analysis.effects import paired_changes
    from steerlab.evaluation import AB_METRICS, LIKELIHOOD_METRICS

    valid = AB_METRICS if kind == "ab" else LIKELIHOOD_METRICS
    if metric not in valid:
        raise typer.BadParameter(f"--metric {metric!r}: choose one of {', '.join(valid)}.")
    strength_list = _common.strength_list(multipliers, strengths, vector)
    mults = _common.parse_multipliers(multipliers or "-2,-1,0,1,2")
    for path, flag in ((out, "--out"), (items_out, "--items-out"), (table_out, "--table-out")):
        if path is not None:
            _common.check_out_file(path, flag)
    t0 = time.perf_counter()
    summary, items, kl = evaluate(kind, vector, mults, n_test, run, strength_list, n_neutral)
    table, kl_note = _tables.with_kl(paired_changes(items, valid, seed=run.seed), kl)
    what = "A/B items" if kind == "ab" else "test pairs"
    n, secs = int(summary["n"].max()), time.perf_counter() - t0
    at = " at matched strengths" if strength_list is not None else ""
    title = f"{metric} on {n} {run.behavior} {what}{at}, one seed ({secs:.1f}s)"
    _tables.print_changes(table[table["metric"] == metric], title, kl_note=kl_note)
    console = _common.console()
    for path, frame, name in (
        (out, summary, "results"),
        (items_out, items, "per-item results"),
        (table_out, table, "means and changes with CIs"),
    ):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(path, index=False)
            console.print(f"{name}: {path}")


_MULTS = typer.Option(
    None,
    help="Comma-separated multipliers: --multipliers=-2,-1,0,1,2 (the default; 0 is added: "
    "the changes are measured against it).",
)
_N_TEST = _common.count_option(None, "--n-test", help="Use the first N test items (default all).")
_CSV = typer.Option(None, "--out", help="Write the tidy results (CSV).")
_ITEMS = typer.Option(None, "--items-out", help="Write per-item results (CSV).")
_TABLE = typer.Option(
    None,
    "--table-out",
    help="Write every metric's means and changes versus x0 with 95% CIs (CSV).",
)
_SETTINGS = tuple(f.name for f in fields(RunSettings))  # what RunSettings takes of the options


def _metric_command(kind: str, doc: str, metric: Any, *, seed: bool) -> Any:
    """The command ``steerlab eval KIND`` (``ab`` or ``likelihood``): the options both
    share, ``metric`` (the ``--metric`` option: its default and valid names differ) and
    ``--seed`` where ``seed`` (only A/B items built from free-form pairs read it)."""

    def command(**kw: Any) -> None:
        run = RunSettings(**{k: kw.pop(k) for k in _SETTINGS if k in kw})
        _run_eval(kind, run=run, **kw)

    command.__name__, command.__doc__ = f"{kind}_cmd", doc
    return with_signature(
        command,
        options(
            vector=(list[Path] | None, VECTOR),
            behavior=(str, BEHAVIOR),
            multipliers=(str | None, _MULTS),
            strengths=(str | None, _common.STRENGTHS),
            n_test=(int | None, _N_TEST),
            out=(Path | None, _CSV),
            items_out=(Path | None, _ITEMS),
            table_out=(Path | None, _TABLE),
            n_neutral=(int, _common.N_NEUTRAL),
            metric=(str, metric),
            model=(str, MODEL),
            device=(str | None, DEVICE),
            batch_size=(int, BATCH),
            **({"seed": (int, SEED)} if seed else {}),
            progress=(bool, PROGRESS),
            force_other_model=(bool, FORCE_OTHER),
        ),
    )


ab_cmd = eval_app.command("ab")(
    _metric_command(
        "ab",
        "P(matching answer letter), normalised over A/B, on the behavior's A/B test items.",
        typer.Option(
            "p_matching", help="Metric shown in the table: p_matching, matching_rate, letter_mass."
        ),
        seed=True,
    )
)
likelihood_cmd = eval_app.command("likelihood")(
    _metric_command(
        "likelihood",
        "Mean log p(matching) - log p(not_matching) (response tokens) on the test pairs.",
        typer.Option(
            "margin",
            help="Metric shown in the table: margin, logp_matching, logp_not_matching, "
            "prefers_matching.",
        ),
        seed=False,
    )
)


def open_cmd(
    behavior: str = typer.Option("power-seeking", help="Behavior: questions and judge rubric."),
    vector: list[Path] | None = VECTOR,
    multipliers: str | None = _MULTS,
    strengths: str | None = _common.STRENGTHS,
    questions: str = typer.Option(
        "bipo", help="'bipo' (the behavior's test questions) or 'caa' (CAA's open-ended set)."
    ),
    n: int | None = _common.count_option(None, help="Use the first N questions (default all)."),
    max_new_tokens: int = _common.count_option(200, help="Tokens per answer (paper: 200)."),
    batch_size: int = _common.count_option(8, help="Questions per generation batch."),
    n_neutral: int = _common.N_NEUTRAL,
    model: str = MODEL,
    device: str | None = DEVICE,
    out: Path = typer.Option(
        Path("results/open_ended.jsonl"), help="Answers JSONL (resumed if it exists)."
    ),
    force_other_model: bool = FORCE_OTHER,
    allow_judge_overlap: bool = typer.Option(
        False,
        "--allow-judge-overlap",
        help="classifier: judge vectors fitted on some of the judge's own pairs anyway "
        "(refused by default; recorded as a warning).",
    ),
    **judge_options: Any,  # added below: _judge.judge_options(path=True)
) -> None:
    """Steered open-ended answers (resumable JSONL), optionally judged 1-4."""
    from steerlab.data import load_open_ended, load_pairs
    from steerlab.evaluation.open_ended import run_open_ended, summarize_open_ended

    if questions not in ("bipo", "caa"):
        raise typer.BadParameter(f"--questions {questions!r}; use 'bipo' or 'caa'.")
    strength_list = _common.strength_list(multipliers, strengths, vector)
    mults = _common.parse_multipliers(multipliers or "-2,-1,0,1,2")
    _common.check_out_file(out)
    build_judge = _judge.judge_builder(model_name=model, device=device, **judge_options)
    vecs = _common.load_vectors(vector)
    at_strengths = None if strength_list is None else _tables.with_x0(strength_list, vecs)
    if at_strengths is None:
        mults = _tables.with_x0(mults, vecs)
    else:
        from steerlab.evaluation.multipliers import DEFAULT_MULTIPLIERS

        mults = DEFAULT_MULTIPLIERS  # the entry points' default: taken with strengths=
    if questions == "bipo":
        data = load_pairs(_common.check_behavior(behavior))
        qs = list(data.open_ended)
        examples = {p.question: (p.matching, p.not_matching) for p in data.test}
    else:
        qs, examples = list(load_open_ended(behavior)), None
    qs = qs[:n] if n else qs
    _judge.check_judge_pairs(  # the judge's pairs against the vectors, before the model loads
        judge_options["judge"], judge_options.get("judge_path"), vecs, allow_judge_overlap
    )
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
        strengths=at_strengths,
        allow_judge_overlap=allow_judge_overlap,
    )
    typer.echo(f"{len(frame)} answers in {out}")
    if j is not None:
        summary = summarize_open_ended(frame)
        csv = out.with_name(out.stem + ".summary.csv")
        for w in summary.attrs.get("warnings", []):
            typer.echo(f"warning: {w}", err=True)
        typer.echo(summary.to_string(index=False))  # the warnings went to stderr above
        if summary.attrs.get("warnings"):
            summary = summary.assign(warning="; ".join(summary.attrs["warnings"]))
        summary.to_csv(csv, index=False)
        typer.echo(f"saved {csv}")
        if vecs:
            from steerlab.analysis.effects import paired_changes
            from steerlab.evaluation.open_ended import OPEN_ENDED_METRICS

            table = paired_changes(frame, {"judge_score": OPEN_ENDED_METRICS["judge_score"]})
            kl = _tables.kl_damage_of(m, vecs, mults, at_strengths, n_neutral, True)
            table, kl_note = _tables.with_kl(table, kl)
            at = " at matched strengths" if at_strengths is not None else ""
            title = f"judge_score on {len(qs)} {behavior} questions (n: scored){at}, one seed"
            _tables.print_changes(table, title, show_n=True, kl_note=kl_note)


eval_app.command("open")(
    extend(
        open_cmd,
        before="model",
        **_judge.judge_options(path=True),
    )
)


def _mount() -> None:
    from steerlab.cli import benchmarks

    benchmarks.register(eval_app)


_mount()
