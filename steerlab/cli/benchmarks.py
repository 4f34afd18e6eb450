"""``steerlab eval mmlu|truthfulqa|jailbreak``: benchmarks under steering.

Every command writes a tidy summary CSV (``vector, method, layer, multiplier, metric,
value, sem, n``) and the per-item rows next to it, and prints the summary.
"""

from pathlib import Path

import typer

from steerlab.cli import _common
from steerlab.cli.eval import _VECTOR_HELP, _judge, _save, _vectors


def mmlu_cmd(
    vector: list[Path] | None = typer.Option(None, "--vector", "-v", help=_VECTOR_HELP),
    multipliers: str = typer.Option("-1,0,1", help="Comma-separated multipliers (paper: -1,0,1)."),
    per_subject: int | None = typer.Option(None, help="Items per subject (1-10); default all 570."),
    batch_size: int = typer.Option(16, help="Prompts per forward pass."),
    model: str = typer.Option("embedded", help="'embedded', an HF id or a local dir."),
    device: str | None = typer.Option(None, help="cpu / cuda."),
    out: Path = typer.Option(Path("results/mmlu.csv"), help="Summary CSV (+ .items.jsonl)."),
) -> None:
    """MMLU (CAA's two-choice set) accuracy under steering."""
    from steerlab.evaluation.benchmarks.mmlu import MMLU_METRICS, mmlu_items
    from steerlab.evaluation.multipliers import summarize

    m = _common.load_model(model, device)
    items = mmlu_items(
        m,
        _vectors(vector),
        _common.parse_multipliers(multipliers),
        per_subject,
        batch_size=batch_size,
    )
    _save(summarize(items, MMLU_METRICS), items, out)


def truthfulqa_cmd(
    vector: list[Path] | None = typer.Option(None, "--vector", "-v", help=_VECTOR_HELP),
    multipliers: str = typer.Option("-1,0,1", help="Comma-separated multipliers."),
    version: str = typer.Option("v1", help="mc_task.json version: v1 (817) or 2025 (790)."),
    split: str = typer.Option("all", help="all / train / validation / test (v1)."),
    n: int | None = typer.Option(None, help="Seeded subsample of N questions."),
    seed: int = typer.Option(0, help="Seed of the split / subsample."),
    batch_size: int = typer.Option(16, help="Sequences per forward pass."),
    model: str = typer.Option("embedded", help="'embedded', an HF id or a local dir."),
    device: str | None = typer.Option(None, help="cpu / cuda."),
    out: Path = typer.Option(Path("results/truthfulqa.csv"), help="Summary CSV (+ .items.jsonl)."),
) -> None:
    """TruthfulQA MC1 / MC2 under steering."""
    from steerlab.evaluation.benchmarks.truthfulqa import TRUTHFULQA_METRICS, truthfulqa_items
    from steerlab.evaluation.multipliers import summarize

    m = _common.load_model(model, device)
    items = truthfulqa_items(
        m,
        _vectors(vector),
        _common.parse_multipliers(multipliers),
        version=version,
        split=split,
        n=n,
        seed=seed,
        batch_size=batch_size,
    )
    _save(summarize(items, TRUTHFULQA_METRICS), items, out)


def jailbreak_cmd(
    vector: list[Path] | None = typer.Option(None, "--vector", "-v", help=_VECTOR_HELP),
    multipliers: str = typer.Option(
        "-1,0,1", help="Comma-separated multipliers (+: attack, -: defence)."
    ),
    source: str = typer.Option("bipo", help="bipo (100 test questions) or advbench (520)."),
    n: int | None = typer.Option(None, help="Seeded subsample of N questions."),
    suffix: str = typer.Option("", help="Appended to every question (e.g. a GCG suffix)."),
    max_new_tokens: int = typer.Option(48, help="Tokens per answer."),
    batch_size: int = typer.Option(16, help="Questions per generation batch."),
    judge: str = typer.Option(
        "none", help="Extra judge: none / local / openai / classifier / refusal."
    ),
    judge_model: str | None = typer.Option(None, help="local: a model name; openai: the model id."),
    judge_url: str | None = typer.Option(None, help="openai: base URL."),
    judge_api_key_env: str | None = typer.Option(
        "OPENAI_API_KEY", help="openai: env var with the key ('none' for none)."
    ),
    judge_cache: Path | None = typer.Option(None, help="openai: reply cache directory."),
    model: str = typer.Option("embedded", help="'embedded', an HF id or a local dir."),
    device: str | None = typer.Option(None, help="cpu / cuda."),
    out: Path = typer.Option(Path("results/jailbreak.csv"), help="Summary CSV (+ .items.jsonl)."),
) -> None:
    """Jailbreak attack success rate (refusal phrases; optionally a judge) under steering."""
    from steerlab.evaluation.benchmarks.jailbreak import (
        ASR_METRICS,
        JUDGE_METRICS,
        direction_of,
        jailbreak_items,
    )
    from steerlab.evaluation.multipliers import summarize

    m = _common.load_model(model, device)
    j = _judge(
        judge,
        m,
        model,
        judge_model=judge_model,
        url=judge_url,
        api_key_env=judge_api_key_env,
        cache=judge_cache,
        path=None,
        device=device,
    )
    items = jailbreak_items(
        m,
        _vectors(vector),
        _common.parse_multipliers(multipliers),
        None,
        j,
        source=source,
        n=n,
        suffix=suffix,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    metrics = {**ASR_METRICS, **(JUDGE_METRICS if j is not None else {})}
    summary = summarize(items, metrics)
    summary.insert(4, "direction", [direction_of(x) for x in summary["multiplier"]])
    _save(summary, items, out)


def register(eval_app: typer.Typer) -> None:
    """Add ``mmlu``, ``truthfulqa``, ``jailbreak`` to ``eval_app``."""
    eval_app.command("mmlu")(mmlu_cmd)
    eval_app.command("truthfulqa")(truthfulqa_cmd)
    eval_app.command("jailbreak")(jailbreak_cmd)
