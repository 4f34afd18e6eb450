"""Layer sweeps: fit each method at each layer, evaluate with judge-free metrics.

``sweep(model, data, methods, layers, multipliers, config=SweepConfig(...))`` runs in
three steps: :func:`~steerlab.analysis.sweep_plan.plan_sweep` checks the methods, layers
and multipliers and splits the data into fit and held-out parts; :func:`fit_cells` fits every (method, layer) cell of
the methods that read collected activations, one shared pass per group of methods that
read the same positions (CAA; freeform and PCA); :func:`run_cell` trains the cells of a
training method (BiPO, per layer, a few epochs) and evaluates each cell on the held-out
data with the registered judge-free metrics
(:data:`~steerlab.evaluation.metrics.METRICS`). The result is a frozen
:class:`SweepResult`. With ``config.out_dir`` every finished cell is written to disk
(:class:`~steerlab.analysis.cells.CellStore`) and a rerun skips it: an interrupted sweep
resumes, and a sweep can be extended with more layers or methods.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from steerlab.activations.norms import residual_norms
from steerlab.analysis.cells import CellStore
from steerlab.analysis.effects import effect_sizes
from steerlab.analysis.executors import CellExecutor, SerialExecutor
from steerlab.analysis.sweep_plan import SweepConfig, SweepPlan, plan_sweep
from steerlab.data.convert import as_pairs
from steerlab.errors import ConfigError
from steerlab.evaluation.metrics import METRICS, with_baseline
from steerlab.evaluation.multipliers import DEFAULT_MULTIPLIERS, vector_label
from steerlab.models.model import SteerlabModel
from steerlab.utils.progress import progress_bar
from steerlab.utils.versions import versions
from steerlab.vectors.fitting import METHODS, fit_vectors
from steerlab.vectors.vector import SteeringVector


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
        matched: the vectors compared at matched KL / strength
            (:func:`steerlab.analysis.matched.compare`), when computed; the report's
            findings then lead with it.
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
    matched: Any = None  # a MatchedComparison of the sweep's vectors (steerlab sweep adds it)

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


# --- fit ----------------------------------------------------------------------------------


def fit_cells(
    model: SteerlabModel, plan: SweepPlan, store: CellStore
) -> tuple[dict[tuple[str, int], SteeringVector], float]:
    """The vectors saved in ``store`` (when resuming) and those of every other cell of
    the methods fitted from collected activations (one pass per group of methods that
    read the same positions, over the layers that need it); and the seconds of those
    passes (recorded by an earlier run when nothing was left to fit)."""
    vectors: dict[tuple[str, int], SteeringVector] = {}
    for method, layer in plan.cells():
        saved = store.vector(method, layer)
        if saved is not None:
            vectors[(method, layer)] = saved
    shared = [m for m in plan.methods if not METHODS.get(m).trains]
    todo_layers = sorted({x for m in shared for x in plan.layers if (m, x) not in vectors})
    if not (shared and todo_layers):
        return vectors, store.fit_seconds() or 0.0
    t0 = time.perf_counter()
    need = [m for m in shared if any((m, x) not in vectors for x in todo_layers)]
    cfg = plan.config
    fitted = fit_vectors(model, plan.data.train, need, todo_layers, behavior=plan.data.name,
                         seed=cfg.seed, batch_size=cfg.batch_size, progress=cfg.progress)  # fmt: skip
    seconds = time.perf_counter() - t0
    for key, vec in fitted.items():
        if key not in vectors and key[1] in plan.layers:
            vectors[key] = vec
            store.save_vector(*key, vec)
    store.save_fit(seconds, todo_layers)
    return vectors, seconds


def train_cell(
    model: SteerlabModel, plan: SweepPlan, store: CellStore, method: str, layer: int
) -> tuple[SteeringVector, pd.DataFrame]:
    """Train a training method (BiPO) at one layer, resuming its checkpoint in the
    cell's directory; the vector and its training history."""
    cell = store.cell_dir(method, layer)
    run_dir = cell / method if cell is not None else None
    run = METHODS.get(method).train(
        model,
        as_pairs(plan.data.train),
        layer=layer,
        config=plan.config.bipo_config(),
        behavior=plan.data.name,
        out_dir=run_dir,
        resume=bool(run_dir and (run_dir / "checkpoint.pt").exists()),
        progress=False,
    )
    assert run.vector is not None
    hist = pd.DataFrame(run.steps)
    hist.insert(0, "layer", layer)
    hist.insert(0, "method", method)
    store.save_vector(method, layer, run.vector)
    store.save_training(method, layer, hist)
    return run.vector, hist


