"""``BiPOConfig``: the hyperparameters of BiPO training (defaults from the paper);
``RePSConfig``: the same trainer with the RePS objective (Wu et al. 2025)."""

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

from steerlab.errors import ConfigError


@dataclass(frozen=True)
class BiPOConfig:
    """BiPO (Cao et al. 2024) training settings.

    beta: DPO temperature of the objective (paper: 0.1).
    lr: AdamW learning rate (paper: 5e-4).
    weight_decay: AdamW weight decay (paper declares 0.05; its code passes none, i.e. 0).
    batch_size: preference pairs per optimiser step (paper: 4).
    epochs: passes over the training pairs (paper: 20 personas, 1 TruthfulQA, 10 jailbreak).
    warmup_steps: linear warm-up steps of the cosine schedule (paper: 100).
    direction: 'bi' draws d from {-1, +1} (BiPO); 'uni' fixes d = +1 (the paper's ablation).
    direction_sampling: 'per_step' (one d per batch, as the reference code) or 'per_example'.
    seed: seeds batch order and the d draws; same seed, same data -> same vector.
    autocast_bf16: run the layers above the steering layer under bf16 autocast (the
        reference too: cached once where it does not depend on the batch, else
        recomputed in every step's batch). None (default): on a CUDA GPU with bf16
        support, off elsewhere, so that a CPU run gives the same vector on every CPU to
        fp32 rounding (results and the cached cells of sweeps match across machines);
        True / False force it. On a CPU with native bf16 it is worth turning on: a
        160-pair epoch of the embedded model took 0.65-0.72x fp32's time on a Zen 4 EPYC
        in sessions 21-22 (an Intel CPU with AMX-BF16 measured no faster in session 7,
        with older code; ``benchmarks/bipo_speed.py``).
    max_grad_norm: clip the vector's gradient norm (None: no clipping, as the paper).
    early_stopping_patience: stop after this many epochs without a better validation
        score (None: never); needs validation pairs.
    select_best: return the vector of the best validation epoch instead of the last.
    bucket_size: length-sorted batching works inside random buckets of this many
        batches (1 = plain random batches).
    score_eos: end each response of a training / validation pair with the tokenizer's
        EOS token, scored like the response's other tokens (the reference code's
        tokenisation ends each response with EOS); False: the response text only.
    """

    beta: float = 0.1
    lr: float = 5e-4
    weight_decay: float = 0.05
    batch_size: int = 4
    epochs: int = 20
    warmup_steps: int = 100
    direction: Literal["bi", "uni"] = "bi"
    direction_sampling: Literal["per_step", "per_example"] = "per_step"
    seed: int = 0
    autocast_bf16: bool | None = None
    max_grad_norm: float | None = None
    early_stopping_patience: int | None = None
    select_best: bool = False
    bucket_size: int = 16
    score_eos: bool = False

    #: The objective the trainer optimises (selects the trainer class; not a field).
    objective: ClassVar[str] = "bipo"
    #: The direction samplings this objective accepts.
    samplings: ClassVar[tuple[str, ...]] = ("per_step", "per_example")

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.beta > 0 and math.isfinite(self.beta), f"beta={self.beta} must be > 0"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr={self.lr} must be > 0"),
            (self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0"),
            (self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1"),
            (self.epochs >= 1, f"epochs={self.epochs} must be >= 1"),
            (self.warmup_steps >= 0, f"warmup_steps={self.warmup_steps} must be >= 0"),
            (self.direction in ("bi", "uni"), f"direction={self.direction!r}: use 'bi' or 'uni'"),
            (
                self.direction_sampling in self.samplings,
                f"direction_sampling={self.direction_sampling!r}: use "
                + " or ".join(repr(x) for x in self.samplings),
            ),
            (self.bucket_size >= 1, f"bucket_size={self.bucket_size} must be >= 1"),
            (
                self.max_grad_norm is None or self.max_grad_norm > 0,
                f"max_grad_norm={self.max_grad_norm} must be > 0 or None",
            ),
            (
                self.early_stopping_patience is None or self.early_stopping_patience >= 1,
                f"early_stopping_patience={self.early_stopping_patience} must be >= 1 or None",
            ),
        ]
        checks += self._extra_checks()
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"{type(self).__name__}: {msg}.")

    def _extra_checks(self) -> list[tuple[bool, str]]:
        return []

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def reference(cls, **overrides: Any) -> "BiPOConfig":
        """The settings BiPO's reference code (github CaoYuanpu/BiPO, ``train.py``) trains
        with, ``overrides`` on top. Its trainer is TRL's DPO trainer on the Hugging Face
        ``Trainer``, so what the script does not pass takes those libraries' defaults:

        - ``beta=0.1``, ``lr=5e-4``, ``batch_size=4``, ``warmup_steps=100`` (cosine
          schedule): the script's arguments, as in the paper;
        - ``weight_decay=0.0``: the script declares 0.05 but never passes it to the
          trainer, whose default is 0;
        - ``epochs=20``: the paper's persona runs (the released vectors are ``ep20``);
        - ``max_grad_norm=1.0``: the ``Trainer``'s default gradient clipping;
        - ``bucket_size=1``: plain random batches (the ``Trainer``'s random sampler; no
          length-sorted batching);
        - ``score_eos=True``: the DPO tokenisation ends each response with EOS;
        - one ``d`` per step (``direction_sampling='per_step'``, BiPO's default here
          already) and fp32 (``autocast_bf16=False``, on every device).

        ``beta`` and ``direction_sampling`` are left to ``cls``: ``RePSConfig.reference()``
        keeps RePS's own objective settings with the reference code's optimisation."""
        settings: dict[str, Any] = {
            "lr": 5e-4,
            "weight_decay": 0.0,
            "batch_size": 4,
            "epochs": 20,
            "warmup_steps": 100,
            "max_grad_norm": 1.0,
            "bucket_size": 1,
            "score_eos": True,
            "autocast_bf16": False,
        }
        return cls(**{**settings, **overrides})


