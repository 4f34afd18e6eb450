"""``calibrate()``: which layer, and how strong? Chosen on validation, reported on test.

For one behavior, several methods and candidate layers:

1. the behavior's training pairs are split (seeded) into pairs to fit on and a
   validation split; the test split is only used for the final report;
2. CAA / freeform / PCA are fitted at every candidate layer from one activation pass per
   kind of activation; training methods (BiPO, RePS) are trained at each layer (and at
   each learning rate of ``bipo_lrs``), with the validation pairs for early stopping /
   best-epoch selection when configured;
3. every vector is scaled to norm units (multiplier = strength, see
   :mod:`steerlab.steering.strength`) and its validation margins are measured at every
   strength through the cached-residual fast path, and its damage (KL on the neutral
   text, :mod:`steerlab.evaluation.damage`) likewise;
4. per method, the (layer, strength) -- and learning rate, for training methods -- with
   the largest mean validation effect ``margin(s) - margin(0)`` is chosen among the
   points whose KL is under the cap and whose mean validation curve rises monotonically
   from 0 up to ``s`` (:func:`choose`);
5. the chosen vectors are scored on the test pairs at every strength: the effect at the
   recommended strength with paired bootstrap CIs, the change of log p(matching) and of
   log p(not matching) separately, the anti-steerable share, and the comparison at
   matched KL and at matched relative norm (:mod:`steerlab.analysis.reliability`).

Each chosen vector carries its recommended strength in its provenance
(``steer(model, vec, strength="recommended")``).
"""

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steerlab.analysis.reliability import (
    DEFAULT_KL_LEVELS,
    bootstrap_ci,
    bootstrap_indices,
    curves,
)
from steerlab.errors import ConfigError
from steerlab.utils.grids import strength_grid
from steerlab.vectors.vector import SteeringVector

CHOICE_COLUMNS = (
    "method",
    "layer",
    "lr",
    "strength",
    "multiplier",
    "val_effect",
    "val_kl",
    "status",
)

#: The columns that identify one validation curve (``lr``: NaN for untrained methods).
CURVE_KEYS = ("method", "lr", "layer")


def change_cis(items: pd.DataFrame, idx: np.ndarray) -> dict[str, float]:
    """Mean and bootstrap CI (resampled rows ``idx``) of the per-item changes of a
    :func:`~steerlab.evaluation.damage.logprob_changes` frame: ``effect`` (of the margin),
    ``d_logp_matching``, ``d_logp_not_matching``, each with ``_low`` / ``_high``."""
    out: dict[str, float] = {}
    for col, name in (
        ("d_margin", "effect"),
        ("d_logp_matching", "d_logp_matching"),
        ("d_logp_not_matching", "d_logp_not_matching"),
    ):
        mean, lo, hi = bootstrap_ci(items[col].to_numpy(dtype=float), idx)
        out.update({name: mean, f"{name}_low": lo, f"{name}_high": hi})
    return out


