"""``train_bipo``: BiPO steering vectors (Cao et al. 2024), exact objective, fast path.

One model copy: the reference log-probs come from the same frozen model without the
vector and are computed once; the residual stream below the steering layer is computed
once; each step runs only the layers above it, with the prompt shared by both responses
and the unembedding applied at response positions only. Only the vector is trained.
"""

import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from steerlab.activations.packed import (
    PairCache,
    build_cache,
    sequence_logprobs,
    supports_fast_unembed,
    upper_token_logprobs,
)
from steerlab.errors import ConfigError, EmptyInputError, TrainingError
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.utils.progress import progress_bar
from steerlab.vectors.bipo.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from steerlab.vectors.bipo.config import BiPOConfig
from steerlab.vectors.bipo.loss import bipo_loss, cosine_with_warmup
from steerlab.vectors.bipo.schedule import epoch_plan, steps_per_epoch
from steerlab.vectors.fitting import METHODS
from steerlab.vectors.vector import Provenance, SteeringVector


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


def _add_hooks(model: SteerlabModel, layers: list[int], params: list[Tensor], d: Tensor) -> list:
    """Hooks adding ``d * v_k`` at resid_post of every layer after the first."""
    hooks = []
    for layer, v in zip(layers[1:], params[1:]):

        def hook(x: Tensor, hook: Any, v: Tensor = v) -> Tensor:
            return x + d.to(x.dtype) * v.to(x.dtype)

        hooks.append((HookSite(layer).hook_name(model), hook))
    return hooks


def policy_logprobs(
    model: SteerlabModel,
    cache: PairCache,
    idx: Sequence[int],
    layers: list[int],
    params: list[Tensor],
    d: Tensor,
    autocast_bf16: bool = False,
) -> tuple[Tensor, Tensor]:
    """Summed response log-probs of both sides with ``d * v`` added (d per example)."""
    batch, resid = cache.batch(idx, model.pad_token_id, model.device)
    dd = d.to(model.device).view(-1, 1, 1)
    x = resid + (dd * params[0]).to(resid.dtype)
    ctx = (
        torch.autocast(model.device.type, dtype=torch.bfloat16) if autocast_bf16 else nullcontext()
    )
    with ctx:
        lp = upper_token_logprobs(model, x, batch, layers[0], _add_hooks(model, layers, params, dd))
    return sequence_logprobs(lp.double() if lp.dtype != torch.float64 else lp, batch)


