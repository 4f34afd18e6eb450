"""Layer sweeps: fit each method at each layer, evaluate with judge-free metrics.

``sweep(model, data, methods, layers, multipliers, config=SweepConfig(...))`` fits every
(method, layer) cell (CAA, freeform and PCA from shared activation collections, BiPO
trained per layer for a few epochs), evaluates it on held-out data with the registered
judge-free :data:`METRICS` (likelihood margin on pairs, A/B probability on items) and
returns a frozen :class:`SweepResult`. With ``config.out_dir`` every finished cell is
written to disk (vector, summary, BiPO training log) and a rerun skips it: an
interrupted sweep resumes, and a sweep can be extended with more layers or methods.
"""

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steerlab._registry import Registry
from steerlab.errors import ConfigError, EmptyInputError, did_you_mean
from steerlab.evaluation.multipliers import DEFAULT_MULTIPLIERS, check_multipliers, vector_label
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.utils.progress import progress_bar
from steerlab.vectors.vector import SteeringVector

# --- judge-free metrics ---------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A judge-free evaluation: ``evaluate(model, data, vectors, multipliers, batch_size=,
    progress=)`` returns the tidy frame ``vector, method, layer, multiplier, metric,
    value, sem, n``. ``data`` says what it scores (``'pairs'`` or ``'ab'`` items) and
    ``primary`` is the metric row that measures steering (used for effect sizes)."""

    name: str
    data: str
    primary: str
    evaluate: Callable[..., pd.DataFrame]
    description: str


def _margin(model: Any, data: Any, vectors: Any, multipliers: Any, **kw: Any) -> pd.DataFrame:
    from steerlab.evaluation.likelihood import likelihood_margin

    return likelihood_margin(model, data, vectors, multipliers, **kw)


def _margin_fast(model: Any, data: Any, vectors: Any, multipliers: Any, **kw: Any) -> pd.DataFrame:
    from steerlab.evaluation.likelihood_fast import likelihood_margin_fast

    return likelihood_margin_fast(model, data, vectors, multipliers, **kw)


def _ab(model: Any, data: Any, vectors: Any, multipliers: Any, **kw: Any) -> pd.DataFrame:
    from steerlab.evaluation.ab import ab_probability

    return ab_probability(model, data, vectors, multipliers, **kw)


METRICS: Registry[Metric] = Registry("metric")
METRICS.register(
    "margin",
    Metric(
        "margin",
        "pairs",
        "margin",
        _margin,
        "likelihood margin log p(matching) - log p(not matching) of held-out pairs",
    ),
)
METRICS.register(
    "margin_fast",
    Metric(
        "margin_fast",
        "pairs",
        "margin",
        _margin_fast,
        "the 'margin' numbers via packed pairs and cached lower residuals (about 2x cheaper; "
        "falls back to 'margin' where the fast path does not apply)",
    ),
)
METRICS.register(
    "ab",
    Metric("ab", "ab", "p_matching", _ab, "P(matching letter) of held-out A/B items"),
)


def primary_metric(name: str) -> str:
    """The summary row that measures steering for a metric key or a row name."""
    if name in METRICS:
        return METRICS.get(name).primary
    return name


def resolve_metric(metric: "str | Metric") -> Metric:
    """A :class:`Metric` from its registered name (or the metric itself)."""
    if isinstance(metric, Metric):
        return metric
    return METRICS.get(str(metric))


def metric_items(data: Any, metric: "str | Metric", n: int | None = None, seed: int = 0) -> Any:
    """The held-out items a metric scores: test pairs, or A/B items (``test_ab``, else
    the pairs turned into A/B items with ``pairs_to_ab(seed)``), the first ``n``."""
    from steerlab.data.pairs import BehaviorData, pairs_to_ab
    from steerlab.vectors.freeform import as_pairs

    m = resolve_metric(metric)
    if isinstance(data, BehaviorData):
        pairs = data.test
        ab = data.test_ab
    else:
        items = list(data)
        if not items:
            raise EmptyInputError("No evaluation items given.")
        pairs = as_pairs(items)
        ab = items if hasattr(items[0], "choices") else None
    pairs = list(pairs)[:n] if n else list(pairs)
    if m.data == "pairs":
        return pairs
    if ab is None:
        return list(pairs_to_ab(pairs, seed))
    return list(ab)[:n] if n else list(ab)


def evaluate_named(
    model: SteerlabModel,
    items: Any,
    vectors: Mapping[str, SteeringVector],
    multipliers: Sequence[float],
    metric: "str | Metric" = "margin",
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> pd.DataFrame:
    """Evaluate each named vector across ``multipliers`` on ``items``.

    The unsteered model (multiplier 0) is evaluated once and shared. Returns the metric's
    tidy frame plus a ``name`` column (the key in ``vectors``).
    """
    m = resolve_metric(metric)
    mults = check_multipliers(multipliers)
    nonzero = [x for x in mults if x != 0.0]
    base = (
        m.evaluate(model, items, None, [0.0], batch_size=batch_size, progress=False)
        if 0.0 in mults
        else None
    )
    frames = []
    for name, vec in progress_bar(list(vectors.items()), desc=m.name, enabled=progress):
        parts = []
        if nonzero:
            parts.append(
                m.evaluate(model, items, vec, nonzero, batch_size=batch_size, progress=False)
            )
        if base is not None:
            b = base.copy()
            b["vector"] = parts[0]["vector"].iloc[0] if parts else name
            b["method"] = vec.method
            b["layer"] = pd.Series([_layer_of(vec)] * len(b), dtype=object)
            parts.insert(0, b)
        f = pd.concat(parts, ignore_index=True)
        f.insert(0, "name", name)
        frames.append(f)
    if not frames:
        raise EmptyInputError("evaluate_named() got no vectors.")
    out = pd.concat(frames, ignore_index=True)
    out["layer"] = out["layer"].astype(object)
    return out


def _layer_of(vec: SteeringVector) -> Any:
    from steerlab.evaluation.multipliers import vector_layer

    return vector_layer(vec)


# --- effect sizes -------------------------------------------------------------------------

EFFECT_COLUMNS = (
    "vector",
    "method",
    "layer",
    "metric",
    "slope",
    "delta",
    "at_min",
    "at_zero",
    "at_max",
    "monotonic",
    "n_multipliers",
)


def effect_sizes(frame: pd.DataFrame, metrics: "str | Sequence[str] | None" = None) -> pd.DataFrame:
    """How strongly each vector steers each metric, from a tidy summary frame.

    One row per ``(vector, method, layer, metric)``: ``slope`` (least-squares slope of
    the value over the multipliers), ``delta`` (value at the largest minus value at the
    smallest multiplier), ``at_min / at_zero / at_max``, ``monotonic`` (``'up'``,
    ``'down'`` or ``'no'`` over the sorted multipliers) and ``n_multipliers``.
    ``metrics`` selects metric rows (``'margin'``, ``'ab'`` map to their primary rows).
    """
    sub = frame
    if metrics is not None:
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        wanted = [primary_metric(m) for m in names]
        sub = frame[frame["metric"].isin(wanted)]
        if sub.empty:
            raise ConfigError(
                f"No rows for metrics {wanted}; the frame has {sorted(frame['metric'].unique())}."
            )
    rows = []
    for key, g in sub.groupby(["vector", "method", "layer", "metric"], sort=False, dropna=False):
        g = g.sort_values("multiplier")
        x, y = g["multiplier"].to_numpy(float), g["value"].to_numpy(float)
        ok = np.isfinite(y)
        slope = float(np.polyfit(x[ok], y[ok], 1)[0]) if ok.sum() >= 2 else float("nan")
        zero = g.loc[g["multiplier"] == 0.0, "value"]
        steps = np.diff(y)
        mono = "up" if (steps > 0).all() else "down" if (steps < 0).all() else "no"
        rows.append(
            {
                **dict(zip(("vector", "method", "layer", "metric"), key)),
                "slope": slope,
                "delta": float(y[-1] - y[0]) if len(y) >= 2 else float("nan"),
                "at_min": float(y[0]),
                "at_zero": float(zero.iloc[0]) if len(zero) else float("nan"),
                "at_max": float(y[-1]),
                "monotonic": mono if len(y) >= 2 else "no",
                "n_multipliers": len(y),
            }
        )
    out = pd.DataFrame(rows, columns=list(EFFECT_COLUMNS))
    out["layer"] = out["layer"].astype(object)
    return out


# --- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepConfig:
    """Settings of :func:`sweep` (methods, layers and multipliers are its arguments).

    n_train: training pairs per cell (the first N of the train split; None: all).
    n_test: held-out pairs and A/B items to evaluate on (None: all).
    metrics: judge-free metrics to compute (keys of :data:`METRICS`: 'margin', 'ab',
        'margin_fast': the margin numbers, about 2x cheaper).
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
        from steerlab.vectors.bipo import BiPOConfig

        return BiPOConfig(
            epochs=self.bipo_epochs,
            lr=self.bipo_lr,
            warmup_steps=self.bipo_warmup_steps,
            batch_size=self.bipo_batch_size,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- data ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SweepData:
    """What a sweep fits on and evaluates on."""

    behavior: str
    train: list[Any]
    test: list[Any]
    test_ab: list[Any]
    data_hashes: Mapping[str, str] = field(default_factory=dict)

    def hashes(self) -> dict[str, str]:
        return dict(self.data_hashes)


def _sweep_data(behavior: str, train: Any, test: Any, ab: Any) -> SweepData:
    parts = {"train": train, "test": test, "test_ab": ab}
    hashes = {k: content_hash(v) for k, v in parts.items()}
    return SweepData(behavior, list(train), list(test), list(ab), hashes)


def content_hash(items: Any) -> str:
    """``items.content_hash`` when the dataset has one, else a sha256 of their repr."""
    h = getattr(items, "content_hash", None)
    if isinstance(h, str):
        return h
    digest = hashlib.sha256()
    for it in items:
        digest.update(repr(it).encode())
    return digest.hexdigest()


def sweep_data(data: Any, n_train: int | None, n_test: int | None, seed: int = 0) -> SweepData:
    """Train / held-out pairs / A/B items from a :class:`BehaviorData` or a sequence.

    A ``BehaviorData`` gives its train split and test split (and ``test_ab`` when it has
    one). A plain sequence of pairs or A/B items is split with a seeded shuffle: ``n_test``
    (default half) held out, ``n_train`` (default the rest) for fitting.
    """
    from steerlab.data.behaviors import split_indices
    from steerlab.data.pairs import BehaviorData, pairs_to_ab
    from steerlab.vectors.freeform import as_pairs

    if isinstance(data, BehaviorData):
        train = data.train.head(n_train) if n_train else data.train
        test = data.test.head(n_test) if n_test else data.test
        if data.test_ab is not None:
            ab = data.test_ab.head(n_test) if n_test else data.test_ab
        else:
            ab = pairs_to_ab(test, seed)
        return _sweep_data(data.name, train, test, ab)
    items = list(data)
    if len(items) < 2:
        raise EmptyInputError(
            f"A sweep needs at least 2 pairs (some to fit, some to evaluate); got {len(items)}."
        )
    n = len(items)
    k_test = min(n_test or n // 2, n // 2) or 1
    k_train = min(n_train or n - k_test, n - k_test)
    tr, te, _ = split_indices(n, k_test, seed, k_train)
    train = [items[i] for i in tr]
    test_items = [items[i] for i in te]
    test = as_pairs(test_items)
    is_ab = hasattr(test_items[0], "choices")
    ab = test_items if is_ab else list(pairs_to_ab(test, seed))
    behavior = str(getattr(data, "name", "unknown"))
    return _sweep_data(behavior, train, test, ab)


# --- fitting -------------------------------------------------------------------------------


def fit_vectors(
    model: SteerlabModel,
    train: Sequence[Any],
    methods: Sequence[str],
    layers: Sequence[int],
    *,
    behavior: str = "unknown",
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[tuple[str, int], SteeringVector]:
    """One-layer vectors ``{(method, layer): vector}`` of activation-based methods.

    Each method runs once over all ``layers`` (activations at every layer come from the
    same forward passes). Freeform and PCA share one collection of response-mean
    activations; the vectors equal those of ``fit('caa'|'pca', ...)``. BiPO is trained
    per layer elsewhere (:func:`sweep`); pass it here and it is trained jointly
    multi-layer, which is not what a sweep wants.
    """
    from steerlab.activations.collect import collect
    from steerlab.vectors.fitting import fit, mean_difference, pca_direction, vector_from_acts
    from steerlab.vectors.freeform import as_pairs

    layers = [int(x) for x in layers]
    out: dict[tuple[str, int], SteeringVector] = {}
    multi: dict[str, SteeringVector] = {}
    rest = list(dict.fromkeys(methods))
    if "freeform" in rest and "pca" in rest:  # both read response-mean activations
        acts = collect(
            model, as_pairs(train), layers, "response_mean", batch_size=batch_size,
            progress=progress,
        )  # fmt: skip
        multi["freeform"] = vector_from_acts(
            acts,
            "freeform",
            lambda a, s: mean_difference(a.matching[s], a.not_matching[s]),
            behavior,
        )
        multi["pca"] = vector_from_acts(
            acts, "pca", lambda a, s: pca_direction(a.differences(s)), behavior, {"seed": seed}
        )
        rest = [m for m in rest if m not in ("freeform", "pca")]
    for method in rest:
        multi[method] = fit(
            method,
            model,
            train,
            layers,
            behavior=behavior,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
    for method, vec in multi.items():
        for layer in layers:
            out[(method, layer)] = vec.at_site(HookSite(layer).resolve(model.n_layers))
    return out


# --- the sweep -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SweepResult:
    """A finished sweep.

    Attributes:
        frame: tidy summary of every cell: ``vector, method, layer, multiplier, metric,
            value, sem, n, evaluation`` (the multiplier-0 rows are the shared unsteered
            baseline, repeated per cell).
        vectors: ``{(method, layer): vector}``.
        training: BiPO training history: ``method, layer, epoch, step, loss,
            reward_margin, vector_norm, lr``.
        config, methods, layers, multipliers, behavior: what was run.
        info: provenance: model id, data hashes and sizes, seconds per cell, versions.
    """

    frame: pd.DataFrame
    vectors: Mapping[tuple[str, int], SteeringVector]
    training: pd.DataFrame
    config: SweepConfig
    methods: tuple[str, ...]
    layers: tuple[int, ...]
    multipliers: tuple[float, ...]
    behavior: str
    info: Mapping[str, Any] = field(default_factory=dict)

    def effects(self, metric: str = "margin") -> pd.DataFrame:
        """:func:`effect_sizes` of one metric (``'margin'``, ``'ab'`` or a row name)."""
        return effect_sizes(self.frame, metric)

    def best(self, metric: str = "margin", by: str = "slope") -> pd.DataFrame:
        """Per method, the layer that steers ``metric`` most (largest ``by``)."""
        eff = self.effects(metric)
        if by not in ("slope", "delta"):
            raise ConfigError(f"by={by!r}: use 'slope' or 'delta'.")
        idx = eff.groupby("method", sort=False)[by].idxmax()
        return eff.loc[idx.dropna().astype(int)].reset_index(drop=True)

    def table(self, metric: str = "margin", value: str = "slope") -> pd.DataFrame:
        """``value`` of the effect sizes as a layer x method table."""
        eff = self.effects(metric)
        return eff.pivot_table(index="layer", columns="method", values=value, sort=True)


def _fingerprint(model: SteerlabModel, data: SweepData, cfg: SweepConfig, mults: tuple) -> dict:
    keep = ("n_train", "n_test", "bipo_epochs", "bipo_lr", "bipo_warmup_steps",
            "bipo_batch_size", "seed")  # fmt: skip
    out = {
        "model_id": model.model_id,
        "behavior": data.behavior,
        "data": data.hashes(),
        "multipliers": list(mults),
        **{k: getattr(cfg, k) for k in keep},
    }
    if cfg.rescale is not None:
        out["rescale"] = cfg.rescale
    return out


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    from steerlab.vectors.io import atomic_write_bytes

    atomic_write_bytes(path, frame.to_csv(index=False).encode())


def _write_json(obj: Any, path: Path) -> None:
    from steerlab.vectors.io import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=1, default=str).encode())


def _read_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    if "layer" in frame:
        frame["layer"] = frame["layer"].astype(object)
    return frame


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    from steerlab.vectors.fitting import METHODS

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


def _baselines(
    model: SteerlabModel, sdata: SweepData, cfg: SweepConfig, out: Path | None
) -> dict[str, pd.DataFrame]:
    """The unsteered model's scores (multiplier 0), once per metric, cached in ``out``."""
    baseline: dict[str, pd.DataFrame] = {}
    for key in cfg.metrics:
        path = out / f"baseline-{key}.csv" if out else None
        if path is not None and cfg.resume and path.exists():
            baseline[key] = _read_csv(path)
            continue
        metric = METRICS.get(key)
        items = sdata.test if metric.data == "pairs" else sdata.test_ab
        baseline[key] = metric.evaluate(
            model, items, None, [0.0], batch_size=cfg.batch_size, progress=False
        )
        if path is not None:
            _write_csv(baseline[key], path)
    return baseline


def _bipo_cell(
    model: SteerlabModel,
    sdata: SweepData,
    cfg: SweepConfig,
    method: str,
    layer: int,
    cell: Path | None,
) -> tuple[SteeringVector, pd.DataFrame]:
    """Train BiPO at one layer (resuming its checkpoint in ``cell``); vector and steps."""
    from steerlab.vectors.bipo import fit_bipo_run
    from steerlab.vectors.freeform import as_pairs

    bipo_dir = cell / "bipo" if cell is not None else None
    run = fit_bipo_run(
        model,
        as_pairs(sdata.train),
        layer=layer,
        config=cfg.bipo_config(),
        behavior=sdata.behavior,
        out_dir=bipo_dir,
        resume=bool(bipo_dir and (bipo_dir / "checkpoint.pt").exists()),
        progress=False,
    )
    assert run.vector is not None
    hist = pd.DataFrame(run.steps)
    hist.insert(0, "layer", layer)
    hist.insert(0, "method", method)
    if cell is not None:
        run.vector.save(cell / "vector.safetensors")
        _write_csv(hist, cell / "training.csv")
    return run.vector, hist


def _evaluate_cell(
    model: SteerlabModel,
    sdata: SweepData,
    cfg: SweepConfig,
    vec: SteeringVector,
    layer: int,
    nonzero: tuple[float, ...],
    baseline: dict[str, pd.DataFrame],
) -> pd.DataFrame:
    """Every metric of one vector at the non-zero multipliers, plus the shared baseline."""
    parts = []
    for key in cfg.metrics:
        metric = METRICS.get(key)
        items = sdata.test if metric.data == "pairs" else sdata.test_ab
        part = None
        if nonzero:
            part = metric.evaluate(
                model, items, vec, nonzero, batch_size=cfg.batch_size, progress=False
            )
        if key in baseline:
            base = baseline[key].copy()
            base["vector"] = vector_label(vec)
            base["method"] = vec.method
            base["layer"] = pd.Series([layer] * len(base), dtype=object)
            part = base if part is None else pd.concat([base, part], ignore_index=True)
        assert part is not None
        parts.append(part.assign(evaluation=key))
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(["evaluation", "metric", "multiplier"]).reset_index(drop=True)


def residual_norms(
    model: SteerlabModel, pairs: Sequence[Any], layers: Sequence[int], n: int = 16,
    batch_size: int = 16,
) -> dict[int, float]:  # fmt: skip
    """Mean L2 norm of ``resid_post`` over the response tokens of up to ``n`` pairs'
    matching answers, per layer (the scale that :attr:`SweepConfig.rescale` refers to)."""
    from steerlab.activations.batch import length_sorted_batches, right_pad
    from steerlab.activations.capture import forward_to_sites
    from steerlab.activations.prompts import encode_pair
    from steerlab.vectors.freeform import as_pairs

    enc = [encode_pair(model, p)[0] for p in as_pairs(list(pairs)[:n])]
    if not enc:
        raise EmptyInputError("residual_norms() needs at least one pair.")
    sites = [HookSite(int(x)).resolve(model.n_layers) for x in layers]
    total = {s.layer: 0.0 for s in sites}
    count = 0
    for idx in length_sorted_batches([len(e) for e in enc], batch_size):
        batch = right_pad([enc[i] for i in idx], model.pad_token_id, model.device)
        acts = forward_to_sites(model, batch.ids, batch.attention_mask, sites)
        mask = batch.response_mask.to(model.device)
        count += int(mask.sum())
        for s in sites:
            total[s.layer] += float(acts[s].float().norm(dim=-1)[mask].sum())
    return {layer: t / max(count, 1) for layer, t in total.items()}


def default_layers(n_layers: int, k: int = 8) -> tuple[int, ...]:
    """About ``k`` evenly spaced layers, skipping the first and last."""
    step = max(1, n_layers // k)
    return tuple(range(step, n_layers - 1, step)) or (0,)


def sweep(
    model: SteerlabModel,
    data: Any,
    methods: Sequence[str] = ("caa", "freeform", "pca", "bipo"),
    layers: Sequence[int] | None = None,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    config: SweepConfig | None = None,
    *,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Fit each method at each layer and evaluate it across ``multipliers``.

    Args:
        data: a :class:`~steerlab.data.BehaviorData` (``load_pairs(name)``) or a
            sequence of pairs / A/B items (split into fit and held-out parts, seeded).
        methods: registered vector methods (``caa``, ``freeform``, ``pca``, ``bipo``).
        layers: layers (``resid_post``); default about 8 evenly spaced layers.
        multipliers: steering strengths; 0 (the unsteered model) is evaluated once.
        config: sizes, metrics, BiPO settings, ``out_dir`` for resumable results.
        on_cell: called after each cell with ``{method, layer, seconds, skipped,
            effects}`` (the CLI prints it).
    """
    cfg = config or SweepConfig()
    method_list = _check_methods(methods)
    layer_list = tuple(
        HookSite(int(x)).resolve(model.n_layers).layer
        for x in (default_layers(model.n_layers) if layers is None else layers)
    )
    layer_list = tuple(dict.fromkeys(layer_list))
    if not layer_list:
        raise ConfigError("layers= is empty; give at least one layer, e.g. layers=[8, 12, 14].")
    mults = check_multipliers(multipliers)
    sdata = sweep_data(data, cfg.n_train, cfg.n_test, cfg.seed)
    nonzero = tuple(m for m in mults if m != 0.0)
    out = Path(cfg.out_dir) if cfg.out_dir else None
    t_start = time.perf_counter()
    fingerprint = _fingerprint(model, sdata, cfg, mults)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        meta_path = out / "sweep.json"
        if meta_path.exists() and cfg.resume:
            old = json.loads(meta_path.read_text()).get("fingerprint")
            if old != json.loads(json.dumps(fingerprint, default=str)):
                raise ConfigError(
                    f"{out} holds a sweep with other settings ({old}); this one is "
                    f"{fingerprint}. Fix: use another out_dir, delete {out}, or pass "
                    "SweepConfig(resume=False) to overwrite its cells."
                )
        _write_json({"fingerprint": fingerprint, "config": cfg.to_dict()}, meta_path)

    baseline = _baselines(model, sdata, cfg, out) if 0.0 in mults else {}
    norms = residual_norms(model, sdata.train, layer_list) if cfg.rescale else {}

    def applied(vec: SteeringVector, layer: int) -> SteeringVector:
        if not cfg.rescale:
            return vec
        return vec.normalized() * (cfg.rescale * norms[layer])

    def cell_dir(method: str, layer: int) -> Path | None:
        return out / "cells" / f"{method}-L{layer}" if out else None

    def done(method: str, layer: int) -> bool:
        d = cell_dir(method, layer)
        return bool(d and cfg.resume and (d / "summary.csv").exists())

    # Activation-based vectors for every cell not on disk, in shared passes.
    vectors: dict[tuple[str, int], SteeringVector] = {}
    for method in method_list:
        for layer in layer_list:
            d = cell_dir(method, layer)
            if d is not None and cfg.resume and (d / "vector.safetensors").exists():
                vectors[(method, layer)] = SteeringVector.load(d / "vector.safetensors")
    todo_methods = [m for m in method_list if m != "bipo"]
    todo_layers = sorted(
        {layer for m in todo_methods for layer in layer_list if (m, layer) not in vectors}
    )
    fit_seconds = 0.0
    if todo_methods and todo_layers:
        t0 = time.perf_counter()
        need = [m for m in todo_methods if any((m, x) not in vectors for x in todo_layers)]
        fitted = fit_vectors(
            model,
            sdata.train,
            need,
            todo_layers,
            behavior=sdata.behavior,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            progress=cfg.progress,
        )
        fit_seconds = time.perf_counter() - t0
        for key, fitted_vec in fitted.items():
            if key in vectors or key[1] not in layer_list:
                continue
            vectors[key] = fitted_vec
            d = cell_dir(*key)
            if d is not None:
                fitted_vec.save(d / "vector.safetensors")
        if out is not None:
            _write_json({"seconds": fit_seconds, "layers": todo_layers}, out / "fit.json")
    elif out is not None and (out / "fit.json").exists():
        fit_seconds = float(json.loads((out / "fit.json").read_text())["seconds"])

    frames: list[pd.DataFrame] = []
    training: list[pd.DataFrame] = []
    seconds: dict[str, float] = {}
    cells = [(m, x) for x in layer_list for m in method_list]
    bar = progress_bar(cells, desc="sweep", enabled=cfg.progress)
    for method, layer in bar:
        t0 = time.perf_counter()
        d = cell_dir(method, layer)
        skipped = done(method, layer)
        if skipped:
            assert d is not None
            cell_frame = _read_csv(d / "summary.csv")
            if (d / "cell.json").exists():  # the time it took when it was computed
                t0 -= float(json.loads((d / "cell.json").read_text()).get("seconds", 0.0))
            if (d / "training.csv").exists():
                training.append(_read_csv(d / "training.csv"))
        else:
            if (method, layer) in vectors and d is not None and (d / "training.csv").exists():
                training.append(_read_csv(d / "training.csv"))
            if (method, layer) not in vectors:
                if method != "bipo":  # pragma: no cover - fit_vectors covers every layer
                    raise ConfigError(f"No {method} vector was fitted at layer {layer}.")
                vectors[(method, layer)], hist = _bipo_cell(model, sdata, cfg, method, layer, d)
                training.append(hist)
            vec = applied(vectors[(method, layer)], layer)
            cell_frame = _evaluate_cell(model, sdata, cfg, vec, layer, nonzero, baseline)
            if d is not None:
                _write_json({"seconds": time.perf_counter() - t0}, d / "cell.json")
                _write_csv(cell_frame, d / "summary.csv")
        frames.append(cell_frame)
        seconds[f"{method}-L{layer}"] = time.perf_counter() - t0
        if on_cell is not None:
            on_cell(
                {
                    "method": method,
                    "layer": layer,
                    "seconds": seconds[f"{method}-L{layer}"],
                    "skipped": skipped,
                    "effects": effect_sizes(cell_frame, list(cfg.metrics)),
                }
            )
    frame = pd.concat(frames, ignore_index=True)
    frame["layer"] = frame["layer"].astype(object)
    train_frame = pd.concat(training, ignore_index=True) if training else pd.DataFrame()
    info = {
        "model_id": model.model_id,
        "d_model": model.d_model,
        "n_layers": model.n_layers,
        "behavior": sdata.behavior,
        "n_train": len(sdata.train),
        "n_test": len(sdata.test),
        "n_test_ab": len(sdata.test_ab),
        "data_hashes": sdata.hashes(),
        "residual_norms": norms,
        "fit_seconds": fit_seconds,
        "cell_seconds": seconds,
        "compute_seconds": fit_seconds + sum(seconds.values()),
        "seconds": time.perf_counter() - t_start,
        "out_dir": str(out) if out else None,
        "versions": versions(),
    }
    result = SweepResult(
        frame=frame,
        vectors=dict(vectors),
        training=train_frame,
        config=cfg,
        methods=method_list,
        layers=layer_list,
        multipliers=mults,
        behavior=sdata.behavior,
        info=info,
    )
    if out is not None:
        _write_csv(frame, out / "results.csv")
        _write_csv(effect_sizes(frame), out / "effects.csv")
        if not train_frame.empty:
            _write_csv(train_frame, out / "training.csv")
        _write_json(
            {"fingerprint": fingerprint, "config": cfg.to_dict(), "methods": method_list,
             "layers": layer_list, "multipliers": mults, "info": info},
            out / "sweep.json",
        )  # fmt: skip
    return result


def versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers (for provenance)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("steerlab", "torch", "transformer-lens", "transformers", "numpy", "pandas",
                 "scikit-learn", "plotly"):  # fmt: skip
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


__all__ = [
    "METRICS",
    "Metric",
    "SweepConfig",
    "SweepData",
    "SweepResult",
    "content_hash",
    "default_layers",
    "effect_sizes",
    "fit_vectors",
    "evaluate_named",
    "metric_items",
    "primary_metric",
    "residual_norms",
    "resolve_metric",
    "sweep",
    "sweep_data",
    "versions",
]
