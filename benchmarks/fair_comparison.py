"""Fair comparison of steering methods: matched damage and matched norm, with CIs.

For each persona, seed, method and layer, a vector is fitted on the same training pairs
(every method gets identical pairs), rescaled to norm units (multiplier = strength =
|k v| / mean ||h|| at the site) and swept over strengths. Per item: the held-out
likelihood margin and both answers' log-probabilities (in-distribution test pairs and,
where the persona has one, the Anthropic human-written items of the same behavior: out of
distribution); per condition: KL(steered || unsteered) per token on steerlab's neutral
text set. Seeds vary the training subset (and BiPO's batches); items of all seeds are
pooled for the bootstrap (an item = one test pair under one seed's vector).

Methods: CAA, freeform, PCA, BiPO, RePS (vectors) and prompting (the persona's eliciting
instruction in the system prompt: one point, its own KL, not interpolated).

Outputs (``--out``): ``cells/<persona>_s<seed>_L<layer>.*`` and
``cells/<persona>_s<seed>_prompt.*`` (resumable raw results; a cell's ``.done`` lists the
methods on disk, so adding a method later runs only that method),
``fair_comparison.json`` (all tables) and ``fair_comparison.md`` (the summary the README
quotes). Reported per (persona, method, layer): the effect ``margin(s) - margin(0)`` at
matched KL (0.05 / 0.2 / 0.5 nats/token) and at matched strength, each with a paired
95% bootstrap CI, the share of anti-steerable items (slope < 0), whether the mean curve is
monotonic, and the changes of log p(matching) and log p(not matching) at KL 0.2 (a margin
won by breaking both answers shows as two falls).

    python benchmarks/fair_comparison.py                     # the full grid (hours on 2 cores)
    python benchmarks/fair_comparison.py --personas power-seeking --seeds 0 --layers 14
"""

import argparse
import dataclasses
import hashlib
import json
import math
import platform
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import _env  # noqa: F401  (offline HF, data root, sys.path)
import numpy as np
import pandas as pd
from _report import command_line

PERSONAS = ("power-seeking", "wealth-seeking", "corrigible-less-HHH", "survival-instinct")
#: the Anthropic human-written advanced-ai-risk file of the same behavior (out of
#: distribution for BiPO's model-written pairs); None where the persona's own data *is*
#: that file.
OOD_FILES = {
    "power-seeking": "power-seeking-inclination",
    "wealth-seeking": "wealth-seeking-inclination",
    "corrigible-less-HHH": None,
    "survival-instinct": None,
}
KL_LEVELS = (0.05, 0.2, 0.5)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--personas", default=",".join(PERSONAS))
    p.add_argument("--methods", default="caa,freeform,pca,bipo,reps,prompt")
    p.add_argument("--layers", default="8,12,14,18,22")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--strengths", default="0,0.025,0.05,0.1,0.2,0.4")
    p.add_argument(
        "--n-train",
        type=int,
        default=64,
        help="training pairs, every method (0: all pairs left after the validation and test "
        "splits)",
    )
    p.add_argument("--n-val", type=int, default=16, help="BiPO best-epoch validation pairs")
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--n-ood", type=int, default=100)
    p.add_argument("--n-neutral", type=int, default=24)
    p.add_argument("--bipo-epochs", type=int, default=2)
    p.add_argument("--bipo-lr", type=float, default=2e-2)
    p.add_argument(
        "--bipo-lrs", default="",
        help="comma-separated learning rates: BiPO/RePS train at each and keep the run whose "
        "best epoch scored highest on the cell's validation pairs (overrides --bipo-lr)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--out", default="benchmarks/results/fair_comparison")
    p.add_argument("--report-only", action="store_true", help="aggregate the cells on disk")
    p.add_argument(
        "--name", default="fair_comparison",
        help="report file stem: NAME.json, NAME.md, NAME_summary.md (only the requested "
        "personas, seeds, layers and methods are aggregated)",
    )  # fmt: skip
    return p.parse_args()


def csv_floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def splits(persona: str, seed: int, args: argparse.Namespace) -> tuple[list, list, list]:
    """(fit, val, test) pairs for one seed. BiPO personas keep BiPO's fixed test split and
    draw the training subset by seed; Anthropic personas pool their items and draw all
    three by seed (their fixed test split has fewer than 100 items)."""
    import steerlab as sl

    data = sl.load_pairs(persona)
    rng = random.Random(seed)
    if OOD_FILES[persona] is not None:
        pool = list(data.train)
        rng.shuffle(pool)
        test = list(data.test)[: args.n_test]
    else:
        pool = list(data.train) + list(data.test)
        rng.shuffle(pool)
        test, pool = pool[: args.n_test], pool[args.n_test :]
    n_train = args.n_train if args.n_train > 0 else len(pool) - args.n_val  # 0: all pairs
    fit, val = pool[:n_train], pool[n_train : n_train + args.n_val]
    if len(fit) < n_train or n_train <= 0 or len(test) < args.n_test:
        raise SystemExit(f"{persona}: not enough pairs for n_train/n_test")
    return fit, val, test


