"""``BiPOTrainer``: one BiPO optimisation (Cao et al. 2024), exact objective, fast path.

One model copy: the reference log-probs come from the same frozen model without the
vector and are computed once; the residual stream below the steering layer is computed
once; each step runs only the layers above it, with the prompt shared by both responses,
a prompt prefix common to the batch computed once per sign of the vector (the pairs of
one sign share it) and the unembedding applied at response positions only
(:mod:`steerlab.activations.packed`).
Only the vector is trained.

Models the fast path cannot run (soft-capped logits, unusual heads) train on the plain
path with the same objective (:mod:`steerlab.vectors.bipo.plain`): the trainer takes
either kind of cache, :data:`AnyPairCache`.
"""

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from steerlab.activations.packed import (
    PairCache,
    autocast_to,
    batch_reference_logprobs,
    sequence_logprobs,
    shared_positions,
    sign_leaders,
    upper_token_logprobs,
)
from steerlab.errors import ConfigError, TrainingError
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.vectors.bipo.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from steerlab.vectors.bipo.config import BiPOConfig
from steerlab.vectors.bipo.loss import bipo_loss, cosine_with_warmup
from steerlab.vectors.bipo.plain import (
    PlainPairCache,
    plain_policy_logprobs,
    plain_reference_logprobs,
)
from steerlab.vectors.bipo.schedule import (
    Step,
    epoch_plan,
    steps_per_epoch,
    warn_if_warmup_covers_the_run,
)
from steerlab.vectors.vector import Provenance, SteeringVector

#: The cache of the fast path or of the plain path; the trainer runs the matching path.
AnyPairCache = PairCache | PlainPairCache


def _adds(layers: list[int], params: list[Tensor], d: Tensor) -> dict[HookSite, Tensor]:
    """``d * v_k`` at resid_post of every layer after the first."""
    return {HookSite(layer): d * v for layer, v in zip(layers[1:], params[1:])}


def policy_logprobs(
    model: SteerlabModel,
    cache: AnyPairCache,
    idx: Sequence[int],
    layers: list[int],
    params: list[Tensor],
    d: Tensor,
) -> tuple[Tensor, Tensor]:
    """Summed response log-probs of both sides with ``d * v`` added (d per example),
    under the cache's autocast (the one its reference log-probs were computed under)."""
    if isinstance(cache, PlainPairCache):
        return plain_policy_logprobs(model, cache, idx, layers, params, d)
    batch, resid = cache.batch(idx, model.pad_token_id, model.device)
    dd = d.to(model.device).view(-1, 1, 1)
    x = resid + (dd * params[0]).to(resid.dtype)
    # a prefix common to the rows is computed once per group of rows adding the same d * v
    leaders = sign_leaders(d)
    shared = shared_positions(batch, resid, leaders)
    with autocast_to(model.device, cache.autocast):
        adds = _adds(layers, params, dd)
        lp = upper_token_logprobs(model, x, batch, layers[0], adds, shared, leaders)
    return sequence_logprobs(lp.double() if lp.dtype != torch.float64 else lp, batch)


@torch.no_grad()
def reference_logprobs(
    model: SteerlabModel, cache: AnyPairCache, idx: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Summed response log-probs of pairs ``idx`` without a vector (on the CPU).

    Without autocast these are the cached ones. Under autocast low-precision results can
    depend on the batch's shape (up to ~1 nat per response in bf16 where a batch switches
    attention kernel), and only numbers that do not depend on it give the policy at
    ``v = 0`` the reference's numbers, hence a first loss of exactly log 2: the cached
    ones where the cache found its pairs batch-invariant (``cache.batch_invariant``: bf16
    on a CPU with every pair within the batched-products attention), else recomputed in
    exactly the batch ``idx`` the policy runs (one more forward per step).
    """
    if isinstance(cache, PlainPairCache):
        return plain_reference_logprobs(model, cache, idx)
    if cache.autocast is None or cache.batch_invariant:
        i = torch.as_tensor(list(idx))
        return cache.ref_matching[i], cache.ref_not_matching[i]
    return batch_reference_logprobs(model, cache, idx)


@torch.no_grad()
def validation_margins(
    model: SteerlabModel,
    cache: AnyPairCache,
    layers: list[int],
    params: list[Tensor],
    batch_size: int = 8,
) -> dict[str, float]:
    """Mean log p(matching) - log p(not matching) of held-out pairs at multipliers -1/0/+1."""
    out: dict[str, float] = {}
    n = len(cache.packed)
    batches = [list(range(s, min(n, s + batch_size))) for s in range(0, n, batch_size)]
    for mult in (-1.0, 1.0):
        total = 0.0
        for idx in batches:
            d = torch.full((len(idx),), mult)
            m, nm = policy_logprobs(model, cache, idx, layers, params, d)
            total += float((m - nm).sum())
        out[f"margin@{mult:+g}"] = total / n
    if cache.autocast is None or cache.batch_invariant:
        out["margin@0"] = float((cache.ref_matching - cache.ref_not_matching).mean())
    else:  # the reference in the same batches as the margins above
        refs = [reference_logprobs(model, cache, idx) for idx in batches]
        out["margin@0"] = sum(float((m - nm).sum()) for m, nm in refs) / n
    out["score"] = out["margin@+1"] - out["margin@-1"]
    return out


def bf16_by_default(device: "torch.device | str") -> bool:
    """Whether ``autocast_bf16=None`` turns bf16 on for ``device``: a CUDA device with
    bf16 support (not CPUs: see :class:`~steerlab.vectors.bipo.config.BiPOConfig`)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def autocast_dtype(config: BiPOConfig, device: "torch.device | str" = "cpu") -> torch.dtype | None:
    """The autocast of the upper layers on ``device``, for the policy and the reference
    alike (``config.autocast_bf16=None``: :func:`bf16_by_default`)."""
    on = config.autocast_bf16
    if on is None:
        on = bf16_by_default(device)
    return torch.bfloat16 if on else None


