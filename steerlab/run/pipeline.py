"""The main job: fit CAA / freeform / PCA / BiPO at one layer, evaluate, write a report.

``run_pipeline(RunConfig(...))`` loads the model and the behavior's data, fits the
vectors, evaluates them across the multipliers with the judge-free metrics (likelihood
margin, A/B probability) and with the offline classifier judge on open-ended answers,
and writes the report directory::

    report.html       self-contained report (figures, tables, configuration, provenance)
    results.csv/json  tidy results (evaluation, vector, method, layer, multiplier, metric...)
    effects.csv       steering effect (slope, delta) per method and metric
    generations.csv   open-ended answers with their judge scores
    vectors/*.safetensors, bipo/train_log.jsonl, judge.json
    config.json       configuration, provenance (model, data hashes, seeds, versions) and timings
    logs/run.log
"""

import datetime as _dt
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from steerlab.analysis.effects import effect_sizes
from steerlab.analysis.matched_findings import matched_findings, write_matched
from steerlab.analysis.projections import Projection, pca_projection
from steerlab.analysis.similarity import SimilarityResult, cosine_matrix
from steerlab.models.model import SteerlabModel
from steerlab.run.config import RunConfig
from steerlab.run.matched import judged_changes, judged_findings, judged_table, run_matched
from steerlab.utils.files import atomic_write_text
from steerlab.utils.versions import versions
from steerlab.vectors.fitting import METHODS, fit_vectors
from steerlab.vectors.vector import SteeringVector

log = logging.getLogger("steerlab.run")


@dataclass(frozen=True, eq=False)
class RunResult:
    """Everything ``steerlab run`` produced (also written to ``out_dir``).

    Attributes:
        results: tidy: ``evaluation ('margin' / 'ab' / 'judge'), vector, method, layer,
            multiplier, metric, value, sem, n``.
        vectors: ``{method: vector}``.
        training: BiPO steps (``step, loss, reward_margin, vector_norm, lr``) and
            ``training_epochs`` (per-epoch loss and validation margins).
        generations: one row per open-ended answer (with its judge score), generated at
            the matched comparison's strengths (``strength`` column), not at raw multipliers.
        judge: the classifier judge's held-out accuracy and sizes.
        similarity: cosines between the methods' vectors.
        matched: the methods compared at matched KL / strength (:mod:`steerlab.run.matched`).
        judged: the judge score per method and strength, its paired change vs strength 0
            with CIs over the questions and the KL there (``judged_changes``).
        timings: seconds per stage; provenance: model, data hashes, seeds, versions.
    """

    config: RunConfig
    out_dir: Path
    results: pd.DataFrame
    vectors: dict[str, SteeringVector]
    training: pd.DataFrame
    training_epochs: pd.DataFrame
    generations: pd.DataFrame
    judge: dict[str, Any]
    similarity: SimilarityResult | None
    timings: dict[str, float]
    provenance: dict[str, Any] = field(default_factory=dict)
    projection: Projection | None = None
    matched: Any = None  # steerlab.analysis.matched.MatchedComparison (None: skipped)
    judged: pd.DataFrame | None = None  # run.matched.judged_changes (None: no answers)

    def effects(self, evaluation: str | None = None) -> pd.DataFrame:
        """Effect sizes (slope, delta...) over the raw multipliers of the primary metric of
        each judge-free evaluation (the judged answers are at strengths: ``judged``)."""
        primary = {"margin": "margin", "ab": "p_matching"}
        raw = self.results
        frames = []
        for ev, metric in primary.items():
            if evaluation not in (None, ev):
                continue
            sub = raw[(raw["evaluation"] == ev) & (raw["metric"] == metric)]
            if not sub.empty:
                frames.append(effect_sizes(sub).assign(evaluation=ev))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def to_report(self, title: str | None = None) -> Any:
        """The run's :class:`~steerlab.reports.Report` (``report(result)`` calls this)."""
        return build_report(self, title)


