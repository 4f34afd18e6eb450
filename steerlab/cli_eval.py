"""``steerlab eval open|mmlu|truthfulqa|jailbreak`` and ``steerlab serve``.

Plain functions plus :func:`register`, which mounts them on the main CLI's typer apps.
Heavy modules are imported inside the commands. Every eval command writes a tidy summary
CSV (``vector, method, layer, multiplier, metric, value, sem, n``) and the per-item rows
next to it, and prints the summary as a table.
"""

from pathlib import Path
from typing import Any

import typer

JUDGE_KINDS = ("none", "local", "openai", "classifier", "refusal")


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give comma-separated numbers, e.g. -1,0,1") from None


def _load(model: str, device: str | None) -> Any:
    import steerlab as sl

    return sl.load_model(model, device=device)


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
        return make_judge("local", model=model if same else _load(judge_model, device))
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


# --- eval commands ------------------------------------------------------------------------

_VECTOR_HELP = "A .safetensors steering vector (repeat for several); none = unsteered only."


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

    m = _load(model, device)
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
        _floats(multipliers),
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

    m = _load(model, device)
    items = mmlu_items(
        m, _vectors(vector), _floats(multipliers), per_subject, batch_size=batch_size
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

    m = _load(model, device)
    items = truthfulqa_items(
        m,
        _vectors(vector),
        _floats(multipliers),
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

    m = _load(model, device)
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
        _floats(multipliers),
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


def serve_cmd(
    model: str = typer.Option("embedded", help="'embedded', an HF id or a local dir."),
    vectors: Path | None = typer.Option(
        None, help="Directory of .safetensors vectors (names = file stems)."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default; no auth)."),
    port: int = typer.Option(8000, help="TCP port."),
    device: str | None = typer.Option(None, help="cpu / cuda."),
    dtype: str = typer.Option("float32", help="float32 / bfloat16 / float16."),
    model_name: str | None = typer.Option(None, help="Model id reported to clients."),
    max_tokens: int = typer.Option(512, help="Largest max_tokens a request may ask for."),
    max_prompt_tokens: int = typer.Option(4096, help="Largest prompt (tokens)."),
    max_multiplier: float = typer.Option(64.0, help="Largest |multiplier| of a steering entry."),
    quiet: bool = typer.Option(False, help="Do not log requests."),
) -> None:
    """OpenAI-compatible chat-completions server for one model, with named steering vectors."""
    from steerlab.serve.app import serve
    from steerlab.serve.schema import ServeLimits

    limits = ServeLimits(
        max_tokens=max_tokens,
        max_prompt_tokens=max_prompt_tokens,
        max_multiplier=max_multiplier,
    )
    serve(
        model,
        vectors,
        host,
        port,
        device=device,
        dtype=dtype,
        limits=limits,
        model_name=model_name,
        quiet=quiet,
    )


def register(eval_app: typer.Typer, app: typer.Typer) -> None:
    """Add ``open``, ``mmlu``, ``truthfulqa``, ``jailbreak`` to ``eval_app`` and ``serve``
    to ``app``."""
    eval_app.command("open")(open_cmd)
    eval_app.command("mmlu")(mmlu_cmd)
    eval_app.command("truthfulqa")(truthfulqa_cmd)
    eval_app.command("jailbreak")(jailbreak_cmd)
    app.command("serve")(serve_cmd)
