"""``train_bipo`` / ``fit_bipo_run``: a BiPO vector from preference pairs.

Builds the packed-pair caches, drives a :class:`~steerlab.vectors.bipo.trainer.BiPOTrainer`
through its epochs and writes the run's files (``train_log.jsonl``, ``checkpoint.pt``,
``vector.safetensors``); registers ``"bipo"`` and ``"reps"`` (the same trainer with the
RePS objective, chosen by a :class:`~steerlab.vectors.bipo.config.RePSConfig`) with the
vector methods.
"""

import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from steerlab.activations.packed import build_cache, low_precision_weights, upper_linears
from steerlab.data.convert import behavior_of
from steerlab.data.fingerprints import fingerprint_record
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.utils.files import atomic_write_text
from steerlab.utils.gemm import packed_weights
from steerlab.utils.progress import progress_bar
from steerlab.vectors.bipo.checkpoint import CHECKPOINT_NAME
from steerlab.vectors.bipo.config import BiPOConfig, RePSConfig
from steerlab.vectors.bipo.plain import build_plain_cache, fast_path_refusal, warn_plain_path
from steerlab.vectors.bipo.reps import RePSTrainer
from steerlab.vectors.bipo.trainer import BiPOTrainer, autocast_dtype
from steerlab.vectors.fitting import METHODS, VectorMethod
from steerlab.vectors.vector import SteeringVector


@dataclass
class BiPORun:
    """A finished run: the vector, the per-step and per-epoch history, and costs."""

    vector: SteeringVector | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    seconds: float = 0.0
    cache_seconds: float = 0.0
    cache_bytes: int = 0
    stopped_early: bool = False
    engine: str = "fast"
    #: How the reference log-probs were had: ``"cached"`` (computed once: fp32, or bf16
    #: autocast where the cache found them batch-invariant) or ``"per step"`` (recomputed
    #: in each step's batch under autocast).
    reference: str = "cached"


ENGINES = ("auto", "fast", "plain")

#: The trainer of each objective (``config.objective``).
TRAINERS: dict[str, type[BiPOTrainer]] = {"bipo": BiPOTrainer, "reps": RePSTrainer}


def _choose_engine(model: SteerlabModel, engine: str, layer: int) -> str:
    """'fast' or 'plain' for ``engine`` ('auto': fast where it applies, with a notice
    when it does not)."""
    if engine not in ENGINES:
        raise ConfigError(f"engine={engine!r}: use one of {', '.join(ENGINES)}.")
    if engine == "plain":
        return "plain"
    reason = fast_path_refusal(model)
    if reason is None:
        return "fast"
    if engine == "fast":
        raise ConfigError(
            f"{model.model_id}: engine='fast' cannot run this model: {reason}. Fix: use "
            "engine='auto' or 'plain' (the same objective through a full forward per step)."
        )
    warn_plain_path(model, layer, reason)
    return "plain"


def _check_layers(
    model: SteerlabModel, layer: int | None, layers: Sequence[int] | None
) -> list[int]:
    if (layer is None) == (layers is None):
        raise ConfigError("Pass exactly one of layer= (single vector) or layers= (multi-layer).")
    chosen = [layer] if layer is not None else list(layers or [])
    if not chosen:
        raise ConfigError("layers= is empty; give at least one layer.")
    resolved = sorted({HookSite(int(x)).resolve(model.n_layers).layer for x in chosen})
    return resolved