@dataclass(frozen=True)
class CalibrateConfig:
    """Settings of :func:`calibrate`.

    methods: vector methods to calibrate (registry names); ``"prompt"`` adds prompting
        (the behavior's eliciting system-prompt instruction) as an uncalibrated baseline.
    layers: candidate layers (None: 8 layers spread over the middle of the model).
    strengths: strengths swept (relative to the typical residual norm; 0 is added).
    kl_cap: damage cap in nats/token of KL on the neutral text (the choice respects it).
    kl_levels: KL levels of the matched-damage comparison on the test split.
    n_train: training pairs to fit on (None: all left after the validation split; BiPO's
        cost grows with it, once per layer).
    n_val: validation pairs carved from the training split (seeded).
    n_test: test pairs the report is computed on (first n of the test split).
    n_neutral: neutral texts for the KL (None: all 54; fewer is faster).
    seed: seeds the validation split, CAA's A/B order, BiPO and the bootstrap.
    n_boot: bootstrap resamples of the CIs.
    batch_size: sequences per forward pass.
    bipo_epochs: BiPO epochs per layer (the best validation epoch is kept).
    bipo_lr: BiPO learning rate (short runs need more than the paper's 5e-4).
    bipo_lrs: learning rates every training method (BiPO, RePS) is trained at; the
        validation choice picks one per method with its layer and strength (empty:
        ``bipo_lr`` only).
    bipo_batch_size: BiPO pairs per step.
    bipo_warmup_steps: warm-up steps of BiPO's cosine schedule.
    bipo_patience: stop BiPO after this many epochs with no better validation score (None: never).
    full_validation: score the validation margins at every strength; by default only up
        to each vector's largest strength within the KL cap (the rest cannot be chosen,
        so the choice is the same; the report's frontier then stops at the cap).
    """

    methods: tuple[str, ...] = ("caa", "freeform", "pca", "bipo")
    layers: tuple[int, ...] | None = None
    strengths: tuple[float, ...] = (0.0, 0.025, 0.05, 0.1, 0.2, 0.4)
    kl_cap: float = 0.2
    kl_levels: tuple[float, ...] = DEFAULT_KL_LEVELS
    n_train: int | None = 64
    n_val: int = 32
    n_test: int = 100
    n_neutral: int | None = 16
    seed: int = 0
    n_boot: int = 2000
    batch_size: int = 8
    bipo_epochs: int = 2
    bipo_lr: float = 2e-2
    bipo_lrs: tuple[float, ...] = field(
        default=(),
        metadata={
            "help": "Comma-separated BiPO/RePS learning rates, chosen on validation with "
            "layer and strength (default: --bipo-lr only)."
        },
    )
    bipo_batch_size: int = 4
    bipo_warmup_steps: int = 4
    bipo_patience: int | None = None
    full_validation: bool = False

    def __post_init__(self) -> None:
        if not [m for m in self.methods if m != "prompt"]:
            raise ConfigError(
                f"CalibrateConfig.methods={self.methods!r} has no vector method to calibrate; "
                "pass e.g. ('caa', 'bipo') ('prompt' is only a baseline beside them)."
            )
        strengths = strength_grid(self.strengths, "CalibrateConfig.strengths")
        object.__setattr__(self, "strengths", strengths)
        if not (self.kl_cap > 0 and math.isfinite(self.kl_cap)):
            raise ConfigError(f"CalibrateConfig.kl_cap={self.kl_cap!r} must be > 0 nats/token.")
        lrs = tuple(dict.fromkeys(float(x) for x in self.bipo_lrs))
        if not all(x > 0 and math.isfinite(x) for x in lrs):
            raise ConfigError(
                f"CalibrateConfig.bipo_lrs={self.bipo_lrs!r} needs finite learning rates > 0, "
                "e.g. (5e-3, 2e-2, 5e-2); () trains at bipo_lr only."
            )
        object.__setattr__(self, "bipo_lrs", lrs)
        for name in ("n_val", "n_test", "n_boot", "batch_size", "bipo_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"CalibrateConfig.{name}={getattr(self, name)} must be >= 1.")
        for name in ("n_train", "n_neutral"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"CalibrateConfig.{name}={value} must be >= 1 or None.")

    @classmethod
    def quick(cls, **overrides: Any) -> "CalibrateConfig":
        """About 2 minutes on the embedded model on 2 CPU cores: 2 layers, 4 strengths,
        24 pairs to fit, 12 validation and 16 test pairs, 6 neutral texts, 1 BiPO epoch."""
        base: dict[str, Any] = {
            "layers": (10, 14),
            "strengths": (0.0, 0.05, 0.1, 0.2),
            "n_train": 24,
            "n_val": 12,
            "n_test": 16,
            "n_neutral": 6,
            "n_boot": 500,
            "bipo_epochs": 1,
        }
        return cls(**{**base, **overrides})

    @property
    def learning_rates(self) -> tuple[float, ...]:
        """The learning rates training methods are trained at: ``bipo_lrs`` or ``bipo_lr``."""
        return self.bipo_lrs or (self.bipo_lr,)

    def bipo_config(self, lr: float | None = None) -> Any:
        """The training methods' config (at learning rate ``lr``; None: ``bipo_lr``)."""
        from steerlab.analysis.sweep_plan import bipo_config_of

        cfg = self if lr is None else replace(self, bipo_lr=lr)
        return bipo_config_of(cfg, early_stopping_patience=self.bipo_patience, select_best=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_layers(n_layers: int, k: int = 8) -> tuple[int, ...]:
    """``k`` layers spread from 1/5 to 3/4 of the depth (steering works best mid-model)."""
    lo, hi = max(1, n_layers // 5), max(1, (3 * n_layers) // 4)
    return tuple(sorted({int(round(x)) for x in np.linspace(lo, hi, k)}))


def admissible(validation: pd.DataFrame, kl_cap: float) -> pd.Series:
    """Rows of a validation table that a calibration may choose: strength > 0, KL within
    the cap, a positive effect, and a mean effect that rises strictly from strength 0 up
    to that strength within its curve (:data:`CURVE_KEYS`: method, lr if given, layer)."""
    ok = pd.Series(False, index=validation.index)
    keys = [k for k in CURVE_KEYS if k in validation]
    for _, g in validation.groupby(keys, sort=False, dropna=False):
        prev = -math.inf
        for idx, r in g[g["strength"] >= 0].sort_values("strength").iterrows():
            if r["effect"] <= prev:
                break  # the curve stopped rising: later points are not admissible
            prev = r["effect"]
            ok[idx] = r["strength"] > 0 and r["kl"] <= kl_cap and r["effect"] > 0
    return ok


def choose(validation: pd.DataFrame, kl_cap: float) -> pd.DataFrame:
    """Per method, the :func:`admissible` (layer, strength) -- and learning rate, when
    the table has an ``lr`` column -- with the largest mean validation effect (ties: the
    lower KL).

    ``validation``: columns ``method, layer, strength, effect, kl`` and optionally ``lr``
    (effect 0 at strength 0). Returns the :data:`CHOICE_COLUMNS` (``multiplier`` NaN
    here, ``lr`` NaN for untrained methods); methods without an admissible point get
    ``status`` explaining why and NaN strength.
    """
    ok = admissible(validation, kl_cap)
    rows = []
    for method, g in validation.groupby("method", sort=False):
        cand = g[ok[g.index]]
        if cand.empty:
            rows.append(
                {
                    "method": method,
                    "layer": None,
                    "lr": math.nan,
                    "strength": math.nan,
                    "multiplier": math.nan,
                    "val_effect": math.nan,
                    "val_kl": math.nan,
                    "status": "no strength raises the validation margin monotonically "
                    f"under KL {kl_cap:g}",
                }
            )
            continue
        best = cand.sort_values(["effect", "kl"], ascending=[False, True]).iloc[0]
        rows.append(
            {
                "method": method,
                "layer": best["layer"],
                "lr": best.get("lr", math.nan),
                "strength": best["strength"],
                "multiplier": math.nan,
                "val_effect": best["effect"],
                "val_kl": best["kl"],
                "status": "ok",
            }
        )
    out = pd.DataFrame(rows, columns=list(CHOICE_COLUMNS))
    out["layer"] = pd.Series([r["layer"] for r in rows], dtype=object)
    return out


def validation_table(
    items: pd.DataFrame, kl: pd.DataFrame, lrs: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Mean validation effect and KL per (method, layer, strength) from per-item margins
    (``x = strength``, vectors in norm units) and the KL frame of the same vectors;
    ``lrs``: the learning rate of each vector label (an ``lr`` column after ``layer``,
    NaN for labels not in it)."""
    mean = items.groupby(["vector", "method", "layer", "strength"], sort=False)["margin"].mean()
    frame = mean.reset_index()
    if lrs is not None:
        frame.insert(3, "lr", frame["vector"].map(lrs).astype(float))
    base = frame[frame["strength"] == 0.0].set_index("vector")["margin"]
    frame["effect"] = frame["margin"] - frame["vector"].map(base)
    kls = kl.set_index(["vector", "strength"])["kl"]
    frame["kl"] = [kls.get((v, s), math.nan) for v, s in zip(frame["vector"], frame["strength"])]
    return frame.drop(columns=["vector"])


@dataclass(frozen=True, eq=False)
class CalibrationResult:
    """What :func:`calibrate` found. Frames are tidy; see the module docstring.

    choices: per method the chosen layer / strength (and the equivalent multiplier), and
        the learning rate of a training method (``lr``; NaN for the others).
    validation: per (method, lr, layer, strength) the mean validation effect and KL
        (every learning rate tried: the table shows its effect).
    test_items: per test pair and strength, the chosen vectors' log-likelihoods and
        their changes (``d_logp_matching``, ``d_logp_not_matching``, ``d_margin``).
    test: per method at its recommended strength: effect and both answers' changes with
        paired bootstrap CIs, KL, anti-steerable share with CI, curve shape.
    matched: the test effect at matched KL (``target`` = KL level).
    matched_norm: the test effect at matched relative norm (``target`` = strength).
    reliability: per method, mean slope / anti-steerable share / shape on test.
    comparison: the leading method against each other one at the KL cap (paired CIs).
    training: BiPO (and other training methods') histories per layer.
    prompting: with ``"prompt"`` among the methods, prompting's one point on the test
        pairs (KL, effects with CIs, wrong-way share); see
        :mod:`steerlab.analysis.calibrate_prompt`.
    versus_prompt: each chosen vector minus prompting at prompting's own KL (paired CIs).
    vectors: per method, the chosen vector carrying its recommended strength.
    timings: seconds per stage.
    """

    behavior: str
    model_id: str
    config: CalibrateConfig
    choices: pd.DataFrame
    validation: pd.DataFrame
    test_items: pd.DataFrame
    test: pd.DataFrame
    matched: pd.DataFrame
    matched_norm: pd.DataFrame
    reliability: pd.DataFrame
    comparison: pd.DataFrame
    training: pd.DataFrame
    prompting: pd.DataFrame = field(default_factory=pd.DataFrame)
    versus_prompt: pd.DataFrame = field(default_factory=pd.DataFrame)
    vectors: Mapping[str, SteeringVector] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)

    def findings(self) -> list[str]:
        """Plain-language conclusions, most important first."""
        from steerlab.analysis.calibrate_findings import findings

        return findings(self)

    def save(self, out_dir: "str | Path") -> Path:
        """Write the frames (CSV), a summary JSON and the vectors under ``out_dir``."""
        from steerlab.analysis.calibrate_findings import save_result

        return save_result(self, Path(out_dir))


def _split(data: Any, cfg: CalibrateConfig) -> tuple[list[Any], list[Any], list[Any]]:
    from steerlab.data.behaviors import split_indices
    from steerlab.data.convert import as_pairs

    train = as_pairs(data.train)
    if len(train) < cfg.n_val + 2:
        raise ConfigError(
            f"{len(train)} training pairs cannot give {cfg.n_val} validation pairs and at "
            "least 2 to fit on; lower n_val."
        )
    n_fit = (
        len(train) - cfg.n_val if cfg.n_train is None else min(cfg.n_train, len(train) - cfg.n_val)
    )
    fit_idx, val_idx, _ = split_indices(len(train), cfg.n_val, cfg.seed, n_fit)
    test = as_pairs(data.test)[: cfg.n_test]
    return [train[i] for i in fit_idx], [train[i] for i in val_idx], test


def calibrate(
    model: Any,
    behavior: Any,
    methods: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    strengths: Sequence[float] | None = None,
    kl_cap: float | None = None,
    *,
    config: CalibrateConfig | None = None,
    on_stage: Callable[[str, float], None] | None = None,
    executor: Any = None,
) -> CalibrationResult:
    """Choose (layer, strength) per method under a damage cap; report on the test split.

    Args:
        model: a loaded :class:`~steerlab.models.model.SteerlabModel`.
        behavior: a behavior name (``steerlab.data.list_behaviors()``) or its
            :class:`~steerlab.data.pairs.BehaviorData`.
        methods, layers, strengths, kl_cap: override the ``config`` values.
        config: :class:`CalibrateConfig` (default settings when None).
        on_stage: called with (stage description, seconds so far) as stages finish.
        executor: where the per-layer cells run (:mod:`steerlab.analysis.executors`:
            this process by default, or Ray workers), with the same results.
    """
    from steerlab.analysis.calibrate_run import run_calibration

    cfg = config or CalibrateConfig()
    over: dict[str, Any] = {}
    if methods is not None:
        over["methods"] = tuple(methods)
    if layers is not None:
        over["layers"] = tuple(int(x) for x in layers)
    if strengths is not None:
        over["strengths"] = tuple(float(x) for x in strengths)
    if kl_cap is not None:
        over["kl_cap"] = float(kl_cap)
    cfg = replace(cfg, **over) if over else cfg
    if isinstance(behavior, str):
        from steerlab.data import load_pairs

        data = load_pairs(behavior, seed=cfg.seed)
    else:
        data = behavior
    fit_pairs, val_pairs, test_pairs = _split(data, cfg)
    t0 = time.perf_counter()

    def stage(text: str) -> None:
        if on_stage is not None:
            on_stage(text, time.perf_counter() - t0)

    return run_calibration(
        model, str(data.name), cfg, fit_pairs, val_pairs, test_pairs, stage, executor
    )


def paired_comparison(
    test_items: pd.DataFrame, kl: pd.DataFrame, level: float, n_boot: int, seed: int
) -> pd.DataFrame:
    """The method with the largest test effect at KL ``level`` against each other method:
    the difference of their mean per-item effects with a paired bootstrap CI."""
    from steerlab.analysis.reliability import strength_at_kl

    effects: dict[str, np.ndarray] = {}
    for c in curves(test_items, "strength", "margin", kl=kl):
        assert c.kl is not None
        s = strength_at_kl(c.x, c.kl, level)
        if not math.isnan(s):
            effects[c.method] = c.effects_at(s)
    if len(effects) < 2:
        return pd.DataFrame(columns=["leader", "other", "kl", "difference", "low", "high"])
    leader = max(effects, key=lambda m: float(effects[m].mean()))
    n = len(effects[leader])
    idx = bootstrap_indices(n, n_boot, seed)
    rows = []
    for other, eff in effects.items():
        if other != leader:
            d, lo, hi = bootstrap_ci(effects[leader] - eff, idx)
            rows.append(
                {
                    "leader": leader,
                    "other": other,
                    "kl": level,
                    "difference": d,
                    "low": lo,
                    "high": hi,
                }
            )
    return pd.DataFrame(rows)


__all__ = [
    "CalibrateConfig",
    "CURVE_KEYS",
    "CalibrationResult",
    "admissible",
    "calibrate",
    "choose",
    "default_layers",
    "paired_comparison",
    "validation_table",
]
