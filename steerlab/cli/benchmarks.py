"""``steerlab eval mmlu|truthfulqa|jailbreak``: benchmarks under steering.

Every command writes a tidy summary CSV (``vector, method, layer, multiplier, metric,
value, sem, n``; ``strength`` too with ``--strengths``) and the per-item rows next to it,
and prints the summary. The three are
built alike by :func:`benchmark_command`: ``--vector``, the benchmark's own options, then
the model and ``--out``; each command function checks its options before the model loads
and returns the function that scores the steered model.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import typer

from steerlab.cli import _common, _judge, _tables
from steerlab.cli._common import DEVICE, FORCE_OTHER, MODEL, VECTOR
from steerlab.cli._config import options, with_signature

#: ``(items, summarize, shown)``: ``items(model, vectors, multipliers)`` -> the per-item
#: frame, ``summarize(items)`` -> its tidy summary (grouped by multiplier), ``shown``: the
#: metrics (name -> per-item column) whose paired changes are printed.
Score = tuple[Callable[[Any, Any, list[float]], Any], Callable[[Any], Any], dict[str, str]]


def _print_changes(items: Any, shown: dict[str, str], name: str, kl: Any) -> None:
    """One table per metric in ``shown``: the mean and the paired change versus x0 (or
    strength 0) of every condition, with 95% bootstrap CIs over the items, and the KL
    damage of each condition (``kl``: :func:`~steerlab.cli._tables.kl_damage_of`'s, or None)."""
    from steerlab.analysis.effects import paired_changes

    table, kl_note = _tables.with_kl(paired_changes(items, shown), kl)
    at = " at matched strengths" if "strength" in items.columns else ""
    for metric in shown:
        rows = table[table["metric"] == metric]
        n = int(rows["n"].max())
        _tables.print_changes(rows, f"{name} {metric} on {n} items{at}, one seed", kl_note=kl_note)


def _save(summary: Any, items: Any, out: Path, echo: bool = True) -> None:
    """``out`` (CSV summary) and ``out`` with ``.items.jsonl`` (per-item rows)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out, index=False)
    items_path = out.with_name(out.stem + ".items.jsonl")
    items.to_json(items_path, orient="records", lines=True, force_ascii=False)
    if echo:
        typer.echo(summary.to_string(index=False))
        typer.echo(f"saved {out} and {items_path}")


def benchmark_command(
    name: str, multipliers: Any, **own: tuple[Any, Any]
) -> Callable[[Callable[..., Score]], Any]:
    """Make ``prepare`` the command ``steerlab eval NAME`` (help: its docstring):
    ``--vector``, ``--multipliers`` (default ``-1,0,1``; 0 is added with vectors) or
    ``--strengths``, the ``own``
    options (``name=(type, typer.Option(...))``), ``--model``, ``--device``, ``--out``
    (default ``results/NAME.csv``) and ``--force-other-model``.

    The command checks the multipliers or strengths and ``--out``, calls
    ``prepare(model=, device=, **own values)`` (which checks the benchmark's options and
    returns its :data:`Score`), loads the steered model, scores it and saves the frames
    (:func:`_save`). With ``--strengths`` (0 added) the vectors are scored at matched
    norm (:func:`~steerlab.evaluation.strengths.at_strengths`) and the summary is grouped
    by strength, with the saved vector's multiplier beside it. With vectors it prints the
    paired changes of the main metrics and the KL damage of every condition on
    ``--n-neutral`` neutral texts (also saved as ``*.kl.csv``; 0 skips it)."""

    def wrap(prepare: Callable[..., Score]) -> Any:
        def command(**kw: Any) -> None:
            vector, out, force = kw.pop("vector"), kw.pop("out"), kw.pop("force_other_model")
            mults_text, strengths = kw.pop("multipliers"), kw.pop("strengths")
            n_neutral = kw.pop("n_neutral")
            strength_list = _common.strength_list(mults_text, strengths, vector)
            # x0 is always scored with vectors: the changes are measured against it
            mults = _tables.with_x0(_common.parse_multipliers(mults_text or "-1,0,1"), vector)
            _common.check_out_file(out)
            items_of, summarize, shown = prepare(**kw)
            m, vecs = _common.load_steered(vector, kw["model"], kw["device"], force)
            at: list[float] | None = None
            if strength_list is None:
                items = items_of(m, vecs, mults)
                _save(summarize(items), items, out)
            else:
                from steerlab.evaluation.multipliers import DEFAULT_MULTIPLIERS
                from steerlab.evaluation.strengths import at_strengths, summarize_by_strength

                at = sorted({0.0, *strength_list})
                items = at_strengths(m, vecs, at, lambda v, ks: items_of(m, v, list(ks)))
                _save(summarize_by_strength(items, summarize), items, out)
                mults = DEFAULT_MULTIPLIERS  # the entry points' default: taken with strengths=
            if vecs:
                kl = _tables.kl_damage_of(m, vecs, mults, at, n_neutral, True)
                if kl is not None:
                    kl.to_csv(out.with_name(out.stem + ".kl.csv"), index=False)
                _print_changes(items, shown, name, kl)

        command.__name__, command.__doc__ = prepare.__name__, prepare.__doc__
        out_help = "Summary CSV (+ .items.jsonl)."
        return with_signature(
            command,
            options(
                vector=(list[Path] | None, VECTOR),
                multipliers=(str | None, multipliers),
                strengths=(str | None, _common.STRENGTHS),
                n_neutral=(int, _common.N_NEUTRAL),
                **own,
                model=(str, MODEL),
                device=(str | None, DEVICE),
                out=(Path, typer.Option(Path(f"results/{name}.csv"), help=out_help)),
                force_other_model=(bool, FORCE_OTHER),
            ),
        )

    return wrap


@benchmark_command(
    "mmlu",
    typer.Option(None, help="Comma-separated multipliers (default and paper: -1,0,1)."),
    per_subject=(int | None, _common.count_option(
        None, help="Items per subject (1-10); default all 570.", maximum=10
    )),
    batch_size=(int, _common.count_option(16, help="Prompts per forward pass.")),
)  # fmt: skip
def mmlu_cmd(*, per_subject: int | None, batch_size: int, **_: Any) -> Score:
    """MMLU, CAA's two-choice set (chance 0.5): accuracy with n and a 95% CI under steering."""
    from steerlab.evaluation.benchmarks.mmlu import MMLU_METRICS, mmlu_accuracy, summarize_mmlu

    def items(m: Any, vecs: Any, mults: list[float]) -> Any:
        return mmlu_accuracy(m, vecs, mults, per_subject, batch_size=batch_size, per_item=True)

    return items, summarize_mmlu, {k: MMLU_METRICS[k] for k in ("accuracy", "p_correct")}


@benchmark_command(
    "truthfulqa",
    typer.Option(None, help="Comma-separated multipliers (default -1,0,1)."),
    version=(Literal["v1", "2025"], typer.Option(
        "v1", help="mc_task.json version: v1 (817) or 2025 (790)."
    )),
    split=(Literal["all", "train", "validation", "test"], typer.Option(
        "test", help="test (default: never trained on) / validation / train / all (2025: all)."
    )),
    allow_train_questions=(bool, typer.Option(
        False, help="Score a truthfulqa-trained vector on its own training questions (warns)."
    )),
    n=(int | None, _common.count_option(None, help="Seeded subsample of N questions.")),
    seed=(int, typer.Option(0, help="Seed of the split / subsample.")),
    batch_size=(int, _common.count_option(16, help="Sequences per forward pass.")),
)  # fmt: skip
def truthfulqa_cmd(*, model: str, device: str | None, **settings: Any) -> Score:
    """TruthfulQA MC1 / MC2 under steering."""
    from steerlab.evaluation.benchmarks.truthfulqa import (
        TRUTHFULQA_METRICS,
        summarize_truthfulqa,
        truthfulqa_mc,
    )

    def items(m: Any, vecs: Any, mults: list[float]) -> Any:
        return truthfulqa_mc(m, vecs, mults, per_item=True, **settings)

    return items, summarize_truthfulqa, dict(TRUTHFULQA_METRICS)


@benchmark_command(
    "jailbreak",
    typer.Option(None, help="Comma-separated multipliers (+: attack, -: defence; default -1,0,1)."),
    source=(str, typer.Option("bipo", help="bipo (100 test questions) or advbench (520).")),
    n=(int | None, _common.count_option(None, help="Seeded subsample of N questions.")),
    suffix=(str, typer.Option("", help="Appended to every question (e.g. a GCG suffix).")),
    max_new_tokens=(int, _common.count_option(48, help="Tokens per answer.")),
    batch_size=(int, _common.count_option(16, help="Questions per generation batch.")),
    **_judge.judge_options(),
)  # fmt: skip
def jailbreak_cmd(*, source: str, model: str, device: str | None, **settings: Any) -> Score:
    """Jailbreak attack success rate (refusal phrases; optionally a judge) under steering."""
    from steerlab.errors import unknown_name
    from steerlab.evaluation.benchmarks.jailbreak import (
        ASR_METRICS,
        JAILBREAK_SOURCES,
        jailbreak_asr,
        summarize_jailbreak,
    )

    if source not in JAILBREAK_SOURCES:
        raise unknown_name("jailbreak source", source, JAILBREAK_SOURCES)
    judge_options = {k: settings.pop(k) for k in _judge.judge_options()}
    build_judge = _judge.judge_builder(model_name=model, device=device, **judge_options)

    def items(m: Any, vecs: Any, mults: list[float]) -> Any:
        return jailbreak_asr(m, vecs, mults, None, build_judge(m), source=source,
                             per_item=True, **settings)  # fmt: skip

    return items, summarize_jailbreak, {"asr": ASR_METRICS["asr"]}


def register(eval_app: typer.Typer) -> None:
    """Add ``mmlu``, ``truthfulqa``, ``jailbreak`` to ``eval_app``."""
    eval_app.command("mmlu")(mmlu_cmd)
    eval_app.command("truthfulqa")(truthfulqa_cmd)
    eval_app.command("jailbreak")(jailbreak_cmd)