def ood_pairs(persona: str, n: int) -> list:
    from steerlab.data import find_data_file, load_anthropic_jsonl

    name = OOD_FILES[persona]
    if name is None:
        return []
    path = find_data_file(f"anthropic-evals/advanced-ai-risk/human_generated_evals/{name}.jsonl")
    ab = load_anthropic_jsonl(path, name=name, skip={"multi-choice", "duplicate", "empty"})
    # In these human-written files "answer_matching_behavior" is the answer that *declines*
    # power / money (e.g. "No" to joining an executive board), the opposite of BiPO's pairs
    # (matching = seeks it): swap the answers so that "matching" means the same thing.
    return [
        dataclasses.replace(p, matching=p.not_matching, not_matching=p.matching)
        for p in list(ab.to_pairs())[:n]
    ]


def _saved_methods(stem: Path) -> set[str]:
    done = stem.with_suffix(".done")
    return set(json.loads(done.read_text())["methods"]) if done.exists() else set()


def _save(stem: Path, frames: dict[str, pd.DataFrame], seed: int, seconds: dict) -> None:
    """Append one (persona, seed, layer) cell's new rows; mark its methods done last."""
    for suffix, frame in frames.items():
        if frame.empty:
            continue
        path = stem.with_suffix(suffix)
        frame = frame.assign(seed=seed)
        if path.exists():
            frame = pd.concat([pd.read_csv(path), frame], ignore_index=True)
        frame.to_csv(path, index=False)
    done = stem.with_suffix(".done")
    old = json.loads(done.read_text()) if done.exists() else {"methods": [], "seconds": {}}
    methods = sorted(set(old["methods"]) | set(seconds.pop("methods")))
    merged = {**old["seconds"], **seconds}
    merged["total"] = old["seconds"].get("total", 0.0) + seconds.get("total", 0.0)  # runs add up
    done.write_text(json.dumps({"methods": methods, "seconds": merged}))


def _scored(model: Any, persona: str, test: list, args: argparse.Namespace, score: Any) -> dict:
    """``score(pairs)`` -> per-item frame, for the test pairs and the OOD pairs."""
    from steerlab.evaluation.damage import logprob_changes

    frames = {}
    for name, pairs in (("test", test), ("ood", ood_pairs(persona, args.n_ood))):
        if pairs:
            frames[f".{name}.csv.gz"] = logprob_changes(score(pairs)).rename(
                columns={"multiplier": "strength"}
            )
    return frames


def run_layer_cell(
    model: Any, persona: str, seed: int, layer: int, args: argparse.Namespace, cells: Path
) -> None:
    """Fit the vector methods not yet on disk at one layer, sweep strengths, save."""
    from steerlab.analysis.calibrate import CalibrateConfig
    from steerlab.analysis.calibrate_run import fit_all, fit_candidates
    from steerlab.data.neutral import load_neutral_set
    from steerlab.evaluation.damage import kl_damage
    from steerlab.evaluation.likelihood_fast import likelihood_margin_fast
    from steerlab.steering.strength import in_norm_units, vector_norms

    stem = cells / f"{persona}_s{seed}_L{layer}"
    wanted = [m for m in args.methods.split(",") if m != "prompt"]
    todo = [m for m in wanted if m not in _saved_methods(stem)]
    if not todo:
        print(f"[{persona} seed {seed} L{layer}] on disk", flush=True)
        return
    t0 = time.perf_counter()
    strengths = csv_floats(args.strengths)
    cfg = CalibrateConfig(
        methods=tuple(todo),
        layers=(layer,),
        strengths=tuple(strengths),
        seed=seed,
        batch_size=args.batch_size,
        bipo_epochs=args.bipo_epochs,
        bipo_lr=args.bipo_lr,
        bipo_lrs=tuple(csv_floats(args.bipo_lrs)),
        n_val=args.n_val,
    )
    fit, val, test = splits(persona, seed, args)

    def stage(text: str) -> None:
        print(f"[{persona} s{seed} L{layer} {time.perf_counter() - t0:6.0f}s] {text}", flush=True)

    candidates, training, seconds = fit_candidates(
        cfg, lambda c: fit_all(model, persona, c, [layer], fit, val, stage)
    )
    neutral, caches = load_neutral_set(n=args.n_neutral), {}
    vectors, training = choose_learning_rates(
        candidates,
        training,
        lambda v: validation_effect(
            model, in_norm_units(v, vector_norms(model, v)), val, strengths, neutral,
            args.batch_size, caches=caches,
        ),
    )  # fmt: skip
    for m, g in training.groupby("method"):
        tried = g.drop_duplicates("base_lr").set_index("base_lr")["val_effect"]
        said = ", ".join(f"{lr:g}: {e:+.2f}" for lr, e in tried.items())
        stage(f"{m}: learning rate {g['chosen_lr'].iloc[0]:g} kept (validation effect at KL "
              f"0.2 on {len(val)} pairs: {said})")  # fmt: skip
    units = [in_norm_units(v, vector_norms(model, v)) for v in vectors.values()]
    norms = pd.DataFrame(
        [
            {
                "method": m,
                "layer": L,
                "norm": next(iter(v.norms().values())),
                "typical": next(iter(vector_norms(model, v).values())),
            }
            for (m, L), v in vectors.items()
        ]
    )
    frames = _scored(
        model, persona, test, args,
        lambda pairs: likelihood_margin_fast(
            model, pairs, units, strengths, batch_size=args.batch_size, progress=False,
            per_item=True,
        ),
    )  # fmt: skip
    stage(f"margins: {len(test)} test (+ OOD) pairs x {len(units)} vectors x {len(strengths)}")
    kl = kl_damage(
        model, units, strengths, neutral=neutral, batch_size=args.batch_size,
    ).rename(columns={"multiplier": "strength"})  # fmt: skip
    stage("KL on neutral text")
    frames.update({".kl.csv": kl, ".norms.csv": norms, ".training.csv": training})
    seconds.update(total=time.perf_counter() - t0, methods=todo)
    _save(stem, frames, seed, seconds)
    stage(f"saved {', '.join(todo)}")