@torch.no_grad()
def validation_margins(
    model: SteerlabModel,
    cache: PairCache,
    layers: list[int],
    params: list[Tensor],
    batch_size: int = 8,
    autocast_bf16: bool = False,
) -> dict[str, float]:
    """Mean log p(matching) - log p(not matching) of held-out pairs at multipliers -1/0/+1."""
    out: dict[str, float] = {}
    n = len(cache.packed)
    for mult in (-1.0, 1.0):
        total = 0.0
        for s in range(0, n, batch_size):
            idx = list(range(s, min(n, s + batch_size)))
            m, nm = policy_logprobs(
                model, cache, idx, layers, params, torch.full((len(idx),), mult), autocast_bf16
            )
            total += float((m - nm).sum())
        out[f"margin@{mult:+g}"] = total / n
    out["margin@0"] = float((cache.ref_matching - cache.ref_not_matching).mean())
    out["score"] = out["margin@+1"] - out["margin@-1"]
    return out


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
) -> BiPORun:
    """Train a BiPO vector and return the run (vector, history, timings).

    Args:
        pairs: preference pairs (``question, matching, not_matching``) or a dataset.
        layer: the steering layer (``resid_post``), or ``layers=`` for multi-layer BiPO
            (one vector per layer, trained jointly).
        val_pairs: held-out pairs; each epoch logs their likelihood margin at +1/-1 and
            drives ``select_best`` / ``early_stopping_patience``.
        out_dir: where ``train_log.jsonl``, ``checkpoint.pt`` (each epoch, atomic) and
            ``best.safetensors`` go. ``resume=True`` continues from its checkpoint.
    """
    cfg = config or BiPOConfig()
    pair_list = list(pairs)
    if not pair_list:
        raise EmptyInputError("train_bipo got no training pairs.")
    if not supports_fast_unembed(model):
        raise ConfigError(
            f"{model.model_id}: the fast BiPO path needs a linear unembedding without logit "
            "soft-capping."
        )
    chosen = _check_layers(model, layer, layers)
    behavior = behavior or getattr(pairs, "name", None) or "unknown"
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("resume=True needs out_dir= (where the checkpoint is).")
    t0 = time.perf_counter()
    cache = build_cache(model, pair_list, chosen[0], progress=progress)
    val_cache = (
        build_cache(model, list(val_pairs), chosen[0], progress=progress, desc="BiPO val cache")
        if val_pairs
        else None
    )
    cache_seconds = time.perf_counter() - t0
    if cfg.early_stopping_patience and val_cache is None:
        raise ConfigError("early_stopping_patience needs val_pairs=.")

    params = [
        torch.zeros(model.d_model, dtype=torch.float32, device=model.device, requires_grad=True)
        for _ in chosen
    ]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = steps_per_epoch(len(pair_list), cfg) * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_with_warmup(s, cfg.warmup_steps, total)
    )
    run = BiPORun(cache_seconds=cache_seconds, cache_bytes=cache.nbytes)
    best_params: list[Tensor] | None = None
    best_score, since_best, start_epoch, global_step = -math.inf, 0, 0, 0
    ckpt_path = out / CHECKPOINT_NAME if out else None
    if resume and ckpt_path is not None:
        state = load_checkpoint(ckpt_path, cfg.to_dict(), chosen)
        with torch.no_grad():
            for p, saved in zip(params, state["params"]):
                p.copy_(saved.to(p.device))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, global_step = state["epoch"] + 1, state["global_step"]
        run.steps, run.epochs = list(state["steps"]), list(state["epochs"])
        best_score, since_best = state["best_score"], state["since_best"]
        run.best_epoch = state["best_epoch"]
        best_params = (
            [t.to(model.device) for t in state["best_params"]] if state["best_params"] else None
        )
    if out:
        out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "train_log.jsonl").open("a") if out else None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            plan = epoch_plan(cache.lengths, cfg, epoch)
            bar = progress_bar(plan, desc=f"BiPO epoch {epoch + 1}/{cfg.epochs}", enabled=progress)
            for step in bar:
                d = torch.tensor(step.d, dtype=torch.float32)
                m, nm = policy_logprobs(
                    model, cache, step.indices, chosen, params, d, cfg.autocast_bf16
                )
                idx = torch.tensor(step.indices)
                loss = bipo_loss(
                    m,
                    nm,
                    cache.ref_matching[idx].to(m.device),
                    cache.ref_not_matching[idx].to(m.device),
                    d.to(m).double(),
                    cfg.beta,
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                lr = opt.param_groups[0]["lr"]
                opt.step()
                sched.step()
                global_step += 1
                norm = float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in params)))
                rec = {
                    "epoch": epoch,
                    "step": global_step,
                    "loss": loss.item(),
                    "d": step.d[0],
                    "reward_margin": float(
                        (
                            (m - nm).detach().cpu()
                            - (cache.ref_matching[idx] - cache.ref_not_matching[idx])
                        ).mean()
                    ),
                    "vector_norm": norm,
                    "lr": lr,
                }
                if not (math.isfinite(rec["loss"]) and math.isfinite(norm)):
                    where = (
                        f" The last good checkpoint is {ckpt_path}."
                        if ckpt_path and ckpt_path.exists()
                        else ""
                    )
                    raise TrainingError(
                        f"BiPO diverged at epoch {epoch}, step {global_step}: loss={rec['loss']}, "
                        f"vector norm={norm}.{where} Fix: lower lr (now {cfg.lr}) or set "
                        "max_grad_norm."
                    )
                run.steps.append(rec)
                if log_file:
                    log_file.write(json.dumps({"type": "step", **rec}) + "\n")
                    log_file.flush()
                if on_step:
                    on_step(rec)
            ep: dict[str, Any] = {
                "epoch": epoch,
                "loss": sum(r["loss"] for r in run.steps[-len(plan) :]) / len(plan),
            }
            if val_cache is not None:
                ep.update(
                    validation_margins(
                        model, val_cache, chosen, params, autocast_bf16=cfg.autocast_bf16
                    )
                )
                if ep["score"] > best_score:
                    best_score, since_best, run.best_epoch = ep["score"], 0, epoch
                    best_params = [p.detach().clone() for p in params]
                else:
                    since_best += 1
            run.epochs.append(ep)
            if log_file:
                log_file.write(json.dumps({"type": "epoch", **ep}) + "\n")
                log_file.flush()
            if ckpt_path is not None:
                save_checkpoint(
                    ckpt_path,
                    {
                        "config": cfg.to_dict(),
                        "layers": chosen,
                        "epoch": epoch,
                        "global_step": global_step,
                        "params": [p.detach().cpu() for p in params],
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "steps": run.steps,
                        "epochs": run.epochs,
                        "best_score": best_score,
                        "since_best": since_best,
                        "best_epoch": run.best_epoch,
                        "best_params": [t.cpu() for t in best_params] if best_params else [],
                    },
                )
            if cfg.early_stopping_patience and since_best >= cfg.early_stopping_patience:
                run.stopped_early = True
                break
    finally:
        if log_file:
            log_file.close()
    final = (
        best_params
        if (cfg.select_best and best_params is not None)
        else [p.detach() for p in params]
    )
    hp = {
        **cfg.to_dict(),
        "layers": chosen,
        "n_train": len(pair_list),
        "n_val": len(val_pairs) if val_pairs else 0,
        "best_epoch": run.best_epoch,
        "epochs_run": len(run.epochs),
    }
    prov = Provenance(
        model_id=model.model_id,
        method="bipo",
        behavior=str(behavior),
        hyperparameters=hp,
        dataset_hash=str(getattr(pairs, "content_hash", "")),
    )
    run.vector = SteeringVector(
        {HookSite(layer): t.detach().float().cpu() for layer, t in zip(chosen, final)}, prov
    )
    run.seconds = time.perf_counter() - t0
    if out:
        run.vector.save(out / "vector.safetensors")
    return run


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


def _fit_bipo_method(
    model: Any, data: Sequence[Any], layers: Sequence[int], **kwargs: Any
) -> SteeringVector:
    cfg = kwargs.pop("config", None) or BiPOConfig(
        **{k: kwargs.pop(k) for k in list(kwargs) if k in BiPOConfig.__dataclass_fields__}
    )
    allowed = {"val_pairs", "out_dir", "resume", "behavior", "progress"}
    extra = {k: v for k, v in kwargs.items() if k in allowed}
    if len(list(layers)) == 1:
        return train_bipo(model, data, list(layers)[0], cfg, **extra)
    return train_bipo(model, data, None, cfg, layers=list(layers), **extra)


METHODS.register("bipo", _fit_bipo_method)
