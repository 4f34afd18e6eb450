"""``steerlab eval mmlu|truthfulqa|jailbreak``: benchmarks under steering.

Every command writes a tidy summary CSV (``vector, method, layer, multiplier, metric,
value, sem, n``) and the per-item rows next to it, and prints the summary.
"""

from pathlib import Path
from typing import Any, Literal

import typer

from steerlab.cli import _common, _judge
from steerlab.cli._common import DEVICE, FORCE_OTHER, MODEL, VECTOR


def _save(summary: Any, items: Any, out: Path, echo: bool = True) -> None:
    """``out`` (CSV summary) and ``out`` with ``.items.jsonl`` (per-item rows)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out, index=False)
    items_path = out.with_name(out.stem + ".items.jsonl")
    items.to_json(items_path, orient="records", lines=True, force_ascii=False)
    if echo:
        typer.echo(summary.to_string(index=False))
        typer.echo(f"saved {out} and {items_path}")


def mmlu_cmd(
    vector: list[Path] | None = VECTOR,
    multipliers: str = typer.Option("-1,0,1", help="Comma-separated multipliers (paper: -1,0,1)."),
    per_subject: int | None = _common.count_option(
        None, help="Items per subject (1-10); default all 570.", maximum=10
    ),
    batch_size: int = _common.count_option(16, help="Prompts per forward pass."),
    model: str = MODEL,
    device: str | None = DEVICE,
    out: Path = typer.Option(Path("results/mmlu.csv"), help="Summary CSV (+ .items.jsonl)."),
    force_other_model: bool = FORCE_OTHER,
) -> None:
    """MMLU, CAA's two-choice set (chance 0.5): accuracy with n and a 95% CI under steering."""
    from steerlab.evaluation.benchmarks.mmlu import mmlu_accuracy, summarize_mmlu

    mults = _common.parse_multipliers(multipliers)
    _common.check_out_file(out)
    m, vecs = _common.load_steered(vector, model, device, force_other_model)
    items = mmlu_accuracy(
        m,
        vecs,
        mults,
        per_subject,
        batch_size=batch_size,
        per_item=True,
    )
    _save(summarize_mmlu(items), items, out)


def truthfulqa_cmd(
    vector: list[Path] | None = VECTOR,
    multipliers: str = typer.Option("-1,0,1", help="Comma-separated multipliers."),
    version: Literal["v1", "2025"] = typer.Option(
        "v1",
        help="mc_task.json version: v1 (817) or 2025 (790).",
    ),
    split: Literal["all", "train", "validation", "test"] = typer.Option(
        "test",
        help="test (default: never trained on) / validation / train / all (2025: all).",
    ),
    allow_train_questions: bool = typer.Option(
        False, help="Score a truthfulqa-trained vector on its own training questions (warns)."
    ),
    n: int | None = _common.count_option(None, help="Seeded subsample of N questions."),
    seed: int = typer.Option(0, help="Seed of the split / subsample."),
    batch_size: int = _common.count_option(16, help="Sequences per forward pass."),
    model: str = MODEL,
    device: str | None = DEVICE,
    out: Path = typer.Option(Path("results/truthfulqa.csv"), help="Summary CSV (+ .items.jsonl)."),
    force_other_model: bool = FORCE_OTHER,
) -> None:
    """TruthfulQA MC1 / MC2 under steering."""
    from steerlab.evaluation.benchmarks.truthfulqa import summarize_truthfulqa, truthfulqa_mc

    mults = _common.parse_multipliers(multipliers)
    _common.check_out_file(out)
    m, vecs = _common.load_steered(vector, model, device, force_other_model)
    items = truthfulqa_mc(
        m,
        vecs,
        mults,
        version=version,
        split=split,
        allow_train_questions=allow_train_questions,
        n=n,
        seed=seed,
        batch_size=batch_size,
        per_item=True,
    )
    _save(summarize_truthfulqa(items), items, out)


def jailbreak_cmd(
    vector: list[Path] | None = VECTOR,
    multipliers: str = typer.Option(
        "-1,0,1", help="Comma-separated multipliers (+: attack, -: defence)."
    ),
    source: str = typer.Option("bipo", help="bipo (100 test questions) or advbench (520)."),
    n: int | None = _common.count_option(None, help="Seeded subsample of N questions."),
    suffix: str = typer.Option("", help="Appended to every question (e.g. a GCG suffix)."),
    max_new_tokens: int = _common.count_option(48, help="Tokens per answer."),
    batch_size: int = _common.count_option(16, help="Questions per generation batch."),
    judge: str = _judge.JUDGE,
    judge_model: str | None = _judge.JUDGE_MODEL,
    judge_url: str | None = _judge.JUDGE_URL,
    judge_api_key_env: str | None = _judge.JUDGE_KEY_ENV,
    judge_cache: Path | None = _judge.JUDGE_CACHE,
    self_judge: bool = _judge.SELF_JUDGE,
    model: str = MODEL,
    device: str | None = DEVICE,
    out: Path = typer.Option(Path("results/jailbreak.csv"), help="Summary CSV (+ .items.jsonl)."),
    force_other_model: bool = FORCE_OTHER,
) -> None:
    """Jailbreak attack success rate (refusal phrases; optionally a judge) under steering."""
    from steerlab.errors import unknown_name
    from steerlab.evaluation.benchmarks.jailbreak import (
        JAILBREAK_SOURCES,
        jailbreak_asr,
        summarize_jailbreak,
    )

    if source not in JAILBREAK_SOURCES:
        raise unknown_name("jailbreak source", source, JAILBREAK_SOURCES)
    mults = _common.parse_multipliers(multipliers)
    _common.check_out_file(out)
    build_judge = _judge.judge_builder(
        judge,
        model,
        judge_model=judge_model,
        url=judge_url,
        api_key_env=judge_api_key_env,
        cache=judge_cache,
        path=None,
        device=device,
        self_judge=self_judge,
    )
    m, vecs = _common.load_steered(vector, model, device, force_other_model)
    j = build_judge(m)
    items = jailbreak_asr(
        m,
        vecs,
        mults,
        None,
        j,
        source=source,
        n=n,
        suffix=suffix,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        per_item=True,
    )
    _save(summarize_jailbreak(items), items, out)


def register(eval_app: typer.Typer) -> None:
    """Add ``mmlu``, ``truthfulqa``, ``jailbreak`` to ``eval_app``."""
    eval_app.command("mmlu")(mmlu_cmd)
    eval_app.command("truthfulqa")(truthfulqa_cmd)
    eval_app.command("jailbreak")(jailbreak_cmd)