def choose_learning_rates(
    candidates: dict[tuple[str, int, float | None], Any],
    training: pd.DataFrame,
    score: Any,
) -> tuple[dict[tuple[str, int], Any], pd.DataFrame]:
    """One vector per (method, layer): a trained method tried at several learning rates
    keeps the run whose vector scores highest by ``score(vector)`` (the validation effect
    at matched KL, :func:`validation_effect`); BiPO's own best-epoch score, a margin at raw
    multipliers +-1, would favour the learning rate that makes the longest vector. The
    training records gain ``val_effect`` (per learning rate) and ``chosen_lr``."""
    if training.empty:
        return {(m, L): v for (m, L, _), v in candidates.items()}, training
    tried = training.groupby("method")["base_lr"].unique()
    effects: dict[tuple[str, float], float] = {}
    for (m, _, lr), v in candidates.items():
        if lr is not None and len(tried[m]) > 1:
            effects[(m, lr)] = score(v)
    chosen = {m: lrs[0] for m, lrs in tried.items()}
    for m in chosen:
        mine = {lr: e for (mm, lr), e in effects.items() if mm == m}
        if mine:
            chosen[m] = max(mine, key=mine.get)
    vectors = {(m, L): v for (m, L, lr), v in candidates.items() if lr is None or lr == chosen[m]}
    val = [effects.get((m, lr), math.nan) for m, lr in zip(training["method"], training["base_lr"])]
    return vectors, training.assign(val_effect=val, chosen_lr=training["method"].map(chosen))


def validation_effect(
    model: Any,
    unit: Any,
    pairs: list,
    strengths: list[float],
    neutral: Any,
    batch_size: int,
    level: float = 0.2,
    caches: dict | None = None,
) -> float:
    """Mean margin change on ``pairs`` at the strength where the vector (in strength
    units) reaches KL ``level`` on the neutral text, interpolated as the report does;
    at the largest strength when the sweep stays below ``level`` (a lower bound)."""
    from steerlab.analysis.reliability import strength_at_kl
    from steerlab.evaluation.damage import kl_damage
    from steerlab.evaluation.likelihood_fast import likelihood_margin_fast

    xs = np.array(sorted({0.0, *strengths}))
    kl = kl_damage(model, unit, list(xs), neutral=neutral, batch_size=batch_size)
    kl = kl.groupby("multiplier")["kl"].mean().reindex(xs).to_numpy()
    items = likelihood_margin_fast(model, pairs, unit, list(xs), batch_size=batch_size,
                                   progress=False, per_item=True, caches=caches)  # fmt: skip
    margin = items.groupby("multiplier")["margin"].mean().reindex(xs).to_numpy()
    target = strength_at_kl(xs, kl, level)
    target = xs[-1] if math.isnan(target) else target
    return float(np.interp(target, xs, margin) - margin[0])


#: The ``layer`` value of prompting's rows (it has none; CSV columns stay integer).
PROMPT_LAYER = -1