class BiPOTrainer:
    """One BiPO optimisation over cached pairs: the vector per layer, AdamW, the cosine
    schedule and the best validation state.

    Lifecycle: :meth:`restore` (optional: continue from the checkpoint), :meth:`step` for
    each batch of :meth:`plan`, :meth:`end_epoch` (validation, best state), :meth:`save`
    (the checkpoint), and :meth:`to_vector` at the end. The model is never modified.
    The objective is :meth:`loss` over the pairs and directions :meth:`batch_of` a step
    (:class:`~steerlab.vectors.bipo.reps.RePSTrainer` overrides both).
    """

    #: The vector's provenance method and the name in messages.
    method, label = "bipo", "BiPO"

    def __init__(
        self,
        model: SteerlabModel,
        cache: AnyPairCache,
        layers: list[int],
        config: BiPOConfig,
        *,
        val_cache: AnyPairCache | None = None,
        checkpoint_path: Path | None = None,
    ) -> None:
        for c in (cache, val_cache):
            want = autocast_dtype(config, model.device)
            if c is not None and c.autocast != want:
                raise ConfigError(
                    f"The pair cache was built with autocast={c.autocast}, but autocast_bf16="
                    f"{config.autocast_bf16} needs {want} on {model.device}: build it with "
                    "build_cache(..., autocast=autocast_dtype(config, model.device)) so the "
                    "reference and the policy log-probs run at the same precision."
                )
        self.model, self.cache, self.layers, self.config = model, cache, layers, config
        self.val_cache, self.checkpoint_path = val_cache, checkpoint_path
        self.params = [
            torch.zeros(model.d_model, dtype=torch.float32, device=model.device, requires_grad=True)
            for _ in layers
        ]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.lr, weight_decay=config.weight_decay
        )
        total = steps_per_epoch(len(cache.packed), config) * config.epochs
        warn_if_warmup_covers_the_run(config, total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_with_warmup(s, config.warmup_steps, total)
        )
        self.next_epoch, self.global_step = 0, 0
        self.steps: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self.best_score, self.since_best = -math.inf, 0
        self.best_epoch: int | None = None
        self.best_params: list[Tensor] | None = None
        self._epoch_losses: list[float] = []

    def restore(self) -> None:
        """Continue from :attr:`checkpoint_path` (written with the same config and layers)."""
        if self.checkpoint_path is None:
            raise ConfigError("resume=True needs out_dir= (where the checkpoint is).")
        ck = load_checkpoint(self.checkpoint_path, self.config.to_dict(), self.layers)
        with torch.no_grad():
            for p, saved in zip(self.params, ck.params):
                p.copy_(saved.to(p.device))
        self.optimizer.load_state_dict(ck.optimizer)
        self.scheduler.load_state_dict(ck.scheduler)
        self.next_epoch, self.global_step = ck.epoch + 1, ck.global_step
        self.steps, self.epochs = list(ck.steps), list(ck.epochs)
        self.best_score, self.since_best, self.best_epoch = (
            ck.best_score,
            ck.since_best,
            ck.best_epoch,
        )
        self.best_params = (
            [t.to(self.model.device) for t in ck.best_params] if ck.best_params else None
        )

    def plan(self) -> list[Step]:
        """The batches and directions of the next epoch."""
        return epoch_plan(self.cache.lengths, self.config, self.next_epoch)

    def batch_of(self, step: Step) -> tuple[list[int], Tensor]:
        """The pairs and directions ``d`` of one step's forward (BiPO: the plan's)."""
        return list(step.indices), torch.tensor(step.d, dtype=torch.float32)

    def loss(
        self, m: Tensor, nm: Tensor, ref_m: Tensor, ref_n: Tensor, d: Tensor, idx: list[int]
    ) -> Tensor:
        """The objective of one batch (BiPO: :func:`bipo_loss`)."""
        return bipo_loss(
            m, nm, ref_m.to(m.device), ref_n.to(m.device), d.to(m).double(), self.config.beta
        )

    def reward_margin(
        self, m: Tensor, nm: Tensor, ref_m: Tensor, ref_n: Tensor, d: Tensor
    ) -> float:
        """The logged mean change of the margin against the reference."""
        return float(((m - nm).detach().cpu() - (ref_m - ref_n)).mean())

    def step(self, step: Step) -> dict[str, Any]:
        """One optimiser step on ``step``'s pairs; returns the step's log record."""
        cfg, cache = self.config, self.cache
        idx, d = self.batch_of(step)
        m, nm = policy_logprobs(self.model, cache, idx, self.layers, self.params, d)
        ref_m, ref_n = reference_logprobs(self.model, cache, idx)
        if (
            cache.batch_invariant
            and self.global_step == 0
            and not any(p.any() for p in self.params)
        ):
            ref_m, ref_n = self._check_cached_reference(m, nm, ref_m, ref_n, idx)
            cache = self.cache
        loss = self.loss(m, nm, ref_m, ref_n, d, idx)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        norm = float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in self.params)))
        rec = {
            "epoch": self.next_epoch,
            "step": self.global_step,
            "loss": loss.item(),
            "d": step.d[0],
            "reward_margin": self.reward_margin(m, nm, ref_m, ref_n, d),
            "vector_norm": norm,
            "lr": lr,
        }
        if not (math.isfinite(rec["loss"]) and math.isfinite(norm)):
            path = self.checkpoint_path
            where = f" The last good checkpoint is {path}." if path and path.exists() else ""
            raise TrainingError(
                f"{self.label} diverged at epoch {self.next_epoch}, step {self.global_step}: "
                f"loss={rec['loss']}, vector norm={norm}.{where} Fix: lower lr (now {cfg.lr}) "
                "or set max_grad_norm."
            )
        self.steps.append(rec)
        self._epoch_losses.append(rec["loss"])
        return rec

    def _check_cached_reference(
        self, m: Tensor, nm: Tensor, ref_m: Tensor, ref_n: Tensor, idx: list[int]
    ) -> tuple[Tensor, Tensor]:
        """At ``v = 0`` the policy must give the cached reference's numbers bitwise;
        where it does not, the cache is not batch-invariant here after all: recompute the
        reference in each step's batch from now on (this one included), with a warning."""
        if torch.equal(m.detach().cpu(), ref_m) and torch.equal(nm.detach().cpu(), ref_n):
            return ref_m, ref_n
        warnings.warn(
            f"{self.label}: the first batch's log-probs at v = 0 differ from the cached "
            f"{self.cache.autocast} reference, so it depends on the batch on this machine: "
            "recomputing the reference in every step's batch (one more forward per step).",
            RuntimeWarning,
            stacklevel=3,
        )
        self.cache = replace(self.cache, batch_invariant=False)
        return reference_logprobs(self.model, self.cache, idx)

    def end_epoch(self) -> dict[str, Any]:
        """Close the epoch: mean loss, validation margins and best state; its log record."""
        losses, self._epoch_losses = self._epoch_losses, []
        ep: dict[str, Any] = {"epoch": self.next_epoch, "loss": sum(losses) / len(losses)}
        if self.val_cache is not None:
            ep.update(
                validation_margins(
                    self.model,
                    self.val_cache,
                    self.layers,
                    self.params,
                )
            )
            if ep["score"] > self.best_score:
                self.best_score, self.since_best, self.best_epoch = ep["score"], 0, self.next_epoch
                self.best_params = [p.detach().clone() for p in self.params]
            else:
                self.since_best += 1
        self.epochs.append(ep)
        self.next_epoch += 1
        return ep

    @property
    def should_stop(self) -> bool:
        """Early stopping: ``early_stopping_patience`` epochs without a better score."""
        patience = self.config.early_stopping_patience
        return bool(patience) and self.since_best >= (patience or 0)

    def checkpoint(self) -> Checkpoint:
        """The state after the last finished epoch."""
        return Checkpoint(
            config=self.config.to_dict(),
            layers=self.layers,
            epoch=self.next_epoch - 1,
            global_step=self.global_step,
            params=[p.detach().cpu() for p in self.params],
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            steps=self.steps,
            epochs=self.epochs,
            best_score=self.best_score,
            since_best=self.since_best,
            best_epoch=self.best_epoch,
            best_params=[t.cpu() for t in self.best_params] if self.best_params else [],
        )

    def save(self) -> None:
        """Write :meth:`checkpoint` to :attr:`checkpoint_path` (atomic; none: no-op)."""
        if self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, self.checkpoint())

    def to_vector(self, behavior: str = "unknown", dataset_hash: str = "") -> SteeringVector:
        """The trained vector (the best validation epoch's with ``select_best``)."""
        cfg = self.config
        final = (
            self.best_params
            if (cfg.select_best and self.best_params is not None)
            else [p.detach() for p in self.params]
        )
        hp = {
            **cfg.to_dict(),
            "layers": self.layers,
            "n_train": len(self.cache.packed),
            "n_val": len(self.val_cache.packed) if self.val_cache is not None else 0,
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.epochs),
        }
        prov = Provenance(
            model_id=self.model.model_id,
            method=self.method,
            behavior=behavior,
            hyperparameters=hp,
            dataset_hash=dataset_hash,
        )
        return SteeringVector(
            {HookSite(layer): t.detach().float().cpu() for layer, t in zip(self.layers, final)},
            prov,
        )
