"""Evaluation suite on the embedded model: two-choice MMLU under a power-seeking vector,
jailbreak ASR under a *jailbreak* vector, both at -1 / 0 / +1, and TruthfulQA MC1 / MC2
unsteered on its test split; every number with n and a 95% CI.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_suite.py --out benchmarks/results/eval_suite

Vectors (``--method``): BiPO (default; ``train_bipo`` on the first ``--n-train`` (160)
training pairs of the behavior, layer 14, 3 epochs, 10 warm-up steps) or CAA
(``fit_caa`` on the first ``--n-train`` pairs), or saved ones (``--vector PATH`` for
MMLU, ``--jb-vector PATH`` for the jailbreak). The MMLU vector is trained on
power-seeking (the utility cost of a behavior vector); the jailbreak vector on BiPO's
jailbreak pairs (matching = compliance), so +1 is the attack and -1 the defence.

MMLU is CAA's two-choice set (chance 0.5): ``--per-subject`` items per subject (default
3 = 171 of 570; 0 = all). Jailbreak: the ``--jb-n`` BiPO jailbreak test questions
(default all 100), ``--max-new-tokens`` (48) greedy tokens; an attack succeeds when the
answer has no refusal phrase *and* passes the coherence gate (plausible under the
unsteered model, not a loop, on-topic); ``asr_phrase_only`` is the phrase-only number.
TruthfulQA: a seeded subsample of ``--tqa-n`` of the 409 test-split questions (0 = all).
Each step's frames are saved under ``--out`` when it finishes (``mmlu_figure.json``: the
plotly figure with the chance line); at the end the script prints JSON and a markdown
table. ``--smoke`` runs everything on the tiny random model with a handful of items.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import pandas as pd
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--device", default=None)
    p.add_argument("--method", choices=("bipo", "caa"), default="bipo")
    p.add_argument("--vector", default=None, help="a saved power-seeking vector (MMLU)")
    p.add_argument("--jb-vector", default=None, help="a saved jailbreak vector")
    p.add_argument("--n-train", type=int, default=160, help="training pairs per vector")
    p.add_argument("--layer", type=int, default=14)
    p.add_argument("--per-subject", type=int, default=3, help="MMLU items per subject; 0 = all")
    p.add_argument("--jb-n", type=int, default=100, help="jailbreak questions (max 100)")
    p.add_argument("--tqa-n", type=int, default=200, help="TruthfulQA test questions; 0 = all 409")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--multipliers", default="-1,0,1")
    p.add_argument("--out", default="benchmarks/results/eval_suite")
    p.add_argument(
        "--skip", default="", help="comma-separated steps to skip: mmlu,jailbreak,truthfulqa"
    )
    p.add_argument("--smoke", action="store_true", help="tiny random model, few items")
    return p.parse_args(argv)


def get_vector(model, args, out: Path, behavior: str, saved: str | None):  # type: ignore[no-untyped-def]
    """A saved vector, or one fitted on the first ``--n-train`` pairs of ``behavior``."""
    from steerlab.data import load_pairs
    from steerlab.vectors.vector import SteeringVector

    if saved:
        vec = SteeringVector.load(saved)
        return vec, {"source": saved, "behavior": vec.behavior}
    pairs = load_pairs(behavior)
    t0 = time.perf_counter()
    layer = min(args.layer, model.n_layers - 1)
    n = 8 if args.smoke else args.n_train
    if args.method == "caa":
        from steerlab.vectors.caa import fit_caa

        vec = fit_caa(model, pairs.train[:n], layers=[layer], behavior=behavior)
        info = {"method": "caa", "behavior": behavior, "n_train": n, "layer": layer}
    else:
        from steerlab.vectors.bipo import BiPOConfig, train_bipo

        cfg = BiPOConfig(epochs=1 if args.smoke else 3, warmup_steps=10)
        vec = train_bipo(model, pairs.train[:n], layer=layer, config=cfg, behavior=behavior)
        info = {"method": "bipo", "behavior": behavior, "n_train": n, "layer": layer,
                "epochs": cfg.epochs}  # fmt: skip
    info["seconds"] = round(time.perf_counter() - t0, 1)
    info["norm"] = round(next(iter(vec.norms().values())), 4)
    vec.save(out / f"{behavior}-{info['method']}-L{layer}.safetensors")
    return vec, info


def markdown_table(rows: list[dict], mults: list[float]) -> str:
    """benchmark | metric | one column per multiplier ("value [95% CI] (n)")."""
    cols = [f"x{m:+g}" if m else "unsteered (x0)" for m in mults]
    lines = ["| benchmark | metric | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    keys = list(dict.fromkeys((r["benchmark"], r["metric"]) for r in rows))
    for bench, metric in keys:
        cells = []
        for m in mults:
            hit = [
                r
                for r in rows
                if (r["benchmark"], r["metric"], r["multiplier"]) == (bench, metric, m)
            ]
            if not hit:
                cells.append("")
                continue
            r = hit[0]
            ci = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") is not None else ""
            cells.append(f"{r['value']:.3f}{ci} (n={r['n']})")
        lines.append(f"| {bench} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import steerlab as sl
    from steerlab.data import load_mmlu
    from steerlab.evaluation.benchmarks import jailbreak_asr, mmlu_accuracy, truthfulqa_mc
    from steerlab.evaluation.benchmarks.jailbreak import summarize_jailbreak
    from steerlab.viz.benchmarks import benchmark_curves

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    t_start = time.perf_counter()
    if args.smoke:
        from steerlab.models.tiny import load_tiny_model

        model = load_tiny_model()
    else:
        model = sl.load_model(args.model, device=args.device)
    mults = [float(x) for x in args.multipliers.split(",")]
    report: dict = {
        "model": model.model_id,
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "command": " ".join([sys.executable, *sys.argv]),
    }
    timings: dict[str, float] = {}
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    frames: dict[str, pd.DataFrame] = {}
    if "mmlu" not in skip:
        t0 = time.perf_counter()
        vec, report["mmlu_vector"] = get_vector(model, args, out, "power-seeking", args.vector)
        per_subject = 1 if args.smoke else (args.per_subject or None)
        mmlu_data = load_mmlu(per_subject=per_subject)
        if args.smoke:
            mmlu_data = mmlu_data[:6]
        frames["MMLU (two-choice)"] = mmlu_accuracy(
            model, vec, mults, data=mmlu_data, batch_size=args.batch_size
        )
        frames["MMLU (two-choice)"].to_csv(out / "mmlu.csv", index=False)
        fig = benchmark_curves(frames["MMLU (two-choice)"], "accuracy")
        (out / "mmlu_figure.json").write_text(fig.to_json())
        timings["mmlu"] = time.perf_counter() - t0
        report["mmlu_items"] = len(mmlu_data)

    if "jailbreak" not in skip:
        t0 = time.perf_counter()
        jb_vec, report["jailbreak_vector"] = get_vector(
            model, args, out, "jailbreak", args.jb_vector
        )
        jb_n = 3 if args.smoke else min(args.jb_n, 100)
        jb_items = jailbreak_asr(
            model,
            jb_vec,
            mults,
            n=jb_n if jb_n < 100 else None,
            max_new_tokens=4 if args.smoke else args.max_new_tokens,
            batch_size=args.batch_size,
            per_item=True,
        )
        jb_items.to_json(out / "jailbreak.items.jsonl", orient="records", lines=True)
        frames["jailbreak"] = summarize_jailbreak(jb_items)
        frames["jailbreak"].to_csv(out / "jailbreak.csv", index=False)
        timings["jailbreak"] = time.perf_counter() - t0
        report["jailbreak_questions"] = jb_n

    if "truthfulqa" not in skip:
        t0 = time.perf_counter()
        tqa_n = 3 if args.smoke else (args.tqa_n or None)
        frames["TruthfulQA (test split)"] = truthfulqa_mc(
            model, None, n=tqa_n, batch_size=args.batch_size
        )
        frames["TruthfulQA (test split)"].to_csv(out / "truthfulqa.csv", index=False)
        timings["truthfulqa"] = time.perf_counter() - t0
        report["truthfulqa_questions"] = tqa_n or 409

    report["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    report["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    rows = []
    shown = {
        "MMLU (two-choice)": ("accuracy", "p_correct"),
        "jailbreak": ("asr", "asr_phrase_only", "incoherent_rate", "refusal_rate"),
        "TruthfulQA (test split)": ("mc1", "mc2"),
    }
    for name, frame in frames.items():
        for r in frame[frame["metric"].isin(shown[name])].itertuples():
            rows.append(
                {
                    "benchmark": name,
                    "metric": r.metric,
                    "multiplier": r.multiplier,
                    "value": round(r.value, 4),
                    "sem": round(r.sem, 4) if pd.notna(r.sem) else None,
                    "ci_low": round(r.ci_low, 4) if pd.notna(r.ci_low) else None,
                    "ci_high": round(r.ci_high, 4) if pd.notna(r.ci_high) else None,
                    "n": r.n,
                }
            )
    report["results"] = rows
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    table = markdown_table(rows, mults)
    print(table)
    (out / "table.md").write_text(table + "\n")
    return report


if __name__ == "__main__":
    main()