def run_prompt_cell(
    model: Any, persona: str, seed: int, args: argparse.Namespace, cells: Path
) -> None:
    """Prompting (the persona's eliciting instruction in the system prompt): one point,
    sign +1, on the same test / OOD pairs; KL on the tokens both prompts share."""
    from steerlab.data.neutral import load_neutral_set
    from steerlab.evaluation.prompting import prompt_kl_damage, prompt_likelihood_margin

    stem = cells / f"{persona}_s{seed}_prompt"
    if "prompt" not in args.methods.split(",") or "prompt" in _saved_methods(stem):
        return
    if OOD_FILES[persona] is not None and seed != 0:
        # a fixed test split (BiPO's) and no training: every seed would repeat seed 0's
        # numbers, and pooling repeats would shrink the CI; prompting keeps seed 0 only
        return
    t0 = time.perf_counter()
    _, _, test = splits(persona, seed, args)
    frames = _scored(
        model, persona, test, args,
        lambda pairs: prompt_likelihood_margin(
            model, pairs, persona, (0, 1), batch_size=args.batch_size, per_item=True
        ),
    )  # fmt: skip
    frames[".kl.csv"] = prompt_kl_damage(
        model, persona, (0, 1), neutral=load_neutral_set(n=args.n_neutral),
        batch_size=args.batch_size,
    ).rename(columns={"multiplier": "strength"})  # fmt: skip
    frames = {k: f.assign(layer=PROMPT_LAYER) for k, f in frames.items()}
    _save(stem, frames, seed, {"total": time.perf_counter() - t0, "methods": ["prompt"]})
    print(f"[{persona} s{seed} prompt] saved ({time.perf_counter() - t0:.0f}s)", flush=True)


def _read(cells: Path, pattern: str, args: argparse.Namespace) -> pd.DataFrame:
    """The cells' rows of the requested seeds, layers and methods (prompting: no layer)."""
    files = sorted(cells.glob(pattern))
    if not files:
        return pd.DataFrame()
    frame = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    seeds = {int(x) for x in args.seeds.split(",")}
    layers = {int(x) for x in args.layers.split(",")} | {PROMPT_LAYER}
    keep = frame["seed"].isin(seeds) & frame["layer"].isin(layers)
    keep &= frame["method"].isin(args.methods.split(","))
    return frame[keep].reset_index(drop=True)


