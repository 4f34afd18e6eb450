"""Judge-free steering table: CAA, freeform and PCA on one behavior, A/B probability and
likelihood margin across multipliers.

    .venv/bin/python benchmarks/judgefree_table.py --n-train 200 --n-test 50 \
        --layers 8,12,14,18 --multipliers=-2,-1,0,1,2 --out benchmarks/results

Fits the three methods on the first ``--n-train`` pairs of the behavior's train split
(CAA and PCA share one collection of A/B answer-letter activations, exactly what
``fit_caa`` / ``fit_pca`` compute; freeform uses response-mean activations), evaluates
the unsteered model once and every (method, layer) at every non-zero multiplier on the
first ``--n-test`` test items (``test_ab``) / pairs (``test``), and prints JSON and a
markdown table. Diagnostics per layer: the mean residual-stream norm at the answer
letter and at response tokens, each vector's norm relative to it, and how much of the
A/B pair differences is the A-vs-B letter identity.

``--rescale F`` rescales every vector to ``F`` x the mean residual norm at its layer
before the sweep (multipliers then read as fractions of that), to separate "the
direction does nothing" from "the raw vector is too short". Results are written after
every vector (``--out``), so an interrupted run keeps what it finished.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "STEERLAB_DATA" not in os.environ:
    _shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if _shared.is_dir():
        os.environ["STEERLAB_DATA"] = str(_shared)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--behavior", default="power-seeking")
    p.add_argument("--model", default="embedded")
    p.add_argument("--device", default=None)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-test", type=int, default=50)
    p.add_argument("--layers", type=_ints, default=[8, 12, 14, 18])
    p.add_argument("--methods", default="caa,freeform,pca")
    p.add_argument("--multipliers", type=_floats, default=[-2.0, -1.0, 0.0, 1.0, 2.0])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--rescale",
        type=float,
        default=None,
        help="rescale each vector to this fraction of the mean residual norm",
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--tag", default="", help="suffix of the output file names")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def diagnostics(acts_ab, acts_ff, vectors, signs) -> list[dict]:  # type: ignore[no-untyped-def]
    """Residual norms, vector norms and the letter-identity share of A/B differences.

    ``signs[i]`` is +1 where item i's matching letter is A: the letter part of its
    difference act(matching) - act(other) is then +(A - B), else -(A - B)."""
    rows = []
    for site in acts_ab.sites:
        resid_letter = float(acts_ab.matching[site].norm(dim=-1).mean())
        resid_resp = float(acts_ff.matching[site].norm(dim=-1).mean())
        diffs = acts_ab.differences(site).double()
        # sign +1 where the matching letter is A: the letter axis flips with it
        sign = torch.tensor(signs, dtype=torch.float64)[:, None]
        letter_axis = (diffs * sign).mean(0)
        letter_share = float(
            ((diffs @ (letter_axis / letter_axis.norm())) ** 2).sum() / (diffs**2).sum()
        )
        row = {
            "layer": site.layer,
            "resid_norm_letter": resid_letter,
            "resid_norm_response": resid_resp,
            "ab_pair_diff_norm": float(diffs.norm(dim=-1).mean()),
            "ab_letter_axis_norm": float(letter_axis.norm()),
            "ab_letter_axis_variance_share": letter_share,
        }
        for method, vec in vectors.items():
            d = vec.direction(site).double()
            row[f"{method}_norm"] = float(d.norm())
            ref = resid_resp if method == "freeform" else resid_letter
            row[f"{method}_norm_over_resid"] = float(d.norm()) / ref
            row[f"{method}_cos_letter_axis"] = float(
                torch.nn.functional.cosine_similarity(d, letter_axis, dim=0)
            )
        if "caa" in vectors and "pca" in vectors:
            row["cos_caa_pca"] = float(
                torch.nn.functional.cosine_similarity(
                    vectors["caa"].direction(site).double(),
                    vectors["pca"].direction(site).double(),
                    dim=0,
                )
            )
            proj = acts_ab.differences(site).double() @ vectors["pca"].direction(site).double()
            row["pca_share_of_diffs_projecting_positive"] = float((proj > 0).double().mean())
        rows.append(row)
    return rows


def markdown_table(summary: pd.DataFrame, mults: list[float]) -> str:
    def cell(sub: pd.DataFrame, metric: str, m: float) -> str:
        r = sub[(sub["metric"] == metric) & (sub["multiplier"] == m)]
        if r.empty:
            return ""
        v, s = float(r["value"].iloc[0]), float(r["sem"].iloc[0])
        return f"{v:.3f}" if metric == "p_matching" else f"{v:.2f} ± {s:.2f}"

    head = (
        "| method | layer | "
        + " | ".join(f"P(match) x{m:g}" for m in mults)
        + " | ΔP (max−min mult) | "
        + " | ".join(f"margin x{m:g}" for m in mults)
        + " | Δmargin |"
    )
    lines = [head, "|" + "---|" * (2 + 2 * len(mults) + 2)]
    lo, hi = min(mults), max(mults)
    for (method, layer), sub in summary.groupby(["method", "layer"], sort=False):
        ps = [cell(sub, "p_matching", m) for m in mults]
        ms = [cell(sub, "margin", m) for m in mults]

        def val(metric: str, m: float, sub: pd.DataFrame = sub) -> float:
            r = sub[(sub["metric"] == metric) & (sub["multiplier"] == m)]
            return float(r["value"].iloc[0]) if not r.empty else float("nan")

        dp = val("p_matching", hi) - val("p_matching", lo)
        dm = val("margin", hi) - val("margin", lo)
        lines.append(
            f"| {method} | {layer} | "
            + " | ".join(ps)
            + f" | {dp:+.3f} | "
            + " | ".join(ms)
            + f" | {dm:+.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import steerlab as sl
    from steerlab.activations import collect
    from steerlab.data import load_pairs, pairs_to_ab
    from steerlab.evaluation import (
        AB_METRICS,
        LIKELIHOOD_METRICS,
        ab_probability_items,
        likelihood_margin_items,
        summarize,
    )
    from steerlab.vectors.fitting import mean_difference, pca_direction, vector_from_acts
    from steerlab.vectors.freeform import as_pairs

    t_start = time.perf_counter()
    progress = not args.no_progress
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    nonzero = [m for m in args.multipliers if m != 0.0]
    tag = args.tag or (f"rescale{args.rescale:g}" if args.rescale else "raw")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"judgefree_{args.behavior}_{tag}"

    model = sl.load_model(args.model, device=args.device)
    data = load_pairs(args.behavior)
    train = data.train.head(args.n_train)
    test_pairs = data.test.head(args.n_test)
    test_ab = (data.test_ab or pairs_to_ab(data.test)).head(args.n_test)

    # --- fit ----------------------------------------------------------------------------
    t0 = time.perf_counter()
    train_ab = list(pairs_to_ab(train, seed=0))  # what fit_caa / fit_pca build (seed 0)
    acts_ab = collect(
        model, train_ab, args.layers, "answer_letter", batch_size=args.batch_size, progress=progress
    )
    acts_ff = collect(
        model,
        as_pairs(train),
        args.layers,
        "response_mean",
        batch_size=args.batch_size,
        progress=progress,
    )
    signs = [1.0 if it.matching == "A" else -1.0 for it in train_ab]
    fitted = {
        "caa": vector_from_acts(
            acts_ab,
            "caa",
            lambda a, s: mean_difference(a.matching[s], a.not_matching[s]),
            args.behavior,
            {"seed": 0},
        ),
        "pca": vector_from_acts(
            acts_ab, "pca", lambda a, s: pca_direction(a.differences(s)), args.behavior, {"seed": 0}
        ),
        "freeform": vector_from_acts(
            acts_ff,
            "freeform",
            lambda a, s: mean_difference(a.matching[s], a.not_matching[s]),
            args.behavior,
        ),
    }
    fitted = {k: v for k, v in fitted.items() if k in methods}
    fit_seconds = time.perf_counter() - t0
    diag = diagnostics(acts_ab, acts_ff, fitted, signs)
    resid = {d["layer"]: d for d in diag}

    vectors = []
    for layer in args.layers:
        for method in methods:
            vec = fitted[method].at_site(layer)
            if args.rescale:
                ref = resid[layer][
                    "resid_norm_response" if method == "freeform" else "resid_norm_letter"
                ]
                vec = vec.normalized() * (args.rescale * ref)
            vectors.append(vec)

    # --- evaluate -----------------------------------------------------------------------
    t1 = time.perf_counter()
    ab_frames = [
        ab_probability_items(
            model, test_ab, None, [0.0], batch_size=args.batch_size, progress=False
        )
    ]
    lk_frames = [
        likelihood_margin_items(
            model, test_pairs, None, [0.0], batch_size=args.batch_size, progress=False
        )
    ]
    base_seconds = time.perf_counter() - t1
    print(f"[baseline] {base_seconds:.0f}s", file=sys.stderr, flush=True)

    def relabel(frame: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        for col in ("vector", "method"):
            out[col] = like[col].iloc[0]
        out["layer"] = pd.Series([like["layer"].iloc[0]] * len(out), dtype=object)
        return out

    result: dict = {}
    for i, vec in enumerate(vectors):
        tv = time.perf_counter()
        ab = ab_probability_items(
            model, test_ab, vec, nonzero, batch_size=args.batch_size, progress=False
        )
        lk = likelihood_margin_items(
            model, test_pairs, vec, nonzero, batch_size=args.batch_size, progress=False
        )
        ab_frames += [relabel(ab_frames[0][ab_frames[0]["vector"] == "unsteered"], ab), ab]
        lk_frames += [relabel(lk_frames[0][lk_frames[0]["vector"] == "unsteered"], lk), lk]
        print(
            f"[{i + 1}/{len(vectors)}] {vec.method} L{vec.layers[0]} "
            f"{time.perf_counter() - tv:.0f}s",
            file=sys.stderr,
            flush=True,
        )
        ab_sum = summarize(pd.concat(ab_frames, ignore_index=True), AB_METRICS)
        lk_sum = summarize(pd.concat(lk_frames, ignore_index=True), LIKELIHOOD_METRICS)
        summary = pd.concat([ab_sum, lk_sum], ignore_index=True)
        summary = summary[summary["vector"] != "unsteered"].copy()
        summary = summary.sort_values(["layer", "method", "metric", "multiplier"])
        result = {
            "behavior": args.behavior,
            "model_id": model.model_id,
            "n_train_pairs": len(train),
            "n_test_ab_items": len(test_ab),
            "n_test_pairs": len(test_pairs),
            "layers": args.layers,
            "methods": methods,
            "multipliers": args.multipliers,
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
            "summary": json.loads(summary.to_json(orient="records")),
        }
        stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
        stem.with_suffix(".md").write_text(markdown_table(summary, args.multipliers) + "\n")
        pd.concat(ab_frames + lk_frames, ignore_index=True).to_csv(f"{stem}_items.csv", index=False)

    table = markdown_table(pd.DataFrame(result["summary"]), args.multipliers)
    print(json.dumps({k: v for k, v in result.items() if k != "summary"}, indent=1))
    print(json.dumps(result["summary"]))
    print()
    print(table)
    return result


if __name__ == "__main__":
    main()