# --- evaluate -----------------------------------------------------------------------------


def baselines(model: SteerlabModel, plan: SweepPlan, store: CellStore) -> dict[str, pd.DataFrame]:
    """The unsteered model's scores (multiplier 0), once per metric, kept in ``store``."""
    out: dict[str, pd.DataFrame] = {}
    if 0.0 not in plan.multipliers:
        return out
    cfg = plan.config
    for key in cfg.metrics:
        saved = store.baseline(key)
        if saved is not None:
            out[key] = saved
            continue
        metric = METRICS.get(key)
        out[key] = metric.evaluate(model, metric.items(plan.data), None, [0.0],
                                   batch_size=cfg.batch_size, progress=False)  # fmt: skip
        store.save_baseline(key, out[key])
    return out


class LayerCaches:
    """The residual caches of the metrics that keep them (``Metric.caches``), shared by the
    cells of one layer: the margin's fast path computes the layers below a cell's vector
    and the unsteered log-probs once per layer instead of once per method. Holds one layer
    at a time (cells run layer-major); a Ray task gets its own, empty copy."""

    def __init__(self) -> None:
        self.layer: int | None = None
        self.by_metric: dict[str, dict[int, Any]] = {}

    def at(self, layer: int) -> dict[str, dict[int, Any]]:
        """Per metric key, the cache dict to pass as ``caches=`` for cells at ``layer``."""
        if layer != self.layer:
            self.layer, self.by_metric = layer, {}
        return self.by_metric


def evaluate_cell(
    model: SteerlabModel,
    plan: SweepPlan,
    vec: SteeringVector,
    baseline: dict[str, pd.DataFrame],
    caches: dict[str, dict[int, Any]] | None = None,
) -> pd.DataFrame:
    """Every metric of one vector at the non-zero multipliers, plus the shared baseline.
    ``caches`` (:meth:`LayerCaches.at`): residual caches of the same items to reuse."""
    parts = []
    for key in plan.config.metrics:
        metric = METRICS.get(key)
        part = None
        if plan.nonzero:
            kw = (
                {"caches": caches.setdefault(key, {})}
                if caches is not None and metric.caches
                else {}
            )
            part = metric.evaluate(model, metric.items(plan.data), vec, plan.nonzero,
                                   batch_size=plan.config.batch_size, progress=False,
                                   **kw)  # fmt: skip
        if key in baseline:
            part = with_baseline(part, baseline[key], vector_label(vec), vec)
        assert part is not None
        parts.append(part.assign(evaluation=key))
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(["evaluation", "metric", "multiplier"]).reset_index(drop=True)


@dataclass(frozen=True, eq=False)
class CellResult:
    """One finished cell: its summary rows, its vector (None when read back from disk),
    its training history (a trained method's), seconds, and whether it was on disk."""

    frame: pd.DataFrame
    vector: SteeringVector | None
    training: pd.DataFrame | None
    seconds: float
    skipped: bool


def run_cell(
    model: SteerlabModel,
    plan: SweepPlan,
    store: CellStore,
    vectors: Mapping[tuple[str, int], SteeringVector],
    baseline: dict[str, pd.DataFrame],
    norms: Mapping[int, float],
    method: str,
    layer: int,
    caches: LayerCaches | None = None,
) -> CellResult:
    """Read a finished cell back, or train its vector if needed (a training method) and
    evaluate it (rescaled to ``config.rescale`` x ``norms[layer]`` when set), reusing
    ``caches`` of earlier cells at the same layer."""
    t0 = time.perf_counter()
    if store.is_done(method, layer):
        frame, seconds = store.cell(method, layer)
        training = store.training(method, layer)
        return CellResult(frame, None, training, seconds + time.perf_counter() - t0, True)
    vec = vectors.get((method, layer))
    if vec is not None:
        training = store.training(method, layer)
    elif METHODS.get(method).trains:
        vec, training = train_cell(model, plan, store, method, layer)
    else:  # pragma: no cover - fit_cells covers every layer
        raise ConfigError(f"No {method} vector was fitted at layer {layer}.")
    rescale = plan.config.rescale
    applied = vec.normalized() * (rescale * norms[layer]) if rescale else vec
    frame = evaluate_cell(
        model, plan, applied, baseline, caches.at(layer) if caches is not None else None
    )
    store.save_cell(method, layer, frame, time.perf_counter() - t0)
    return CellResult(frame, vec, training, time.perf_counter() - t0, False)