def pair_key(pair: Any) -> str:
    """A test pair's identity across seeds (its texts)."""
    text = json.dumps(dataclasses.asdict(pair), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _item_keys(persona: str, split: str, seeds: list[int], args: argparse.Namespace) -> dict:
    """(seed, item index) -> the pair's identity: an item is a test *pair*, not a (pair,
    seed): a pair scored under several seeds' vectors is one bootstrap unit, its curve the
    mean over those seeds. BiPO personas' test split and every OOD split are the same
    pairs in every seed; the Anthropic personas draw their test pairs per seed (they
    overlap)."""
    keys = {}
    for seed in seeds:
        if split == "test" and OOD_FILES[persona] is None:
            pairs = splits(persona, seed, args)[2]
            keys.update({(seed, i): pair_key(p) for i, p in enumerate(pairs)})
        else:
            keys.update({(seed, i): f"{split}{i}" for i in range(max(args.n_test, args.n_ood))})
    return keys


def _pooled(items: pd.DataFrame, keys: dict | None = None) -> pd.DataFrame:
    """One vector label per (method, layer) across seeds; items keyed by ``keys`` (see
    :func:`_item_keys`; None: the frame's own item numbers, e.g. KL rows)."""
    out = items.copy()
    out["vector"] = out["method"] + " L" + out["layer"].astype(int).astype(str)
    if keys is not None:
        out["item"] = [keys[(s, i)] for s, i in zip(out["seed"], out["item"])]
    return out


def _per_seed(items: pd.DataFrame, kl: pd.DataFrame, level: float = 0.2) -> pd.DataFrame:
    """Each vector's mean effect at KL ``level`` in each seed alone (its own KL curve):
    columns vector, seed, effect (NaN where that seed's sweep never reached the level)."""
    from steerlab.analysis.reliability import matched_kl

    frames = []
    for seed, g in items.groupby("seed"):
        mk = matched_kl(g, kl[kl["seed"] == seed], (level,), y="margin", n_boot=10, seed=0)
        frames.append(mk[["vector", "effect"]].assign(seed=int(seed)))
    return pd.concat(frames, ignore_index=True)


def aggregate(args: argparse.Namespace, cells: Path) -> dict[str, Any]:
    from steerlab.analysis.calibrate import paired_comparison
    from steerlab.analysis.reliability import matched_kl, matched_strength, reliability

    strengths = [s for s in csv_floats(args.strengths) if s > 0]
    tables: dict[str, Any] = {}
    for persona in args.personas.split(","):
        kl = _read(cells, f"{persona}_s*.kl.csv", args)
        if kl.empty:
            continue
        kl = _pooled(kl.assign(item=0))
        seeds = sorted(set(kl["seed"]))
        per: dict[str, Any] = {"seeds": seeds}
        for split in ("test", "ood"):
            raw = _read(cells, f"{persona}_s*.{split}.csv.gz", args)
            if raw.empty:
                continue
            pooled = _pooled(raw, _item_keys(persona, split, seeds, args))
            items = pooled[pooled["method"] != "prompt"]
            common = dict(n_boot=args.n_boot, seed=0)
            mk = matched_kl(items, kl, KL_LEVELS, y="margin", **common)
            for y in ("d_logp_matching", "d_logp_not_matching"):
                extra = matched_kl(items, kl, (0.2,), y=y, **common)
                mk = mk.merge(
                    extra[["vector", "target", "effect", "effect_low", "effect_high"]].rename(
                        columns={c: f"{y}_{c}" for c in ("effect", "effect_low", "effect_high")}
                    ),
                    on=["vector", "target"], how="left",
                )  # fmt: skip
            # the paired comparison needs one item set: the vectors of every seed scored
            per_vector = items.groupby("vector")["seed"].nunique()
            full = per_vector[per_vector == items["seed"].nunique()].index
            both = items[items["vector"].isin(full)]
            per[split] = {
                "matched_kl": mk,
                "matched_strength": matched_strength(items, strengths, y="margin", **common),
                "reliability": reliability(items, y="margin", **common),
                "n_items": int(both.groupby("vector")["item"].nunique().min()),
                "per_seed": _per_seed(items, kl),
                "seeds_per_vector": per_vector.to_dict(),
                "prompt": _prompt_table(pooled[pooled["method"] == "prompt"], kl, common),
                # the best vector at KL 0.2 minus each other one, paired over the same items
                # (vectors scored in fewer seeds are left out of it)
                "paired": paired_comparison(
                    both.assign(method=both["vector"]),
                    kl[kl["vector"].isin(full)],
                    0.2,
                    args.n_boot,
                    0,
                ),
                "budget": _budget_differences(both, kl[kl["vector"].isin(full)], args.n_boot),
            }
        norms = _read(cells, f"{persona}_s*.norms.csv", args)
        per["norms"] = norms.groupby(["method", "layer"])[["norm", "typical"]].mean().reset_index()
        tables[persona] = per
    return tables


#: Method-name suffix of vectors imported from the 64-pair grid (``import_cells.py``): the
#: report pairs ``bipo`` with ``bipo_64p`` at the same layer (more training data, minus the
#: grid's budget).
BASELINE_SUFFIX = "_64p"


def _budget_differences(items: pd.DataFrame, kl: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    """Per (method, layer) present both as itself and as ``method + BASELINE_SUFFIX``: its
    effect at KL 0.2 minus the baseline's, paired over the same items (bootstrap CI)."""
    from steerlab.analysis.calibrate import paired_comparison

    rows = []
    vectors = set(items["vector"])
    for vec in sorted(vectors):
        method, layer = str(vec).rsplit(" L", 1)
        base = f"{method}{BASELINE_SUFFIX} L{layer}"
        if method.endswith(BASELINE_SUFFIX) or base not in vectors:
            continue
        two = items[items["vector"].isin([vec, base])]
        pc = paired_comparison(
            two.assign(method=two["vector"]), kl[kl["vector"].isin([vec, base])], 0.2, n_boot, 0
        )
        if pc.empty:
            continue
        r = pc.iloc[0]
        sign = 1.0 if r["leader"] == vec else -1.0
        lo, hi = sorted((sign * r["low"] + 0.0, sign * r["high"] + 0.0))
        rows.append(dict(method=method, layer=int(layer), difference=sign * r["difference"] + 0.0,
                         low=lo, high=hi))  # fmt: skip
    return pd.DataFrame(rows)


def _prompt_table(items: pd.DataFrame, kl: pd.DataFrame, common: dict) -> pd.DataFrame:
    """Prompting's one point (sign +1): its KL, the margin and both log-prob changes with
    CIs, and the share of items it moves the wrong way. Not interpolated to KL levels."""
    from steerlab.analysis.reliability import matched_strength

    if items.empty:
        return pd.DataFrame()
    out = matched_strength(items, [1.0], y="margin", **common)
    for y in ("d_logp_matching", "d_logp_not_matching"):
        extra = matched_strength(items, [1.0], y=y, **common)
        for c in ("effect", "effect_low", "effect_high"):
            out[f"{y}_{c}"] = extra[c].to_numpy()
    own = kl[(kl["method"] == "prompt") & (kl["strength"] == 1.0)]
    out["kl"] = float(own["kl"].mean()) if len(own) else math.nan
    return out


def _fmt(x: float, lo: float, hi: float) -> str:
    if any(map(math.isnan, (x, lo, hi))):
        return "n/r"
    return f"{x:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def markdown(tables: dict[str, Any], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    lines = [
        "# Fair comparison of steering methods (embedded SmolLM2-135M-Instruct)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; all cells on disk took {meta['seconds'] / 60:.0f} min of compute.  ",
        "Effect = held-out likelihood margin at strength s minus at 0 (nats), mean over "
        "test pairs, paired 95% bootstrap CI over pairs; a pair scored under several seeds' "
        "vectors is one item (its curve averaged over those seeds). `n/r`: the strength sweep "
        "never reached that KL (no extrapolation). anti = share of items whose margin falls "
        "as strength grows (least-squares slope < 0). Strength = |k v| / mean ||h|| at the "
        "layer (the typical residual norm on the neutral text set).",
        "",
    ]
    for persona, per in tables.items():
        for split, title in (("test", "in distribution"), ("ood", "out of distribution")):
            if split not in per:
                continue
            t = per[split]
            mk, rel = t["matched_kl"], t["reliability"].set_index("vector")
            ms = t["matched_strength"]
            lines += [
                f"## {persona}, {title} (n = {t['n_items']} test pairs, "
                f"{len(per['seeds'])} seed{'s' if len(per['seeds']) > 1 else ''})",
                "",
                "| method | layer | effect @ KL 0.05 | @ KL 0.2 | @ KL 0.5 | effect @ strength 0.1 "
                "| d log p(match) @ KL 0.2 | d log p(not) @ KL 0.2 | anti | shape |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            rank = {m: i for i, m in enumerate(args.methods.split(","))}
            mk = mk.assign(_r=mk["method"].map(rank), _l=mk["layer"].astype(int))
            for vec, g in mk.sort_values(["_r", "_l"], kind="stable").groupby("vector", sort=False):
                g = g.set_index("target")
                cells = [
                    _fmt(*g.loc[lv, ["effect", "effect_low", "effect_high"]]) for lv in KL_LEVELS
                ]
                s01 = ms[(ms["vector"] == vec) & (np.isclose(ms["target"], 0.1))]
                at01 = (
                    _fmt(*s01[["effect", "effect_low", "effect_high"]].iloc[0]) if len(s01) else "-"
                )
                row2 = g.loc[0.2]
                dm = _fmt(
                    *[row2[f"d_logp_matching_{c}"] for c in ("effect", "effect_low", "effect_high")]
                )
                dn = _fmt(
                    *[
                        row2[f"d_logp_not_matching_{c}"]
                        for c in ("effect", "effect_low", "effect_high")
                    ]
                )
                r = rel.loc[vec]
                anti = f"{r['anti_share']:.2f} [{r['anti_low']:.2f}, {r['anti_high']:.2f}]"
                method, layer = str(vec).rsplit(" L", 1)
                lines.append(
                    f"| {method} | {layer} | {' | '.join(cells)} | {at01} | {dm} | {dn} | {anti} "
                    f"| {r['shape']} |"
                )
            lines += ["", *_prompt_lines(t.get("prompt")), ""]
    return "\n".join(lines)


def training_lines(cells: Path, args: argparse.Namespace) -> list[str]:
    """Per trained vector: validation score and mean training loss per epoch, per learning
    rate tried, the chosen run marked (the curves item 6 of the comparison asks for)."""
    frames = [
        _read(cells, f"{p}_s*.training.csv", args).assign(persona=p)
        for p in args.personas.split(",")
    ]
    raw = pd.concat(frames, ignore_index=True)
    if raw.empty or "kind" not in raw:
        return []
    ep = raw[raw["kind"] == "epoch"].copy()
    if ep.empty:
        return []
    if "base_lr" not in ep:
        ep["base_lr"] = args.bipo_lr
    ep["base_lr"] = ep["base_lr"].fillna(args.bipo_lr)
    lines = [
        "## Training curves of the trained vectors",
        "",
        "Validation score = margin(x+1) - margin(x-1) on the cell's validation pairs after each "
        "epoch (BiPO's best-epoch criterion; the best epoch's vector is kept); loss = mean "
        "training loss of the epoch. Where several learning rates were tried, the one whose "
        "kept vector moved the validation margin most at KL 0.2 nats/token (`val effect`) "
        "is kept (`*`).",
        "",
        "| persona | seed | layer | method | lr | val effect @ KL 0.2 | validation score per "
        "epoch | loss per epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = ["persona", "seed", "layer", "method", "base_lr"]
    for key, g in ep.sort_values([*keys, "epoch"]).groupby(keys, sort=True):
        persona, seed, layer, method, lr = key
        several = (
            "chosen_lr" in g
            and ep.query("persona == @persona and seed == @seed and layer == @layer")[
                "base_lr"
            ].nunique()
            > 1
        )
        mark = "*" if several and np.isclose(g["chosen_lr"].iloc[0], lr) else ""
        eff = g["val_effect"].iloc[0] if "val_effect" in g else math.nan
        eff_text = "-" if math.isnan(eff) else f"{eff:+.2f}"
        score = " / ".join(f"{x:.1f}" for x in g["score"])
        loss = " / ".join(f"{x:.3f}" for x in g["loss"])
        lines.append(
            f"| {persona} | {seed} | {layer} | {method} | {lr:g}{mark} | {eff_text} | {score} "
            f"| {loss} |"
        )
    return [*lines, ""]


def _prompt_lines(pt: pd.DataFrame | None) -> list[str]:
    if pt is None or pt.empty:
        return []
    r = pt.iloc[0]
    trio = ("effect", "effect_low", "effect_high")
    return [
        f"Prompting (the persona's eliciting instruction appended to the system prompt; one "
        f"point, not interpolated): KL {r['kl']:.3f} nats/token (on the tokens both prompts "
        f"share), effect {_fmt(*r[list(trio)])}, d log p(match) "
        f"{_fmt(*[r[f'd_logp_matching_{c}'] for c in trio])}, d log p(not) "
        f"{_fmt(*[r[f'd_logp_not_matching_{c}'] for c in trio])}, items moved the wrong "
        f"way {r['anti_share']:.2f} [{r['anti_low']:.2f}, {r['anti_high']:.2f}]."
    ]


def summary_markdown(tables: dict[str, Any], args: argparse.Namespace) -> str:
    """The README's view: effect at KL 0.2 per (method, layer) x persona, in and out of
    distribution, prompting at its own KL, and the paired comparison with the leader."""
    personas = [p for p in args.personas.split(",") if p in tables]
    methods = [m for m in args.methods.split(",") if m != "prompt"]
    lines = []
    for split, title in (("test", "in distribution"), ("ood", "out of distribution")):
        cols = [p for p in personas if split in tables[p]]
        if not cols:
            continue
        n = " / ".join(
            f"{tables[p][split]['n_items']} ({len(tables[p]['seeds'])} seed"
            f"{'s' if len(tables[p]['seeds']) > 1 else ''})"
            for p in cols
        )
        lines += [
            f"### Effect at KL 0.2 nats/token, {title} (items (seeds): {n})",
            "",
            "| method | layer | " + " | ".join(cols) + " |",
            "|---|---|" + "---|" * len(cols),
        ]
        for m in methods:
            for layer in [int(x) for x in args.layers.split(",")]:
                cells = []
                for p in cols:
                    mk = tables[p][split]["matched_kl"]
                    r = mk[(mk["vector"] == f"{m} L{layer}") & np.isclose(mk["target"], 0.2)]
                    trio = ("effect", "effect_low", "effect_high")
                    text = _fmt(*r[list(trio)].iloc[0]) if len(r) else "-"
                    k = tables[p][split]["seeds_per_vector"].get(f"{m} L{layer}")
                    if len(r) and k is not None and k < len(tables[p]["seeds"]):
                        text += f" ({k} seed{'s' if k > 1 else ''})"
                    cells.append(text)
                lines.append(f"| {m} | {layer} | " + " | ".join(cells) + " |")
        prompt_cells = []
        for p in cols:
            pt = tables[p][split].get("prompt")
            if pt is None or pt.empty:
                prompt_cells.append("-")
                continue
            r = pt.iloc[0]
            eff = _fmt(r["effect"], r["effect_low"], r["effect_high"])
            prompt_cells.append(f"{eff} at KL {r['kl']:.2f} (n {int(r['n_items'])})")
        lines += ["| prompt | - | " + " | ".join(prompt_cells) + " |", ""]
        for p in cols:
            pc = tables[p][split]["paired"]
            if pc.empty:
                continue
            seeds = tables[p][split]["per_seed"].pivot(index="seed", columns="vector",
                                                        values="effect")  # fmt: skip
            leader = pc["leader"].iloc[0]
            parts = [
                f"{r.other} {_fmt(r.difference, r.low, r.high)}{_ahead(seeds, leader, r.other)}"
                for r in pc.itertuples()
            ]
            lines.append(f"- {p}: leader at KL 0.2 **{leader}**; leader minus: " + "; ".join(parts))
        lines += _best_layer_lines(tables, cols, split)
        lines += _budget_lines(tables, cols, split)
        lines.append("")
    return "\n".join(lines)


def _ahead(seeds: pd.DataFrame, leader: str, other: str) -> str:
    """The note "(ahead in k/n seeds)": in how many seeds alone the leader's effect at KL
    0.2 exceeds ``other``'s (``seeds``: seed x vector)."""
    if len(seeds) < 2:
        return ""
    diff = (seeds[leader] - seeds[other]).dropna()
    return f" (ahead in {int((diff > 0).sum())}/{len(diff)} seeds)"


def _best_layer_lines(tables: dict[str, Any], personas: list[str], split: str) -> list[str]:
    """Per persona: each method at its best layer (pooled effect at KL 0.2, picked on
    these test pairs), the leader minus it (paired CI), and its effect in each seed."""
    lines = []
    for p in personas:
        t = tables[p][split]
        seeds = t["per_seed"].pivot(index="vector", columns="seed", values="effect")
        mk = t["matched_kl"]
        k = t["seeds_per_vector"]
        most = max(k.values())
        fewer = sorted(v for v, n in k.items() if n < most)
        mk = mk[
            np.isclose(mk["target"], 0.2)
            & mk["vector"].isin([v for v, n in k.items() if n == most])
        ]
        mk = mk.dropna(subset=["effect"])
        if mk.empty:
            continue
        best = mk.loc[mk.groupby("method", sort=False)["effect"].idxmax()]
        best = best.sort_values("effect", ascending=False)
        pc = t["paired"].set_index("other") if not t["paired"].empty else pd.DataFrame()
        leader = t["paired"]["leader"].iloc[0] if not t["paired"].empty else None
        cols = " / ".join(str(c) for c in seeds.columns)
        lines += [
            "",
            f"{p}, {split}: each method at its best layer among the vectors of all "
            f"{most} seeds (picked on these test pairs), leader **{leader}**",
            "",
            f"| method | layer | effect at KL 0.2 | leader minus it | per seed ({cols}) |",
            "|---|---|---|---|---|",
        ]
        for r in best.itertuples():
            diff = "-"
            if r.vector in pc.index:
                d = pc.loc[r.vector]
                diff = _fmt(d["difference"], d["low"], d["high"]) + _ahead(
                    seeds.T, leader, r.vector
                )
            per = " / ".join("-" if pd.isna(x) else f"{x:+.2f}" for x in seeds.loc[r.vector])
            layer = str(r.vector).rsplit(" L", 1)[1]
            eff = _fmt(r.effect, r.effect_low, r.effect_high)
            lines.append(f"| {r.method} | {layer} | {eff} | {diff} | {per} |")
        if fewer:
            lines += ["", f"Left out (fewer than {most} seeds): {', '.join(fewer)}."]
    return lines


def _budget_lines(tables: dict[str, Any], personas: list[str], split: str) -> list[str]:
    """The same method at the same layer, trained on more pairs minus the 64-pair grid's."""
    rows = []
    for p in personas:
        b = tables[p][split].get("budget")
        if b is None or b.empty:
            continue
        for r in b.itertuples():
            rows.append(f"| {p} | {r.method} | {r.layer} | {_fmt(r.difference, r.low, r.high)} |")
    if not rows:
        return []
    return [
        "",
        f"{split}: effect at KL 0.2 of each vector minus the 64-pair grid's vector of the same "
        f"method and layer (`{BASELINE_SUFFIX}`), paired over the same pairs and seeds",
        "",
        "| persona | method | layer | difference |",
        "|---|---|---|---|",
        *rows,
    ]


def to_jsonable(tables: dict[str, Any]) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, pd.DataFrame):
            return json.loads(v.to_json(orient="records"))
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(tables)


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    cells = out / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not args.report_only:
        import torch

        import steerlab as sl

        torch.manual_seed(0)
        model = sl.load_model()
        # seed outermost: a partial run still covers every persona with its first seeds
        for seed in (int(s) for s in args.seeds.split(",")):
            for persona in args.personas.split(","):
                run_prompt_cell(model, persona, seed, args, cells)
                for layer in (int(x) for x in args.layers.split(",")):
                    run_layer_cell(model, persona, seed, layer, args, cells)
    done = [json.loads(p.read_text())["seconds"] for p in cells.glob("*.done")]
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    meta = {
        "command": command_line("fair_comparison.py", args, skip=("report_only", "out", "name")),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, CPU; uptime at "
        f"the end: {uptime}",
        "seconds": sum(d.get("total", 0.0) for d in done) or (time.perf_counter() - t0),
        "cells": len(done),
        "args": vars(args),
    }
    tables = aggregate(args, cells)
    (out / f"{args.name}.json").write_text(
        json.dumps({"meta": meta, "tables": to_jsonable(tables)}, indent=1, default=str)
    )
    (out / f"{args.name}.md").write_text(
        markdown(tables, args, meta) + "\n" + "\n".join(training_lines(cells, args))
    )
    (out / f"{args.name}_summary.md").write_text(
        f"Command: `{meta['command']}`; {meta['machine']}\n\n" + summary_markdown(tables, args)
    )
    print(f"wrote {out / args.name}.md and {args.name}_summary.md")


if __name__ == "__main__":
    main()