@dataclass(frozen=True)
class RePSConfig(BiPOConfig):
    """RePS, reference-free preference steering (Wu et al. 2025, arXiv 2505.20809),
    trained by the BiPO trainer (same packed pairs, cached residuals and fast path).

    Objective (as implemented; see :func:`~steerlab.vectors.bipo.loss.reps_loss`): per
    pair and direction ``d`` (+1: the vector added, the matching answer preferred; -1: the
    vector subtracted, the not-matching answer preferred),
    ``-log sigmoid(beta * (w * lp(pref)/|pref| - lp(dis)/|dis|) - gamma)`` with
    ``lp`` the summed log-probs under the model steered by ``d * v`` (no reference term
    in the margin: SimPO-style length-normalised log-likelihoods) and ``w`` a weight on
    the preferred answer from the unsteered model (``weighting``).

    Written without access to the paper; checked afterwards against public AxBench
    code (a fork of stanfordnlp/axbench, ``axbench/models/preference_model.py``, loss
    type ``scaled_simpo``, read for the objective only). What that code does, and where
    steerlab differs:
    - the weight: ``w = max(scaler * (log p_ref(dis) - log p_ref(pref)), 1)`` from
      summed unsteered log-probs, multiplying the preferred answer's length-normalised
      log-prob; no beta and no gamma in that loss. Here ``weighting='reference'`` with
      ``beta=1, gamma=0`` is that loss with ``scaler = 1``;
      ``'reference_mean'`` (per-token means) and ``'none'`` (w = 1) are our variants;
    - the length normaliser: that code divides by the attention-mask length of the whole
      sequence (prompt included); here by the response length in tokens;
    - the negative direction: that code either adds a negated sampled factor or, with
      ``null_it_out``, uses a suppression intervention; here the vector is subtracted as
      BiPO does, so that +/- multipliers mean the same for every method;
    - that code samples the steering factor from a configured list per example; here
      |d| = 1 (the vector's norm is learned, as BiPO's);
    - that code clips gradients at 1.0 with a linear schedule and no warm-up, its
      learning rates tuned per model; the shared fields keep BiPO's defaults here so
      that a comparison differs only in the objective (``RePSConfig.reference()`` gives
      the clipping).

    Fields beyond :class:`BiPOConfig` (whose fields and defaults it keeps, except these):
    beta: scale of the length-normalised margin (SimPO's beta; the AxBench RePS loss has
        none: 1.0 leaves the margin unscaled). BiPO's 0.1 does not carry over: BiPO's
        margin is of summed log-prob changes, this one of per-token log-likelihoods.
    gamma: target margin subtracted inside the sigmoid (SimPO's gamma; none in the
        AxBench RePS loss: 0.0).
    weighting: ``'reference'`` (the AxBench loss: the weight from summed unsteered
        log-probs), ``'reference_mean'`` (from per-token means) or ``'none'``.
    direction_sampling: ``'both'`` (default, the paper's objective: every pair in both
        directions each step, the loss the mean of the 2 x batch terms, i.e. half the
        paper's sum, which AdamW's update ignores), or BiPO's ``'per_step'`` /
        ``'per_example'`` draws of one direction. ``direction='uni'`` keeps only d = +1.
    """

    beta: float = 1.0
    # plain str (checked in __post_init__): one ConfigError for every bad value
    direction_sampling: str = "both"  # type: ignore[assignment]
    gamma: float = 0.0
    weighting: str = "reference"

    objective: ClassVar[str] = "reps"
    samplings: ClassVar[tuple[str, ...]] = ("both", "per_step", "per_example")
    weightings: ClassVar[tuple[str, ...]] = ("reference", "reference_mean", "none")

    def _extra_checks(self) -> list[tuple[bool, str]]:
        return [
            (math.isfinite(self.gamma), f"gamma={self.gamma} must be finite"),
            (
                self.weighting in self.weightings,
                f"weighting={self.weighting!r}: use " + ", ".join(repr(x) for x in self.weightings),
            ),
        ]

    @classmethod
    def from_bipo(cls, config: BiPOConfig, **changes: Any) -> "RePSConfig":
        """A RePS config with ``config``'s shared settings (optimiser, epochs, seed...)
        and RePS's own defaults for ``beta`` and ``direction_sampling``: how sweeps and
        ``calibrate`` (which build one BiPOConfig for every training method) train RePS."""
        if isinstance(config, RePSConfig):
            return cls(**{**config.to_dict(), **changes})
        own = {"beta", "direction_sampling"}
        shared = {f.name: getattr(config, f.name) for f in fields(BiPOConfig) if f.name not in own}
        return cls(**{**shared, **changes})