# --- the sweep ----------------------------------------------------------------------------


def sweep(
    model: SteerlabModel,
    data: Any,
    methods: Sequence[str] = ("caa", "freeform", "pca", "bipo"),
    layers: Sequence[int] | None = None,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    config: SweepConfig | None = None,
    *,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
    executor: "CellExecutor | None" = None,
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
        executor: where the cells run (:mod:`steerlab.analysis.executors`): in this
            process (default) or as Ray tasks (``RayExecutor``), with the same results
            and the same resumable cell store.
    """
    cfg = config or SweepConfig()
    plan = plan_sweep(model, data, methods, layers, multipliers, cfg)
    store = CellStore(Path(cfg.out_dir) if cfg.out_dir else None, cfg.resume)
    t_start = time.perf_counter()
    fingerprint = plan.fingerprint(model)
    store.open(fingerprint, cfg.to_dict())
    baseline = baselines(model, plan, store)
    norms = residual_norms(model, plan.data.train, plan.layers) if cfg.rescale else {}
    vectors, fit_seconds = fit_cells(model, plan, store)

    frames: list[pd.DataFrame] = []
    training: list[pd.DataFrame] = []
    seconds: dict[str, float] = {}
    cells = plan.cells()
    caches = LayerCaches()  # shared by the cells of a layer in this process
    calls = [(plan, store, {k: v for k, v in vectors.items() if k == (m, x)}, baseline, norms,
              m, x, caches) for m, x in cells]  # fmt: skip
    runs = (executor or SerialExecutor()).map(model, run_cell, calls)
    for (method, layer), cell in progress_bar(
        zip(cells, runs), desc="sweep", enabled=cfg.progress, total=len(cells)
    ):
        if cell.vector is not None:
            vectors[(method, layer)] = cell.vector
        if cell.training is not None:
            training.append(cell.training)
        frames.append(cell.frame)
        seconds[f"{method}-L{layer}"] = cell.seconds
        if on_cell is not None:
            on_cell({"method": method, "layer": layer, "seconds": cell.seconds,
                     "skipped": cell.skipped,
                     "effects": effect_sizes(cell.frame, list(cfg.metrics))})  # fmt: skip
    frame = pd.concat(frames, ignore_index=True)
    frame["layer"] = frame["layer"].astype(object)
    train_frame = pd.concat(training, ignore_index=True) if training else pd.DataFrame()
    split = plan.data
    info = {
        "model_id": model.model_id,
        "d_model": model.d_model,
        "n_layers": model.n_layers,
        "behavior": split.name,
        "n_train": len(split.train),
        "n_test": len(split.test),
        "n_test_ab": len(split.test_ab),
        "n_judge": len(split.judge),
        "split": {
            "vector_train": "first n_train train pairs",
            "test": "test split",
            "judge_train": "last n_judge train pairs (disjoint)",
            **split.sizes(),
        },
        "data_hashes": split.hashes(),
        "residual_norms": norms,
        "fit_seconds": fit_seconds,
        "cell_seconds": seconds,
        "compute_seconds": fit_seconds + sum(seconds.values()),
        "seconds": time.perf_counter() - t_start,
        "out_dir": str(store.root) if store.root else None,
        "executor": getattr(executor, "name", "serial"),
        "versions": versions(),
    }
    result = SweepResult(frame=frame, vectors=dict(vectors), training=train_frame, config=cfg,
                         methods=plan.methods, layers=plan.layers, multipliers=plan.multipliers,
                         behavior=split.name, info=info)  # fmt: skip
    meta = {"fingerprint": fingerprint, "config": cfg.to_dict(), "methods": plan.methods,
            "layers": plan.layers, "multipliers": plan.multipliers, "info": info}  # fmt: skip
    store.save_result(frame, effect_sizes(frame), train_frame, meta)
    return result


__all__ = [
    "CellResult",
    "SweepResult",
    "evaluate_cell",
    "fit_cells",
    "run_cell",
    "sweep",
    "train_cell",
]
