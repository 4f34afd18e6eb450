"""Judge-free steering table: CAA, freeform and PCA on one behavior, A/B probability and
likelihood margin across multipliers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/judgefree_table.py --n-train 200 \
        --n-test 30 --layers 8,12,14,18 --multipliers=-2,-1,0,1,2 --out /tmp/jf

Fits the methods on the first ``--n-train`` pairs of the behavior's train split (CAA and
PCA share one collection of A/B answer-letter activations: exactly what ``fit_caa`` /
``fit_pca`` compute with seed 0; freeform uses response-mean activations), evaluates the
unsteered model once and every (method, layer) at every non-zero multiplier with
``ab_probability`` / ``likelihood_margin`` (``per_item=True``) on the first ``--n-test``
test items (``test_ab``) and pairs (``test``), and prints JSON and a markdown table.

Δ columns are paired (same items at the largest vs the smallest multiplier) with their
standard error. Diagnostics per layer: mean residual norm at the answer letter and at
response tokens, each vector's norm relative to it, and how much of the A/B pair
differences is the A-vs-B letter identity (``ab_letter_axis_variance_share``).

``--rescale F`` rescales every vector to ``F`` x the mean residual norm at its layer
(multipliers then read as fractions of it) to separate "the direction does nothing" from
"the raw vector is short". Fitted vectors are cached under ``--out`` and reused; results
are rewritten after every vector, so an interrupted run keeps what it finished.
"""

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import numpy as np
import pandas as pd
import torch

LETTER_METHODS = ("caa", "pca")  # fitted at the answer letter; the others on responses


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--behavior", default="power-seeking")
    p.add_argument("--model", default="embedded")
    p.add_argument("--device", default=None)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-test", type=int, default=30)
    p.add_argument("--layers", type=_ints, default=[8, 12, 14, 18], help="layers fitted")
    p.add_argument("--eval-layers", type=_ints, default=None, help="subset evaluated")
    p.add_argument("--methods", default="caa,freeform,pca", help="also: pca_response")
    p.add_argument("--multipliers", type=_floats, default=[-2.0, -1.0, 0.0, 1.0, 2.0])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rescale", type=float, default=None, help="fraction of the residual norm")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--tag", default="", help="suffix of the output file names")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- fitting (cached) ---------------------------------------------------------------------


def diagnostics(acts_ab, acts_ff, vectors, signs) -> list[dict]:  # type: ignore[no-untyped-def]
    """Residual norms, vector norms and the letter-identity share of A/B differences.

    ``signs[i]`` is +1 where item i's matching letter is A: the letter part of its
    difference act(matching) - act(other) is then +(A - B), else -(A - B)."""
    cos = torch.nn.functional.cosine_similarity
    sign = torch.tensor(signs, dtype=torch.float64)[:, None]
    rows = []
    for site in acts_ab.sites:
        resid = {
            "letter": float(acts_ab.matching[site].norm(dim=-1).mean()),
            "response": float(acts_ff.matching[site].norm(dim=-1).mean()),
        }
        diffs = acts_ab.differences(site).double()
        letter_axis = (diffs * sign).mean(0)
        share = float(((diffs @ (letter_axis / letter_axis.norm())) ** 2).sum() / (diffs**2).sum())
        row = {
            "layer": site.layer,
            "resid_norm_letter": resid["letter"],
            "resid_norm_response": resid["response"],
            "ab_pair_diff_norm": float(diffs.norm(dim=-1).mean()),
            "ab_letter_axis_norm": float(letter_axis.norm()),
            "ab_letter_axis_variance_share": share,
        }
        for method, vec in vectors.items():
            d = vec.direction(site).double()
            ref = resid["letter" if method in LETTER_METHODS else "response"]
            row[f"{method}_norm"] = float(d.norm())
            row[f"{method}_norm_over_resid"] = float(d.norm()) / ref
            row[f"{method}_cos_letter_axis"] = float(cos(d, letter_axis, dim=0))
        if "caa" in vectors and "pca" in vectors:
            pca = vectors["pca"].direction(site).double()
            row["cos_caa_pca"] = float(cos(vectors["caa"].direction(site).double(), pca, dim=0))
            row["pca_share_of_diffs_projecting_positive"] = float(
                ((diffs @ pca) > 0).double().mean()
            )
        if "caa" in vectors and "freeform" in vectors:
            row["cos_caa_freeform"] = float(
                cos(
                    vectors["caa"].direction(site).double(),
                    vectors["freeform"].direction(site).double(),
                    dim=0,
                )
            )
        rows.append(row)
    return rows


