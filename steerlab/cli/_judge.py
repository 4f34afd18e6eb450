"""The ``--judge`` options of ``steerlab eval open|jailbreak``: checked before any model
is loaded, built after (a ``local`` judge reuses the evaluated model)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from steerlab.cli import _common

JUDGE_KINDS = ("none", "local", "openai", "classifier", "refusal")

JUDGE = typer.Option("none", help="none / local / openai / classifier / refusal.")
JUDGE_MODEL = typer.Option(None, help="local: a model name; openai: the model id.")
JUDGE_URL = typer.Option(None, help="openai: base URL, e.g. http://127.0.0.1:8000/v1.")
JUDGE_KEY_ENV = typer.Option(
    "OPENAI_API_KEY", help="openai: env var with the key ('none' for none)."
)
JUDGE_CACHE = typer.Option(None, help="openai: reply cache directory.")
SELF_JUDGE = typer.Option(
    False,
    "--self-judge",
    help="local: allow the evaluated model to grade its own answers (recorded as a warning).",
)


def judge_builder(
    kind: str,
    model_name: str,
    *,
    judge_model: str | None,
    url: str | None,
    api_key_env: str | None,
    cache: Path | None,
    path: Path | None,
    device: str | None,
    self_judge: bool = False,
) -> Callable[[Any], Any]:
    """Check the judge options now; return ``build(model) -> judge or None``."""
    from steerlab.errors import ConfigError, unknown_name

    if kind not in JUDGE_KINDS:
        raise unknown_name("judge", kind, JUDGE_KINDS)
    same = judge_model is None or judge_model == model_name
    if kind == "local" and same and not self_judge:
        raise ConfigError(
            f"--judge local without --judge-model would grade {model_name}'s answers with "
            f"{model_name} itself; pass --judge-model NAME (another model), or --self-judge to "
            "allow it (the summary then carries a warning)."
        )
    if kind == "openai" and (not url or not judge_model):
        raise ConfigError("--judge openai needs --judge-url and --judge-model.")
    if kind == "classifier":
        if path is None:
            raise ConfigError("--judge classifier needs --judge-path (a saved judge).")
        if not Path(path).exists():
            raise ConfigError(f"--judge-path {path}: does not exist; give a saved judge.")
    if cache is not None:
        _common.check_out_dir(cache, "--judge-cache")

    def build(model: Any) -> Any:
        from steerlab.evaluation.judges import make_judge

        if kind == "none":
            return None
        if kind == "local":
            other = None if same else _common.load_model(judge_model, device)  # type: ignore[arg-type]
            return make_judge("local", model=model if same else other, allow_self_judge=self_judge)
        if kind == "openai":
            env = None if api_key_env in (None, "", "none") else api_key_env
            return make_judge(
                "openai", base_url=url, model=judge_model, api_key_env=env, cache_dir=cache
            )
        if kind == "classifier":
            return make_judge("classifier", path=path)
        return make_judge("refusal")

    return build