class _Stages:
    """Times named stages, logs them and shows them with rich (when a console is given)."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("start: %s", name)
        t0 = time.perf_counter()
        if self.console is not None:
            with self.console.status(f"[bold]{name}[/]..."):
                yield
        else:
            yield
        dt = time.perf_counter() - t0
        self.timings[name] = dt
        log.info("done: %s (%.1f s)", name, dt)
        if self.console is not None:
            self.console.print(f"[green]✓[/] {name} [dim]({dt:.1f} s)[/]")


def _log_to(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def run_pipeline(
    config: RunConfig,
    *,
    model: SteerlabModel | None = None,
    console: Any = None,
    on_stage: Callable[[str, float], None] | None = None,
) -> RunResult:
    """Run the main job with ``config``; pass ``model`` to reuse a loaded model and a rich
    ``console`` for progress output. Returns the :class:`RunResult` (also on disk)."""
    import torch

    from steerlab.data import load_pairs
    from steerlab.data.pairs import training_record
    from steerlab.evaluation.ab_fast import ab_probability_fast
    from steerlab.evaluation.likelihood_fast import likelihood_margin_fast

    cfg = config
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    handler = _log_to(out / "logs" / "run.log")
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    stage = _Stages(console)
    t_all = time.perf_counter()
    try:
        log.info("config: %s", json.dumps(cfg.to_dict()))
        with stage("load model"):
            if model is None:
                import steerlab as sl

                model = sl.load_model(cfg.model, device=cfg.device)
        layer = model.site(cfg.layer).layer
        with stage("load data"):
            data = load_pairs(cfg.behavior, seed=cfg.seed)
            # vector-train (first n_train) / judge-train (last judge_train) / test: disjoint
            n_judge = cfg.judge_train if cfg.open_ended > 0 else 0
            split = data.split(cfg.n_train, cfg.n_test, cfg.seed, n_judge=n_judge)
            train, test, ab = split.train, split.test, split.test_ab
            val_end = min(cfg.n_train + min(8, cfg.n_test), len(data.train) - n_judge)
            val = data.train[cfg.n_train : val_end]
            questions = list(data.open_ended[: cfg.open_ended])
        vectors: dict[str, SteeringVector] = {}
        shared = [m for m in cfg.methods if not METHODS.get(m).trains]
        if shared:  # one activation pass per group of methods that read the same positions
            with stage(f"fit {', '.join(shared)}"):
                fitted = fit_vectors(model, list(train), shared, [layer], behavior=cfg.behavior,
                                     seed=cfg.seed, batch_size=cfg.batch_size)  # fmt: skip
                vectors.update({m: fitted[(m, layer)] for m in shared})
        steps, epochs = pd.DataFrame(), pd.DataFrame()
        for m in (m for m in cfg.methods if METHODS.get(m).trains):
            from steerlab.vectors.bipo import BiPOConfig

            with stage(f"train {m} ({cfg.bipo_epochs} epochs)"):
                bcfg = BiPOConfig(epochs=cfg.bipo_epochs, lr=cfg.bipo_lr,
                                  warmup_steps=cfg.bipo_warmup_steps, seed=cfg.seed)  # fmt: skip
                if (out / m).exists():
                    shutil.rmtree(out / m)
                run = METHODS.get(m).train(model, list(train), layer=layer, config=bcfg,
                                           val_pairs=list(val) or None, behavior=cfg.behavior,
                                           out_dir=out / m, progress=False)  # fmt: skip
                assert run.vector is not None
                vectors[m] = run.vector
                steps, epochs = pd.DataFrame(run.steps), pd.DataFrame(run.epochs)
        # which pairs each vector saw, so a judge's pairs can be checked against the files
        vectors = {m: v.with_hyperparameters(**training_record(train)) for m, v in vectors.items()}
        vec_list = [vectors[m] for m in cfg.methods]
        frames = []
        with stage("evaluate: likelihood margin"):
            # Cached residuals below the layer, packed pairs: same numbers, ~3x cheaper.
            f = likelihood_margin_fast(model, list(test), vec_list, cfg.multipliers,
                                       batch_size=cfg.batch_size, progress=False)  # fmt: skip
            frames.append(f.assign(evaluation="margin"))
        with stage("evaluate: A/B probability"):
            # The same, read at the answer position from cached lower residuals.
            f = ab_probability_fast(model, list(ab), vec_list, cfg.multipliers,
                                    batch_size=cfg.batch_size, progress=False)  # fmt: skip
            frames.append(f.assign(evaluation="ab"))
        matched = None
        if cfg.n_neutral > 0:
            with stage("matched comparison (strengths, KL on neutral text)"):
                named = {m: vectors[m] for m in cfg.methods}
                matched = run_matched(model, cfg, list(test), named)
        judge_info: dict[str, Any] = {}
        generations, judged = pd.DataFrame(), None
        if cfg.open_ended > 0 and questions:
            from steerlab.evaluation.judges.judge_pairs import fit_split_judge
            from steerlab.evaluation.open_ended import run_open_ended, summarize_open_ended

            with stage("fit classifier judge"):
                jtrain = split.judge  # disjoint from the vectors' pairs (fit() checks it)
                judge = fit_split_judge(data, split, n_judge, seed=cfg.seed)
                judge.save(out / "judge.json")
                judge_info = {"heldout_accuracy": judge.heldout_accuracy, "n_train": judge.n_train,
                              "n_test": judge.n_test, "embedder": judge.embedder_name,
                              "output": judge.output, "features": judge.features,
                              "n_judge_pairs": len(jtrain), "judge_pairs_hash": jtrain.content_hash,
                              "disjoint_from": "the vectors' training pairs (the first n_train)",
                              "gate": judge.gate.to_dict() if judge.gate else None}  # fmt: skip
            with stage(f"open-ended answers ({len(questions)} questions) + judge"):
                for name in ("open_ended.jsonl", "open_ended.scores.jsonl"):
                    (out / name).unlink(missing_ok=True)
                # at the matched comparison's strengths (matched norm), not raw multipliers
                generations = run_open_ended(model, questions, vec_list,
                                             out_path=out / "open_ended.jsonl",
                                             strengths=cfg.strengths,
                                             max_new_tokens=cfg.max_new_tokens, judge=judge,
                                             behavior=cfg.behavior, progress=False)  # fmt: skip
                frames.append(summarize_open_ended(generations).assign(evaluation="judge"))
                judged = judged_changes(generations, matched)
        with stage("PCA of held-out activations"):
            from steerlab.activations.collect import collect

            acts = collect(model, list(test), [layer], "response_mean",
                           batch_size=cfg.batch_size, progress=False)  # fmt: skip
            projection = pca_projection(acts, layer, vec_list, seed=cfg.seed)
        results = pd.concat(frames, ignore_index=True)
        results = results[["evaluation"] + [c for c in results.columns if c != "evaluation"]]
        results["layer"] = results["layer"].astype(object)
        sim = cosine_matrix(vec_list) if len(vec_list) > 1 else None
        timings = dict(stage.timings)
        timings["total"] = time.perf_counter() - t_all
        provenance = {
            "started": started,
            "model": {"id": model.model_id, "source": model.source, "d_model": model.d_model,
                      "n_layers": model.n_layers, "device": str(model.device),
                      "dtype": str(model.dtype), "load_seconds": model.load_seconds},
            "data": {"behavior": cfg.behavior, "notes": data.notes,
                     "train_hash": train.content_hash, "test_hash": test.content_hash,
                     "test_ab_hash": ab.content_hash, "n_train": len(train),
                     "n_test": len(test), "n_test_ab": len(ab), "n_val": len(val),
                     "n_judge": len(split.judge), "split": split.hashes(),
                     "open_ended_questions": questions},
            "seed": cfg.seed,
            "layer": layer,
            "judge": judge_info,
            "versions": versions(),
            "machine": {"platform": platform.platform(), "processor": platform.machine(),
                        "torch_threads": torch.get_num_threads()},
        }  # fmt: skip
        result = RunResult(cfg, out, results, vectors, steps, epochs, generations, judge_info,
                           sim, timings, provenance, projection, matched, judged)  # fmt: skip
        with stage("write report"):
            write_outputs(result)
        result.timings["total"] = time.perf_counter() - t_all
        atomic_write_text(
            out / "config.json", json.dumps(_config_json(result), indent=2, default=str)
        )
        log.info("finished in %.1f s", result.timings["total"])
        if on_stage is not None:
            for k, v in result.timings.items():
                on_stage(k, v)
        return result
    except BaseException as exc:  # the log says why the run stopped (never an empty logs/)
        log.error("run failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        raise
    finally:
        log.removeHandler(handler)
        handler.close()


def _config_json(result: RunResult) -> dict[str, Any]:
    return {
        "config": result.config.to_dict(),
        "provenance": result.provenance,
        "timings": result.timings,
        "vectors": {m: v.provenance.to_dict() for m, v in result.vectors.items()},
    }


def write_outputs(result: RunResult) -> None:
    """Write vectors, tables, generations, config.json and report.html to ``out_dir``."""
    out = result.out_dir
    for method, vec in result.vectors.items():
        vec.save(out / "vectors" / f"{method}-L{result.provenance['layer']}.safetensors")
    atomic_write_text(out / "results.csv", result.results.to_csv(index=False))
    if result.matched is not None:
        write_matched(out, result.matched)
    effects = result.effects()
    atomic_write_text(out / "effects.csv", effects.to_csv(index=False))
    if not result.generations.empty:
        atomic_write_text(out / "generations.csv", result.generations.to_csv(index=False))
    if result.judged is not None:
        atomic_write_text(out / "judge_changes.csv", result.judged.to_csv(index=False))
    payload = {
        "effects": json.loads(effects.to_json(orient="records")),
        "judge": result.judge,
        "results": json.loads(result.results.to_json(orient="records")),
    }
    atomic_write_text(out / "results.json", json.dumps(payload, indent=1))
    atomic_write_text(out / "config.json", json.dumps(_config_json(result), indent=2, default=str))
    result.to_report().save(out / "report.html")


def _findings(result: RunResult) -> str:
    lo, hi = min(result.config.multipliers), max(result.config.multipliers)
    eff = result.effects()
    lines = matched_findings(result.matched) if result.matched is not None else []
    if result.judged is not None:
        n_q = result.generations["question"].nunique()
        lines += judged_findings(result.judged, n_q)
    lines.append(
        "- Raw multipliers (vectors of different lengths: what each vector does at its own "
        "scale, not a ranking):"
    )
    names = {"margin": "likelihood margin", "ab": "P(matching letter)"}
    for ev, g in eff.groupby("evaluation", sort=False):
        parts = [
            f"{r.method} {r.at_min:.3g} / {r.at_zero:.3g} / {r.at_max:.3g} (slope {r.slope:.3g})"
            for r in g.itertuples()
        ]
        lines.append(f"- {names.get(str(ev), ev)} at x{lo:g} / 0 / x{hi:g}: " + "; ".join(parts))
    if result.judge:
        lines.append(
            f"- Classifier judge ({result.judge.get('embedder')} + logistic regression; score = "
            f"{result.judge.get('output', 'P(matching), rescaled to 1-4')}): held-out "
            f"accuracy {result.judge['heldout_accuracy']:.2f} on {result.judge['n_test']} "
            "texts of judge pairs disjoint from the vectors' training pairs."
        )
    lines.append(f"- Total time {result.timings.get('total', 0):.0f} s.")
    return "\n".join(lines)


def build_report(result: RunResult, title: str | None = None) -> Any:
    """Figures, tables and provenance of a run, as a :class:`~steerlab.reports.Report`."""
    from steerlab.reports import Report
    from steerlab.viz import figures as vf

    cfg, res = result.config, result.results
    layer = result.provenance.get("layer", cfg.layer)
    rep = Report(
        title or f"steerlab run: {cfg.behavior} at layer {layer}",
        f"{result.provenance.get('model', {}).get('id', cfg.model)} | methods "
        f"{', '.join(cfg.methods)} | multipliers {', '.join(f'{m:g}' for m in cfg.multipliers)}",
    )
    rep.add_heading("Findings").add_text(_findings(result))
    if result.matched is not None:
        rep.add_table(result.matched.table("kl"), title="Matched damage (KL on neutral text)",
                      caption="Each vector in strength units (|k v| / mean ||h||), its effect "
                      "where its KL reaches each level; paired 95% bootstrap CIs over the "
                      "held-out pairs.")  # fmt: skip
    rep.add_heading("Judge-free metrics")
    for ev, metric in (("margin", "margin"), ("ab", "p_matching")):
        sub = res[res["evaluation"] == ev]
        if not sub.empty:
            rep.add_figure(
                vf.multiplier_curves(sub, metric, error_bars=ev != "margin"),
                caption="Mean over held-out items"
                + (" (standard errors in the table below)." if ev == "margin" else " ± SEM."),
            )
    eff = result.effects()
    if not eff.empty:
        rep.add_table(eff.drop(columns=["vector"]), title="Steering effects",
                      caption="slope: least-squares slope over the multipliers; delta: value at "
                      "the largest minus the smallest multiplier.")  # fmt: skip
    if not result.generations.empty:
        rep.add_heading(
            "Open-ended answers at matched strength (classifier judge: "
            "P(matching), rescaled to 1-4)"
        )
        jres = res[res["evaluation"] == "judge"]
        rep.add_figure(vf.multiplier_curves(jres, "judge_score", x="strength"),
                       caption="score = 1 + 3 P(matching) from an embedding + logistic-regression "
                       "classifier (a cheap stand-in for the paper's GPT-4 judge); 2.5 means "
                       "'cannot tell', not 'neutral'. Degenerate answers are unparseable.")  # fmt: skip
        if result.judged is not None:
            rep.add_table(judged_table(result.judged), title="Judge score vs strength 0",
                          caption="Change of the judge score versus strength 0, each question "
                          "against itself: 95% bootstrap CIs over the questions (with fewer "
                          "than 20 they do not hold); KL: nats/token on neutral text at that "
                          "strength, from the matched comparison.")  # fmt: skip
        rates = jres.pivot_table(index=["method", "strength"], columns="metric", values="value")
        rep.add_table(rates.reset_index(), title="Judge score with unparseable and incoherent shares",
                      caption="judge_score: mean over scored answers; unparseable_rate: answers "
                      "the judge's coherence gate refused; incoherent_rate: answers implausible "
                      "to the unsteered model or repetitive.")  # fmt: skip
        g = result.generations
        sample = g[g["question"] == g["question"].iloc[0]]
        cols = [c for c in ("method", "strength", "multiplier", "score", "completion")
                if c in sample]  # fmt: skip
        rep.add_table(sample[cols], title=f"Answers to: {g['question'].iloc[0]}")
    rep.add_heading("Vectors")
    norms = pd.DataFrame(
        [{"method": m, "norm": next(iter(v.norms().values()))} for m, v in result.vectors.items()]
    )
    rep.add_table(norms, title="Norms")
    if result.similarity is not None:
        rep.add_figure(vf.cosine_heatmap(result.similarity, "Cosine similarity between methods"))
    if result.projection is not None:
        p = result.projection
        rep.add_figure(vf.pca_scatter(p), caption="Held-out pairs' mean response activations "
                       "(matching vs not matching) in their first two principal components; "
                       "arrows: each method's direction (label: share of it in the plane).")  # fmt: skip
        rep.add_table(p.separation, title="Separation of matching vs not matching",
                      caption="d_prime: difference of means / pooled std along the axis; "
                      f"logistic regression in the PC plane: {p.logreg_accuracy:.2f} "
                      f"(full space: {p.logreg_accuracy_full:.2f}), cross-validated.")  # fmt: skip
    if not result.training.empty:
        rep.add_heading("BiPO training")

        class _Run:  # the shape training_curves() reads
            steps = result.training.to_dict("records")
            epochs = result.training_epochs.to_dict("records")

        rep.add_figure(vf.training_curves(_Run(), title="BiPO training"))
    rep.add_heading("Configuration and provenance")
    rep.add_config({"config": cfg.to_dict(), "timings_seconds": result.timings,
                    "provenance": result.provenance})  # fmt: skip
    rep.add_table(res, title="All results", max_rows=400)
    return rep


__all__ = ["RunResult", "build_report", "run_pipeline", "write_outputs"]