def fit_all(model, train, args, methods, cache: Path):  # type: ignore[no-untyped-def]
    """Fitted multi-layer vectors per method and the diagnostics, cached under ``cache``."""
    import steerlab as sl
    from steerlab.activations import collect
    from steerlab.data import pairs_to_ab
    from steerlab.data.convert import as_pairs
    from steerlab.vectors.fitting import mean_difference, pca_direction, vector_from_acts

    files = {m: cache / f"{m}.safetensors" for m in methods}
    diag_file = cache / "diagnostics.json"
    if diag_file.is_file() and all(f.is_file() for f in files.values()):
        _log(f"[fit] reusing {cache}")
        meta = json.loads(diag_file.read_text())
        return (
            {m: sl.load_vector(f) for m, f in files.items()},
            meta["diagnostics"],
            meta["fit_seconds"],
        )
    t0 = time.perf_counter()
    progress = not args.no_progress
    train_ab = list(pairs_to_ab(train, seed=0))  # what fit_caa / fit_pca build (seed 0)
    acts_ab = collect(model, train_ab, args.layers, "answer_letter", batch_size=args.batch_size,
                      progress=progress)  # fmt: skip
    acts_ff = collect(model, as_pairs(train), args.layers, "response_mean",
                      batch_size=args.batch_size, progress=progress)  # fmt: skip

    def meandiff(a, s):  # type: ignore[no-untyped-def]
        return mean_difference(a.matching[s], a.not_matching[s])

    def pca(a, s):  # type: ignore[no-untyped-def]
        return pca_direction(a.differences(s))

    recipes = {
        "caa": (acts_ab, meandiff, {"seed": 0}),
        "pca": (acts_ab, pca, {"seed": 0}),
        "freeform": (acts_ff, meandiff, {}),
        "pca_response": (acts_ff, pca, {}),
    }
    unknown = sorted(set(methods) - set(recipes))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; valid: {', '.join(recipes)}")
    fitted = {
        m: vector_from_acts(recipes[m][0], m, recipes[m][1], args.behavior, recipes[m][2])
        for m in methods
    }
    fit_seconds = time.perf_counter() - t0
    signs = [1.0 if it.matching == "A" else -1.0 for it in train_ab]
    diag = diagnostics(acts_ab, acts_ff, fitted, signs)
    cache.mkdir(parents=True, exist_ok=True)
    for m, vec in fitted.items():
        vec.save(files[m])
    diag_file.write_text(json.dumps({"diagnostics": diag, "fit_seconds": fit_seconds}, indent=1))
    return fitted, diag, fit_seconds


# --- tables -------------------------------------------------------------------------------


def paired_delta(items: pd.DataFrame, vector: str, col: str, lo: float, hi: float) -> tuple:
    """Mean and standard error over items of value(hi) - value(lo) for one vector."""
    sub = items[items["vector"] == vector]
    a = sub[sub["multiplier"] == hi].sort_values("item")[col].to_numpy(dtype=float)
    b = sub[sub["multiplier"] == lo].sort_values("item")[col].to_numpy(dtype=float)
    if len(a) == 0 or len(a) != len(b):
        return float("nan"), float("nan")
    d = a - b
    sem = float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), sem


def markdown_table(rows: list[dict], mults: list[float]) -> str:
    lo, hi = min(mults), max(mults)
    head = (
        "| method | layer | |v|/|h| | "
        + " | ".join(f"P(match) ×{m:g}" for m in mults)
        + f" | ΔP (×{hi:g} − ×{lo:g}) | "
        + " | ".join(f"margin ×{m:g}" for m in mults)
        + f" | Δmargin (×{hi:g} − ×{lo:g}) |"
    )
    lines = [head, "|" + "---|" * (3 + 2 * len(mults) + 2)]
    for r in rows:
        ps = [f"{r['p_matching'][str(m)]:.3f}" for m in mults]
        ms = [f"{r['margin'][str(m)]:.2f}" for m in mults]
        lines.append(
            f"| {r['method']} | {r['layer']} | {r['norm_over_resid']:.3f} | "
            + " | ".join(ps)
            + f" | {r['delta_p'][0]:+.3f} ± {r['delta_p'][1]:.3f} | "
            + " | ".join(ms)
            + f" | {r['delta_margin'][0]:+.2f} ± {r['delta_margin'][1]:.2f} |"
        )
    return "\n".join(lines)


