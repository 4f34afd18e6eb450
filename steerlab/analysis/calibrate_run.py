"""The stages of :func:`steerlab.analysis.calibrate.calibrate` (fit, measure, choose, test).

Cost: one activation pass per kind of activation for the fitted methods at all layers;
one BiPO run per layer and learning rate; one neutral-text norm pass (cached on disk);
the validation and test margins through cached lower residuals (one cache per layer,
shared by every method and strength); the KL through cached lower residuals as well.
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from steerlab.analysis.calibrate import (
    CalibrateConfig,
    CalibrationResult,
    change_cis,
    choose,
    default_layers,
    paired_comparison,
    validation_table,
)
from steerlab.analysis.calibrate_prompt import (
    PROMPT,
    prompt_table,
    score_prompt,
    vector_methods,
    versus_prompt,
)
from steerlab.analysis.executors import CellExecutor, SerialExecutor
from steerlab.analysis.reliability import (
    bootstrap_indices,
    matched_kl,
    matched_strength,
    reliability,
)
from steerlab.data.neutral import load_neutral_set
from steerlab.evaluation.damage import kl_damage, logprob_changes
from steerlab.evaluation.likelihood_fast import likelihood_margin_fast
from steerlab.evaluation.multipliers import conditions, vector_label
from steerlab.models.model import SteerlabModel
from steerlab.steering.strength import (
    in_norm_units,
    strength_to_multiplier,
    vector_norms,
    with_recommended_strength,
)
from steerlab.vectors.vector import SteeringVector

Key = tuple[str, int]


def fit_all(
    model: SteerlabModel,
    behavior: str,
    cfg: CalibrateConfig,
    layers: Sequence[int],
    fit_pairs: list[Any],
    val_pairs: list[Any],
    stage: Callable[[str], None],
) -> tuple[dict[Key, SteeringVector], pd.DataFrame, dict[str, float]]:
    """Vectors per (method, layer), training histories and seconds per method."""
    from steerlab.vectors.fitting import METHODS, fit_vectors

    specs = {m: METHODS.get(m) for m in vector_methods(cfg.methods)}
    shared = [m for m, s in specs.items() if not s.trains]
    vectors: dict[Key, SteeringVector] = {}
    seconds: dict[str, float] = {}
    if shared:
        t = time.perf_counter()
        vectors.update(
            fit_vectors(
                model,
                fit_pairs,
                shared,
                layers,
                behavior=behavior,
                seed=cfg.seed,
                batch_size=cfg.batch_size,
            )
        )
        seconds["fit " + "+".join(shared)] = time.perf_counter() - t
        stage(f"fitted {', '.join(shared)} at layers {', '.join(map(str, layers))}")
    histories = []
    for method, spec in specs.items():
        if not spec.trains:
            continue
        t = time.perf_counter()
        for layer in layers:
            run = spec.train(
                model,
                fit_pairs,
                layer=layer,
                config=cfg.bipo_config(),
                val_pairs=val_pairs,
                behavior=behavior,
                progress=False,
            )
            vectors[(method, layer)] = run.vector
            for kind, recs in (("step", run.steps), ("epoch", run.epochs)):
                hist = pd.DataFrame(recs)
                hist.insert(0, "kind", kind)
                hist.insert(0, "layer", layer)
                hist.insert(0, "method", method)
                histories.append(hist)
            stage(f"trained {method} at layer {layer}")
        seconds["train " + method] = time.perf_counter() - t
    training = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    return vectors, training, seconds


#: (method, layer, learning rate): one calibration candidate; lr None: not trained.
Candidate = tuple[str, int, float | None]
Fitted = tuple[dict[Key, SteeringVector], pd.DataFrame, dict[str, float]]


def fit_candidates(
    cfg: CalibrateConfig, fit: Callable[[CalibrateConfig], Fitted]
) -> tuple[dict[Candidate, SteeringVector], pd.DataFrame, dict[str, float]]:
    """:func:`fit_all` (``fit(cfg)``) at each learning rate of ``cfg.learning_rates``:
    every method at the first, the training methods again at each other. Vectors keyed
    (method, layer, lr), lr None for methods that do not train; the training histories
    gain ``base_lr`` (the run's learning rate; the step records' ``lr`` is the
    schedule's); seconds summed per stage."""
    from steerlab.vectors.fitting import METHODS

    trained = tuple(m for m in vector_methods(cfg.methods) if METHODS.get(m).trains)
    vectors: dict[Candidate, SteeringVector] = {}
    frames: list[pd.DataFrame] = []
    seconds: dict[str, float] = {}
    for i, lr in enumerate(cfg.learning_rates):
        if i and not trained:
            break
        one = replace(cfg, bipo_lr=lr, bipo_lrs=(), **({"methods": trained} if i else {}))
        vecs, training, secs = fit(one)
        vectors.update(
            {(m, layer, lr if m in trained else None): v for (m, layer), v in vecs.items()}
        )
        if not training.empty:
            training.insert(1, "base_lr", lr)
            frames.append(training)
        for name, sec in secs.items():
            seconds[name] = seconds.get(name, 0.0) + sec
    return vectors, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(), seconds


def _test_table(
    test_items: pd.DataFrame, choices: pd.DataFrame, rel: pd.DataFrame, cfg: CalibrateConfig
) -> pd.DataFrame:
    """Per chosen method at its recommended strength: effect and both answers' changes
    with paired bootstrap CIs (same resampled test pairs for every method)."""
    rows = []
    idx = None
    shapes = rel.set_index("method")
    for c in choices[choices["status"] == "ok"].itertuples():
        sub = test_items[
            (test_items["method"] == c.method) & (test_items["strength"] == c.strength)
        ]
        sub = sub.sort_values("item")
        if idx is None:
            idx = bootstrap_indices(len(sub), cfg.n_boot, cfg.seed)
        row: dict[str, Any] = {
            "method": c.method,
            "layer": c.layer,
            "strength": c.strength,
            "multiplier": c.multiplier,
            "kl": c.val_kl,
            "n": len(sub),
        }
        row.update(change_cis(sub, idx))
        r = shapes.loc[c.method]
        row.update(
            {
                "anti_share": r["anti_share"],
                "anti_low": r["anti_low"],
                "anti_high": r["anti_high"],
                "shape": r["shape"],
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _lr_choice(lr: float | None, cfg: CalibrateConfig) -> str:
    """The criterion's words on the learning rate of a trained vector chosen among several."""
    if lr is None or len(cfg.learning_rates) < 2:
        return ""
    tried = ", ".join(f"{x:g}" for x in cfg.learning_rates)
    return f", learning rate {lr:g} chosen among {tried} on the same validation pairs"


@dataclass(frozen=True)
class LayerCell:
    """Calibration's work at one candidate layer (:func:`layer_cell`)."""

    vectors: dict[Candidate, SteeringVector]  # as fitted
    units: dict[Candidate, SteeringVector]  # the same in strength units
    training: pd.DataFrame
    val_items: pd.DataFrame
    kl: pd.DataFrame
    seconds: dict[str, float]


def layer_cell(
    model: SteerlabModel,
    behavior: str,
    cfg: CalibrateConfig,
    layer: int,
    fit_pairs: list[Any],
    val_pairs: list[Any],
    fitted: dict[Candidate, SteeringVector],
) -> LayerCell:
    """The training methods (at every learning rate) trained at ``layer``, beside
    ``fitted`` (the methods that do not train, fitted by the caller for every layer in one
    activation pass), all in strength units, with their validation margins and KL at
    every strength: one cell, computed from its arguments alone (on a Ray worker as in
    this process; the typical residual norms come from the caller's disk cache)."""
    from steerlab.vectors.fitting import METHODS

    vectors, training, seconds = dict(fitted), pd.DataFrame(), {}
    trained = tuple(m for m in vector_methods(cfg.methods) if METHODS.get(m).trains)
    if trained:
        one = replace(cfg, layers=(layer,), methods=trained)
        vecs, training, seconds = fit_candidates(
            one, lambda c: fit_all(model, behavior, c, [layer], fit_pairs, val_pairs, _quiet)
        )
        vectors.update(vecs)
    units = {k: in_norm_units(v, vector_norms(model, v)) for k, v in vectors.items()}
    t = time.perf_counter()
    kl = kl_damage(model, list(units.values()), cfg.strengths,
                   neutral=load_neutral_set(n=cfg.n_neutral), batch_size=cfg.batch_size)  # fmt: skip
    kl = kl.rename(columns={"multiplier": "strength"})
    seconds["KL on neutral text"] = time.perf_counter() - t
    t = time.perf_counter()
    frames, caches = [], {}  # the layer's residual cache, built once for every vector
    labels = [c.label for c in conditions(list(units.values()), (1.0,))]  # as in ``kl``
    for label, vec in zip(labels, units.values()):
        items = likelihood_margin_fast(model, val_pairs, vec, validation_grid(label, kl, cfg),
                                       batch_size=cfg.batch_size, progress=False,
                                       per_item=True, caches=caches)  # fmt: skip
        frames.append(items.assign(vector=label))  # lr variants keep the cell's "#2" labels
    val_items = pd.concat(frames, ignore_index=True).rename(columns={"multiplier": "strength"})
    seconds["validation margins"] = time.perf_counter() - t
    return LayerCell(vectors, units, training, val_items, kl, seconds)


def validation_grid(label: str, kl: pd.DataFrame, cfg: CalibrateConfig) -> tuple[float, ...]:
    """The strengths at which vector ``label`` (a label of ``kl``) is scored on the
    validation pairs: up to the largest one whose KL is within the cap. A point above the
    cap is never admissible, and the points after the last admissible candidate do not
    change whether it is (:func:`~steerlab.analysis.calibrate.admissible` walks the curve
    upwards), so the choice is the one a full grid gives. ``full_validation`` scores every
    strength (the report's frontier then shows the points above the cap)."""
    if cfg.full_validation:
        return tuple(cfg.strengths)
    mine = kl[(kl["vector"] == label) & (kl["strength"] > 0)]
    within = mine.loc[mine["kl"] <= cfg.kl_cap, "strength"]
    top = float(within.max()) if len(within) else 0.0
    return tuple(s for s in cfg.strengths if s <= top) or (0.0,)


def _quiet(text: str) -> None:
    """A stage callback that says nothing (a cell's stages are reported per layer)."""


def run_calibration(
    model: SteerlabModel,
    behavior: str,
    cfg: CalibrateConfig,
    fit_pairs: list[Any],
    val_pairs: list[Any],
    test_pairs: list[Any],
    stage: Callable[[str], None],
    executor: "CellExecutor | None" = None,
) -> CalibrationResult:
    """All stages; see :func:`steerlab.analysis.calibrate.calibrate`. The per-layer work
    (:func:`layer_cell`) runs on ``executor`` (default: this process)."""
    from steerlab.activations.norms import typical_norms
    from steerlab.vectors.fitting import METHODS

    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    layers = [s.layer for s in model.sites(cfg.layers or default_layers(model.n_layers))]
    cfg = cfg if cfg.layers else CalibrateConfig(**{**cfg.to_dict(), "layers": tuple(layers)})
    t = time.perf_counter()
    typical_norms(model, model.sites(layers), batch_size=cfg.batch_size)  # cached on disk
    timings["typical norms"] = time.perf_counter() - t
    fitted: dict[Candidate, SteeringVector] = {}
    shared = tuple(m for m in vector_methods(cfg.methods) if not METHODS.get(m).trains)
    if shared:  # one activation pass for every layer
        one = replace(cfg, methods=shared)
        vecs, _, secs = fit_all(model, behavior, one, layers, fit_pairs, val_pairs, stage)
        fitted = {(m, x, None): v for (m, x), v in vecs.items()}
        timings.update(secs)
    vectors: dict[Candidate, SteeringVector] = {}
    units: dict[Candidate, SteeringVector] = {}
    histories, val_frames, kl_frames = [], [], []
    calls = [(behavior, cfg, layer, fit_pairs, val_pairs,
              {k: v for k, v in fitted.items() if k[1] == layer}) for layer in layers]  # fmt: skip
    for layer, cell in zip(layers, (executor or SerialExecutor()).map(model, layer_cell, calls)):
        vectors.update(cell.vectors)
        units.update(cell.units)
        histories.append(cell.training)
        val_frames.append(cell.val_items)
        kl_frames.append(cell.kl)
        for name, sec in cell.seconds.items():
            timings[name] = timings.get(name, 0.0) + sec
        stage(f"layer {layer}: {len(cell.vectors)} vectors, validation margins and KL")
    training = pd.concat([h for h in histories if not h.empty] or [pd.DataFrame()],
                         ignore_index=True)  # fmt: skip
    val_items = pd.concat(val_frames, ignore_index=True)
    kl = pd.concat(kl_frames, ignore_index=True)
    neutral = load_neutral_set(n=cfg.n_neutral)

    labels = [c.label for c in conditions(list(units.values()), (1.0,))]
    lr_of = {label: math.nan if k[2] is None else k[2] for label, k in zip(labels, units)}
    validation = validation_table(val_items, kl, lr_of)
    choices = choose(validation, cfg.kl_cap)
    chosen: dict[str, SteeringVector] = {}
    picked: list[SteeringVector] = []
    mults = []
    for c in choices.itertuples():
        if c.status != "ok":
            mults.append(math.nan)
            continue
        key = (c.method, c.layer, None if math.isnan(c.lr) else float(c.lr))
        vec = vectors[key]
        picked.append(units[key])
        mults.append(strength_to_multiplier(vec, c.strength, vector_norms(model, vec)))
        chosen[c.method] = with_recommended_strength(
            vec,
            c.strength,
            kl=c.val_kl,
            kl_cap=cfg.kl_cap,
            criterion=f"largest mean validation margin gain ({len(val_pairs)} pairs) with "
            f"KL <= {cfg.kl_cap:g} nats/token and a monotonic curve" + _lr_choice(key[2], cfg),
        )
    choices["multiplier"] = mults

    t = time.perf_counter()
    if picked:
        items = likelihood_margin_fast(
            model,
            test_pairs,
            picked,
            cfg.strengths,
            batch_size=cfg.batch_size,
            progress=False,
            per_item=True,
        )
        test_items = logprob_changes(items).rename(columns={"multiplier": "strength"})
        labels = {vector_label(u) for u in picked}
        kl_test = kl[kl["vector"].isin(labels)]
        rel = reliability(test_items, n_boot=cfg.n_boot, seed=cfg.seed)
        test = _test_table(test_items, choices, rel, cfg)
        levels = tuple(sorted({*cfg.kl_levels, cfg.kl_cap}))
        matched = matched_kl(test_items, kl_test, levels, n_boot=cfg.n_boot, seed=cfg.seed)
        positive = [s for s in cfg.strengths if s > 0]
        matched_norm = matched_strength(test_items, positive, n_boot=cfg.n_boot, seed=cfg.seed)
        comparison = paired_comparison(test_items, kl_test, cfg.kl_cap, cfg.n_boot, cfg.seed)
    else:
        test_items = test = matched = matched_norm = rel = comparison = pd.DataFrame()
    timings["test"] = time.perf_counter() - t
    stage(f"test split ({len(test_pairs)} pairs)")
    prompting = versus = pd.DataFrame()
    if PROMPT in cfg.methods:
        t = time.perf_counter()
        p_items, p_kl = score_prompt(model, behavior, test_pairs, neutral, cfg.batch_size)
        prompting = prompt_table(p_items, p_kl, cfg.n_boot, cfg.seed)
        if not test_items.empty:
            versus = versus_prompt(test_items, kl_test, p_items, p_kl, cfg.n_boot, cfg.seed)
        timings["prompting"] = time.perf_counter() - t
        stage(f"prompting baseline ({len(test_pairs)} test pairs, KL {p_kl:.3f})")
    timings["total"] = time.perf_counter() - t_all
    return CalibrationResult(
        behavior=behavior,
        model_id=model.model_id,
        config=cfg,
        choices=choices,
        validation=validation,
        test_items=test_items,
        test=test,
        matched=matched,
        matched_norm=matched_norm,
        reliability=rel,
        comparison=comparison,
        training=training,
        prompting=prompting,
        versus_prompt=versus,
        vectors=chosen,
        timings={k: float(np.round(v, 2)) for k, v in timings.items()},
    )
