"""What a sweep runs: its settings (:class:`SweepConfig`) and its checked plan.

:func:`plan_sweep` checks the methods, layers and multipliers of
:func:`~steerlab.analysis.sweeps.sweep` and splits the data into fit and held-out parts
(:func:`steerlab.data.splits.held_out`); the :class:`SweepPlan` lists the (method, layer)
cells and the fingerprint that a resumed sweep must match.
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from steerlab.data.pairs import HeldOutSplit
from steerlab.data.splits import held_out
from steerlab.errors import ConfigError, did_you_mean
from steerlab.evaluation.metrics import METRICS
from steerlab.evaluation.multipliers import check_multipliers
from steerlab.models.model import SteerlabModel, dtype_name
from steerlab.models.sites import HookSite
from steerlab.vectors.fitting import METHODS


def bipo_config_of(settings: Any, **extra: Any) -> Any:
    """The :class:`~steerlab.vectors.bipo.BiPOConfig` of a sweep-like config: its
    ``bipo_epochs``, ``bipo_lr``, ``bipo_warmup_steps``, ``bipo_batch_size`` and ``seed``
    (``extra``: further BiPOConfig fields). Shared by :class:`SweepConfig` and
    :class:`~steerlab.analysis.calibrate.CalibrateConfig`."""
    from steerlab.vectors.bipo import BiPOConfig

    return BiPOConfig(
        epochs=settings.bipo_epochs,
        lr=settings.bipo_lr,
        warmup_steps=settings.bipo_warmup_steps,
        batch_size=settings.bipo_batch_size,
        seed=settings.seed,
        **extra,
    )


@dataclass(frozen=True)
class SweepConfig:
    """Settings of :func:`~steerlab.analysis.sweeps.sweep` (methods, layers and
    multipliers are its arguments).

    n_train: training pairs per cell (the first N of the train split; None: all).
    n_test: held-out pairs and A/B items to evaluate on (None: all).
    n_judge: train pairs set aside (the last ones, disjoint from the fitted ones) to fit
        a classifier judge on, recorded in the sweep's info; 0: none.
    metrics: judge-free metrics to compute (keys of
        :data:`~steerlab.evaluation.metrics.METRICS`: 'margin', 'ab', through cached lower
        residuals; 'margin_plain' and 'ab_plain' give the same numbers 2-3x slower).
    bipo_epochs: BiPO epochs per layer (short; the paper uses 20).
    bipo_lr: BiPO learning rate (40x the paper's 5e-4, to make up for ~100x fewer steps).
    bipo_warmup_steps: warm-up steps of BiPO's cosine schedule.
    bipo_batch_size: BiPO pairs per step.
    batch_size: sequences per forward pass in collection and evaluation.
    seed: seeds data splits, A/B orders and BiPO.
    rescale: None (default, as the paper): vectors are applied as fitted. A number:
        each vector is rescaled to that fraction of the mean residual-stream norm at its
        layer before evaluation, so methods and layers are compared at equal relative
        strength (the multiplier then reads as a multiple of that fraction).
    out_dir: where each finished cell is saved (None: nothing is written).
    resume: with out_dir, skip cells that are already on disk.
    progress: show a progress bar over the cells.
    """

    n_train: int | None = 64
    n_test: int | None = 32
    n_judge: int = 0
    metrics: tuple[str, ...] = ("margin", "ab")
    bipo_epochs: int = 2
    bipo_lr: float = 2e-2
    bipo_warmup_steps: int = 4
    bipo_batch_size: int = 4
    batch_size: int = 16
    seed: int = 0
    rescale: float | None = None
    out_dir: str | None = None
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"SweepConfig.{name}={v!r}: use a positive int or None (all).")
        if isinstance(self.n_judge, bool) or not isinstance(self.n_judge, int) or self.n_judge < 0:
            raise ConfigError(f"SweepConfig.n_judge={self.n_judge!r}: use an int >= 0.")
        metrics = (self.metrics,) if isinstance(self.metrics, str) else tuple(self.metrics)
        object.__setattr__(self, "metrics", metrics)
        if not metrics:
            raise ConfigError(f"SweepConfig.metrics is empty; use some of {METRICS.names()}.")
        for m in metrics:
            METRICS.get(m)
        if self.out_dir is not None:
            object.__setattr__(self, "out_dir", str(self.out_dir))
        for name in ("bipo_epochs", "bipo_batch_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SweepConfig.{name}={getattr(self, name)!r} must be >= 1.")
        if self.bipo_warmup_steps < 0:
            raise ConfigError(
                f"SweepConfig.bipo_warmup_steps={self.bipo_warmup_steps} must be >= 0."
            )
        if self.rescale is not None and not (self.rescale > 0 and math.isfinite(self.rescale)):
            raise ConfigError(
                f"SweepConfig.rescale={self.rescale!r}: use a positive fraction such as 0.1, "
                "or None to apply the vectors as fitted."
            )
        if not (self.bipo_lr > 0 and math.isfinite(self.bipo_lr)):
            raise ConfigError(f"SweepConfig.bipo_lr={self.bipo_lr!r} must be a positive number.")

    def bipo_config(self) -> Any:
        return bipo_config_of(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_layers(n_layers: int, k: int = 8) -> tuple[int, ...]:
    """About ``k`` evenly spaced layers, skipping the first and last."""
    step = max(1, n_layers // k)
    return tuple(range(step, n_layers - 1, step)) or (0,)


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(str(m) for m in methods))
    if not out:
        raise ConfigError(f"No methods given; use some of {', '.join(METHODS.names())}.")
    for m in out:
        if m not in METHODS:
            raise ConfigError(
                f"Unknown method {m!r}.{did_you_mean(m, METHODS.names())} "
                f"Valid methods: {', '.join(METHODS.names())}."
            )
    return out


@dataclass(frozen=True, eq=False)
class SweepPlan:
    """What a sweep runs: checked methods, layers and multipliers, and the held-out
    split it fits on and evaluates on."""

    methods: tuple[str, ...]
    layers: tuple[int, ...]
    multipliers: tuple[float, ...]
    data: HeldOutSplit
    config: SweepConfig

    @property
    def nonzero(self) -> tuple[float, ...]:
        return tuple(m for m in self.multipliers if m != 0.0)

    def cells(self) -> list[tuple[str, int]]:
        """Every (method, layer), layer-major."""
        return [(m, x) for x in self.layers for m in self.methods]

    def fingerprint(self, model: SteerlabModel) -> dict[str, Any]:
        """What the numbers depend on (a resumed sweep must match it)."""
        cfg = self.config
        keep = ("n_train", "n_test", "bipo_epochs", "bipo_lr", "bipo_warmup_steps",
                "bipo_batch_size", "seed")  # fmt: skip
        out = {
            "model_id": model.model_id,
            "behavior": self.data.name,
            "data": self.data.hashes(),
            "multipliers": list(self.multipliers),
            **{k: getattr(cfg, k) for k in keep},
        }
        if cfg.rescale is not None:
            out["rescale"] = cfg.rescale
        if cfg.n_judge:
            out["n_judge"] = cfg.n_judge
        # the precision, where not fp32 (an fp32 sweep keeps the fingerprint it had before
        # these keys): a bf16 model, or BiPO under bf16 autocast (the default on CUDA GPUs
        # with bf16), changes every number of the cells it runs
        if model.dtype != torch.float32:
            out["dtype"] = dtype_name(model.dtype)
        if {"bipo", "reps"} & set(self.methods):
            from steerlab.vectors.bipo.trainer import autocast_dtype

            low = autocast_dtype(cfg.bipo_config(), model.device)
            if low is not None:
                out["bipo_autocast"] = dtype_name(low)
        return out


def plan_sweep(
    model: SteerlabModel,
    data: Any,
    methods: Sequence[str],
    layers: Sequence[int] | None,
    multipliers: Sequence[float],
    config: SweepConfig,
) -> SweepPlan:
    """Check the arguments of :func:`sweep` and split ``data`` (``config.n_train``,
    ``n_test``, ``seed``)."""
    method_list = _check_methods(methods)
    layer_list = tuple(
        HookSite(int(x)).resolve(model.n_layers).layer
        for x in (default_layers(model.n_layers) if layers is None else layers)
    )
    layer_list = tuple(dict.fromkeys(layer_list))
    if not layer_list:
        raise ConfigError("layers= is empty; give at least one layer, e.g. layers=[8, 12, 14].")
    mults = check_multipliers(multipliers)
    split = held_out(data, config.n_train, config.n_test, config.seed, config.n_judge)
    return SweepPlan(method_list, layer_list, mults, split, config)


__all__ = ["SweepConfig", "SweepPlan", "default_layers", "plan_sweep"]