def table_rows(summary, ab_items, lk_items, vectors, ratios, mults) -> list[dict]:  # type: ignore[no-untyped-def]
    lo, hi = min(mults), max(mults)
    rows = []
    for label, method, layer in vectors:
        sub = summary[summary["vector"] == label]
        if sub.empty:
            continue

        def values(metric: str, sub: pd.DataFrame = sub) -> dict[str, float]:
            s = sub[sub["metric"] == metric]
            return {str(m): float(v) for m, v in zip(s["multiplier"], s["value"])}

        rows.append({
            "vector": label, "method": method, "layer": layer,
            "norm_over_resid": ratios[(method, layer)],
            "p_matching": values("p_matching"), "letter_mass": values("letter_mass"),
            "margin": values("margin"),
            "p_a_share": {
                str(m): float(g["p_a"].div(g["p_a"] + g["p_b"]).mean())
                for m, g in ab_items[ab_items["vector"] == label].groupby("multiplier")
            },
            "delta_p": paired_delta(ab_items, label, "p_matching", lo, hi),
            "delta_margin": paired_delta(lk_items, label, "margin", lo, hi),
        })  # fmt: skip
    return rows


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import steerlab as sl
    from steerlab.data import load_pairs, pairs_to_ab
    from steerlab.evaluation import (
        AB_METRICS,
        LIKELIHOOD_METRICS,
        ab_probability,
        likelihood_margin,
        summarize,
    )

    t_start = time.perf_counter()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    mults = sorted(set(args.multipliers) | {0.0})
    nonzero = [m for m in mults if m != 0.0]
    tag = args.tag or (f"rescale{args.rescale:g}" if args.rescale else "raw")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"judgefree_{args.behavior}_{tag}"
    layers_key = "-".join(str(x) for x in args.layers)
    cache = args.out / f"fitted_{args.behavior}_n{args.n_train}_L{layers_key}"

    model = sl.load_model(args.model, device=args.device)
    data = load_pairs(args.behavior)
    train = data.train.head(args.n_train)
    test_pairs = data.test.head(args.n_test)
    test_ab = (data.test_ab or pairs_to_ab(data.test)).head(args.n_test)

    fitted, diag, fit_seconds = fit_all(model, train, args, methods, cache)
    _log(f"[fit] {fit_seconds:.0f}s")
    resid = {d["layer"]: d for d in diag}
    vectors, ratios = [], {}
    for layer in args.eval_layers or args.layers:  # layer-major: finished layers are complete
        for method in methods:
            vec = fitted[method].at_site(layer)
            ref = resid[layer]["resid_norm_letter" if method in LETTER_METHODS
                               else "resid_norm_response"]  # fmt: skip
            if args.rescale:
                vec = vec.normalized() * (args.rescale * ref)
            ratios[(method, layer)] = float(vec.direction().norm()) / ref
            vectors.append(vec)

    # the unsteered model once; every vector's multiplier-0 rows reuse it
    t1 = time.perf_counter()
    kw = {"batch_size": args.batch_size, "progress": False}
    base_ab = ab_probability(model, test_ab, None, [0.0], per_item=True, **kw)
    base_lk = likelihood_margin(model, test_pairs, None, [0.0], per_item=True, **kw)
    base_seconds = time.perf_counter() - t1
    _log(f"[baseline] {base_seconds:.0f}s")

    def with_base(base: pd.DataFrame, frame: pd.DataFrame) -> list[pd.DataFrame]:
        b = base.copy()
        for col in ("vector", "method"):
            b[col] = frame[col].iloc[0]
        b["layer"] = pd.Series([frame["layer"].iloc[0]] * len(b), dtype=object)
        return [b, frame]

    ab_frames: list[pd.DataFrame] = []
    lk_frames: list[pd.DataFrame] = []
    done: list[tuple[str, str, int]] = []
    result: dict = {}
    for i, vec in enumerate(vectors):
        tv = time.perf_counter()
        ab = ab_probability(model, test_ab, vec, nonzero, per_item=True, **kw)
        lk = likelihood_margin(model, test_pairs, vec, nonzero, per_item=True, **kw)
        ab_frames += with_base(base_ab, ab)
        lk_frames += with_base(base_lk, lk)
        done.append((ab["vector"].iloc[0], vec.method, vec.layers[0]))
        _log(f"[{i + 1}/{len(vectors)}] {vec.method} L{vec.layers[0]} "
             f"{time.perf_counter() - tv:.0f}s")  # fmt: skip

        ab_items = pd.concat(ab_frames, ignore_index=True)
        lk_items = pd.concat(lk_frames, ignore_index=True)
        summary = pd.concat(
            [summarize(ab_items, AB_METRICS), summarize(lk_items, LIKELIHOOD_METRICS)],
            ignore_index=True,
        )
        rows = table_rows(summary, ab_items, lk_items, done, ratios, mults)
        result = {
            "behavior": args.behavior,
            "model_id": model.model_id,
            "n_train_pairs": len(train),
            "n_test_ab_items": len(test_ab),
            "n_test_pairs": len(test_pairs),
            "layers": args.layers,
            "methods": methods,
            "multipliers": mults,
            "rescale": args.rescale,
            "vectors_done": i + 1,
            "vectors_total": len(vectors),
            "fit_seconds": round(fit_seconds, 1),
            "baseline_seconds": round(base_seconds, 1),
            "total_seconds": round(time.perf_counter() - t_start, 1),
            "device": str(model.device),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "diagnostics": diag,
            "table": rows,
            "summary": json.loads(summary.to_json(orient="records")),
        }
        Path(f"{stem}.json").write_text(json.dumps(result, indent=1))  # tags may hold dots
        Path(f"{stem}.md").write_text(markdown_table(rows, mults) + "\n")
        pd.concat([ab_items, lk_items], ignore_index=True).to_csv(f"{stem}_items.csv", index=False)

    print(json.dumps({k: v for k, v in result.items() if k != "summary"}, indent=1))
    print()
    print(markdown_table(result["table"], mults))
    return result


if __name__ == "__main__":
    main()
