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
JUDGE_PATH = typer.Option(None, help="classifier: a saved classifier judge.")


def judge_options(*, path: bool = False) -> dict[str, tuple[Any, Any]]:
    """The judge options of ``eval open`` and ``eval jailbreak`` in ``--help`` order
    (``name: (type, option)``, see :func:`steerlab.cli._config.options`), the keyword
    arguments of :func:`judge_builder`; ``path``: with ``--judge-path``."""
    opts: dict[str, tuple[Any, Any]] = {
        "judge": (str, JUDGE),
        "judge_model": (str | None, JUDGE_MODEL),
        "judge_url": (str | None, JUDGE_URL),
        "judge_api_key_env": (str | None, JUDGE_KEY_ENV),
        "judge_cache": (Path | None, JUDGE_CACHE),
    }
    if path:
        opts["judge_path"] = (Path | None, JUDGE_PATH)
    return {**opts, "self_judge": (bool, SELF_JUDGE)}


def judge_builder(
    judge: str,
    model_name: str,
    *,
    device: str | None,
    judge_model: str | None = None,
    judge_url: str | None = None,
    judge_api_key_env: str | None = None,
    judge_cache: Path | None = None,
    judge_path: Path | None = None,
    self_judge: bool = False,
) -> Callable[[Any], Any]:
    """Check the judge options now; return ``build(model) -> judge or None``."""
    from steerlab.errors import ConfigError, unknown_name

    if judge not in JUDGE_KINDS:
        raise unknown_name("judge", judge, JUDGE_KINDS)
    same = judge_model is None or judge_model == model_name
    if judge == "local" and same and not self_judge:
        raise ConfigError(
            f"--judge local without --judge-model would grade {model_name}'s answers with "
            f"{model_name} itself; pass --judge-model NAME (another model), or --self-judge to "
            "allow it (the summary then carries a warning)."
        )
    if judge == "openai" and (not judge_url or not judge_model):
        raise ConfigError("--judge openai needs --judge-url and --judge-model.")
    if judge == "classifier":
        if judge_path is None:
            raise ConfigError("--judge classifier needs --judge-path (a saved judge).")
        if not Path(judge_path).exists():
            raise ConfigError(f"--judge-path {judge_path}: does not exist; give a saved judge.")
    if judge_cache is not None:
        _common.check_out_dir(judge_cache, "--judge-cache")

    def build(model: Any) -> Any:
        from steerlab.evaluation.judges import make_judge

        if judge == "none":
            return None
        if judge == "local":
            other = None if same else _common.load_model(judge_model, device)  # type: ignore[arg-type]
            return make_judge("local", model=model if same else other, allow_self_judge=self_judge)
        if judge == "openai":
            env = None if judge_api_key_env in (None, "", "none") else judge_api_key_env
            return make_judge(
                "openai",
                base_url=judge_url,
                model=judge_model,
                api_key_env=env,
                cache_dir=judge_cache,
            )
        if judge == "classifier":
            return make_judge("classifier", path=judge_path)
        return make_judge("refusal")

    return build


def check_judge_pairs(
    judge: str, judge_path: Path | None, vectors: Any, allow_overlap: bool
) -> None:
    """For ``--judge classifier``: read which pairs the saved judge was fitted on and
    refuse vectors fitted on any of them (unless ``allow_overlap``) before any model is
    loaded; ``run_open_ended`` checks again and records the warnings."""
    import json

    from steerlab.evaluation.judges.judge_pairs import judge_pair_notes
    from steerlab.evaluation.multipliers import conditions

    if judge != "classifier" or judge_path is None or not vectors:
        return
    try:
        record = json.loads(Path(judge_path).read_text(encoding="utf-8")).get("pairs")
    except (OSError, ValueError, AttributeError):
        return  # an unreadable file is reported when the judge is loaded
    labels = [c.label for c in conditions(vectors, [1.0])]
    judge_pair_notes(record, vectors, labels, allow_overlap=allow_overlap)