def fit_bipo_run(
    model: SteerlabModel,
    pairs: Sequence[Any],
    layer: int | None = None,
    config: BiPOConfig | None = None,
    *,
    layers: Sequence[int] | None = None,
    val_pairs: Sequence[Any] | None = None,
    out_dir: "str | Path | None" = None,
    resume: bool = False,
    behavior: str | None = None,
    progress: bool = True,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    engine: str = "auto",
) -> BiPORun:
    """Train a BiPO vector and return the run (vector, history, timings).

    Args:
        pairs: preference pairs (``question, matching, not_matching``) or a dataset.
        layer: the steering layer (``resid_post``), or ``layers=`` for multi-layer BiPO
            (one vector per layer, trained jointly).
        val_pairs: held-out pairs; each epoch logs their likelihood margin at +1/-1 and
            drives ``select_best`` / ``early_stopping_patience``.
        out_dir: where ``train_log.jsonl``, ``checkpoint.pt`` (each epoch, atomic) and
            ``vector.safetensors`` go. ``resume=True`` continues from its checkpoint.
        engine: ``'auto'`` (default): the fast path (cached lower residuals, packed
            pairs, response-only unembedding) where the model allows it, else the plain
            path (full forward per step through the model's own head, reference log-probs
            cached once) with a :class:`~steerlab.vectors.bipo.plain.PlainPathWarning`
            naming the cost; ``'fast'`` refuses models it cannot run; ``'plain'`` always
            takes the plain path. Both optimise the same objective.
        config: a :class:`BiPOConfig` (BiPO) or a
            :class:`~steerlab.vectors.bipo.config.RePSConfig` (RePS, same trainer).
        on_step: called with each step's record. Under bf16 autocast on the fast path
            the upper layers hold bf16 weights meanwhile
            (:func:`~steerlab.activations.packed.low_precision_weights`): it must not
            run the model.
    """
    cfg = config or BiPOConfig()
    pair_list = list(pairs)
    if not pair_list:
        raise EmptyInputError("train_bipo got no training pairs.")
    chosen = _check_layers(model, layer, layers)
    which = _choose_engine(model, engine, chosen[0])
    build = build_cache if which == "fast" else build_plain_cache
    behavior = behavior_of(pairs, behavior)
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("resume=True needs out_dir= (where the checkpoint is).")
    t0 = time.perf_counter()
    autocast = autocast_dtype(cfg, model.device)  # the reference runs at the policy's precision
    cfg = replace(cfg, autocast_bf16=autocast is not None)  # recorded as run
    eos = cfg.score_eos  # both paths pack the same tokens
    cache = build(model, pair_list, chosen[0], autocast=autocast, progress=progress, score_eos=eos)
    val_cache = (
        build(
            model,
            list(val_pairs),
            chosen[0],
            autocast=autocast,
            progress=progress,
            desc="BiPO val cache",
            score_eos=eos,
        )
        if val_pairs
        else None
    )
    run = BiPORun(cache_seconds=time.perf_counter() - t0, cache_bytes=cache.nbytes, engine=which)
    if cfg.early_stopping_patience and val_cache is None:
        raise ConfigError("early_stopping_patience needs val_pairs=.")
    ckpt_path = out / CHECKPOINT_NAME if out else None
    trainer = TRAINERS[cfg.objective](
        model, cache, chosen, cfg, val_cache=val_cache, checkpoint_path=ckpt_path
    )
    if resume:
        trainer.restore()
    if out:
        out.mkdir(parents=True, exist_ok=True)
    log_file = _open_log(out / "train_log.jsonl", trainer.next_epoch) if out else None

    def log(kind: str, rec: dict[str, Any]) -> None:
        if log_file:
            log_file.write(json.dumps({"type": kind, **rec}) + "\n")
            log_file.flush()

    # fast path under autocast: the upper layers' linear weights cast once, not per call;
    # in fp32 on a CPU: packed once into oneDNN's layout, not reordered per call
    low = low_precision_weights(model, chosen[0] + 1, autocast if which == "fast" else None)
    packs: AbstractContextManager[Any] = nullcontext()
    if which == "fast" and autocast is None:
        packs = packed_weights([m.weight for m in upper_linears(model, chosen[0] + 1)])
    try:
        with low, packs:
            for epoch in range(trainer.next_epoch, cfg.epochs):
                plan = trainer.plan()
                for step in progress_bar(
                    plan, desc=f"{trainer.label} epoch {epoch + 1}/{cfg.epochs}", enabled=progress
                ):
                    rec = trainer.step(step)
                    log("step", rec)
                    if on_step:
                        on_step(rec)
                log("epoch", trainer.end_epoch())
                trainer.save()
                if trainer.should_stop:
                    run.stopped_early = True
                    break
    finally:
        if log_file:
            log_file.close()
    run.steps, run.epochs, run.best_epoch = trainer.steps, trainer.epochs, trainer.best_epoch
    per_step = trainer.cache.autocast is not None and not trainer.cache.batch_invariant
    run.reference = "per step" if per_step else "cached"
    run.vector = trainer.to_vector(str(behavior), str(getattr(pairs, "content_hash", "")))
    # the training and validation pairs, checked later against a classifier judge's
    run.vector = run.vector.with_hyperparameters(
        **fingerprint_record([*pair_list, *(val_pairs or [])])
    )
    run.seconds = time.perf_counter() - t0
    if out:
        run.vector.save(out / "vector.safetensors")
    return run


def _open_log(path: Path, keep_epochs: int) -> Any:
    """Open ``train_log.jsonl`` for appending after keeping only the lines of the first
    ``keep_epochs`` epochs (those the checkpoint holds): a resume does not repeat the step
    lines written after the last checkpoint, and a fresh run into the same directory
    starts a fresh log."""
    kept: list[str] = []
    if keep_epochs and path.is_file():
        done = 0
        for line in path.read_text(encoding="utf-8").splitlines():
            if done >= keep_epochs:
                break
            try:
                kind = json.loads(line).get("type")
            except (ValueError, AttributeError):
                break  # a line cut by a crash: what follows is not trusted
            kept.append(line + "\n")
            done += kind == "epoch"
    atomic_write_text(path, "".join(kept))
    return path.open("a", encoding="utf-8")


def train_bipo(
    model: SteerlabModel,
    pairs: Sequence[Any],
    layer: int | None = None,
    config: BiPOConfig | None = None,
    **kwargs: Any,
) -> SteeringVector:
    """Train a BiPO steering vector; see :func:`fit_bipo_run` for the options."""
    vec = fit_bipo_run(model, pairs, layer, config, **kwargs).vector
    assert vec is not None
    return vec


def _config_from(cls: type[BiPOConfig], kwargs: dict[str, Any]) -> BiPOConfig:
    """``kwargs["config"]``, or a ``cls`` built from the ``cls`` fields in ``kwargs``
    (either way popped from ``kwargs``; the other keys stay)."""
    return kwargs.pop("config", None) or cls(
        **{k: kwargs.pop(k) for k in list(kwargs) if k in cls.__dataclass_fields__}
    )


def _fit_bipo_method(
    model: Any, data: Sequence[Any], layers: Sequence[int], **kwargs: Any
) -> SteeringVector:
    cfg = _config_from(BiPOConfig, kwargs)
    allowed = {"val_pairs", "out_dir", "resume", "behavior", "progress", "engine"}
    extra = {k: v for k, v in kwargs.items() if k in allowed}
    if len(list(layers)) == 1:
        return train_bipo(model, data, list(layers)[0], cfg, **extra)
    return train_bipo(model, data, None, cfg, layers=list(layers), **extra)


def fit_reps_run(
    model: SteerlabModel,
    pairs: Sequence[Any],
    layer: int | None = None,
    config: BiPOConfig | None = None,
    **kwargs: Any,
) -> BiPORun:
    """Train a RePS vector: :func:`fit_bipo_run` with a
    :class:`~steerlab.vectors.bipo.config.RePSConfig` (default: ``RePSConfig()``; a plain
    ``BiPOConfig``, as sweeps and ``calibrate`` pass, gives its shared settings with
    RePS's own objective defaults, :meth:`RePSConfig.from_bipo`)."""
    cfg = RePSConfig.from_bipo(config) if config is not None else RePSConfig()
    return fit_bipo_run(model, pairs, layer, cfg, **kwargs)


def train_reps(
    model: SteerlabModel,
    pairs: Sequence[Any],
    layer: int | None = None,
    config: BiPOConfig | None = None,
    **kwargs: Any,
) -> SteeringVector:
    """Train a RePS steering vector; see :func:`fit_reps_run` and :func:`fit_bipo_run`."""
    vec = fit_reps_run(model, pairs, layer, config, **kwargs).vector
    assert vec is not None
    return vec


def _fit_reps_method(
    model: Any, data: Sequence[Any], layers: Sequence[int], **kwargs: Any
) -> SteeringVector:
    cfg = _config_from(RePSConfig, kwargs)
    return _fit_bipo_method(model, data, layers, config=RePSConfig.from_bipo(cfg), **kwargs)


METHODS.register("bipo", VectorMethod(_fit_bipo_method, train=fit_bipo_run))
METHODS.register("reps", VectorMethod(_fit_reps_method, train=fit_reps_run))
