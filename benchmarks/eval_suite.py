"""Evaluation suite on the embedded model: MMLU and jailbreak ASR under a power-seeking
vector at -1 / 0 / +1, and TruthfulQA MC1 / MC2 unsteered.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_suite.py --out benchmarks/results/eval_suite

The vector: BiPO (default; ``train_bipo`` on the first 160 power-seeking training pairs,
layer 14, 3 epochs, 10 warm-up steps) or CAA (``--method caa``: ``fit_caa`` on the first
200 pairs, layer 14), or a saved one (``--vector PATH``). MMLU uses ``--per-subject``
items per subject (default 3 = 171 of CAA's 570; 0 = all 570); jailbreak ASR the
``--jb-n`` BiPO jailbreak test questions (default all 100) with ``--max-new-tokens``
(default 48) greedy tokens, refusal-phrase classifier; TruthfulQA a seeded subsample of
``--tqa-n`` of the 817 v1 questions (0 = all). Each step's frame is saved as CSV under
``--out`` when it finishes; at the end the script prints JSON and a markdown table.
``--smoke`` runs everything on the tiny random model with a handful of items.
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
    p.add_argument("--vector", default=None, help="a saved vector instead of training one")
    p.add_argument("--layer", type=int, default=14)
    p.add_argument("--per-subject", type=int, default=3, help="MMLU items per subject; 0 = all")
    p.add_argument("--jb-n", type=int, default=100, help="jailbreak questions (max 100)")
    p.add_argument("--tqa-n", type=int, default=200, help="TruthfulQA questions; 0 = all 817")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--multipliers", default="-1,0,1")
    p.add_argument("--out", default="benchmarks/results/eval_suite")
    p.add_argument(
        "--skip", default="", help="comma-separated steps to skip: mmlu,jailbreak,truthfulqa"
    )
    p.add_argument("--smoke", action="store_true", help="tiny random model, few items")
    return p.parse_args(argv)


def get_vector(model, args, out: Path):  # type: ignore[no-untyped-def]
    from steerlab.data import load_pairs
    from steerlab.vectors.vector import SteeringVector

    if args.vector:
        return SteeringVector.load(args.vector), {"source": args.vector}
    pairs = load_pairs("power-seeking")
    t0 = time.perf_counter()
    layer = min(args.layer, model.n_layers - 1)
    if args.method == "caa":
        from steerlab.vectors.caa import fit_caa

        n = 8 if args.smoke else 200
        vec = fit_caa(model, pairs.train[:n], layers=[layer], behavior="power-seeking")
        info = {"method": "caa", "n_train": n, "layer": layer}
    else:
        from steerlab.vectors.bipo import BiPOConfig, train_bipo

        n = 8 if args.smoke else 160
        cfg = BiPOConfig(epochs=1 if args.smoke else 3, warmup_steps=10)
        vec = train_bipo(model, pairs.train[:n], layer=layer, config=cfg, behavior="power-seeking")
        info = {"method": "bipo", "n_train": n, "layer": layer, "epochs": cfg.epochs}
    info["seconds"] = round(time.perf_counter() - t0, 1)
    info["norm"] = round(next(iter(vec.norms().values())), 4)
    vec.save(out / f"power-seeking-{info['method']}-L{layer}.safetensors")
    return vec, info


def markdown_table(rows: list[dict], mults: list[float]) -> str:
    """benchmark | metric | one column per multiplier ("value ± sem (n)")."""
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
            sem = f" ± {r['sem']:.3f}" if r["sem"] is not None else ""
            cells.append(f"{r['value']:.3f}{sem} (n={r['n']})")
        lines.append(f"| {bench} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import steerlab as sl
    from steerlab.data import load_mmlu
    from steerlab.evaluation.benchmarks import jailbreak_asr, mmlu_accuracy, truthfulqa_mc
    from steerlab.evaluation.benchmarks.jailbreak import ASR_METRICS, direction_of
    from steerlab.evaluation.multipliers import summarize

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
        "command": " ".join([sys.executable, *sys.argv]),
    }
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    vec, report["vector"] = get_vector(model, args, out)
    timings["vector"] = time.perf_counter() - t0

    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    frames: dict[str, pd.DataFrame] = {}
    if "mmlu" not in skip:
        per_subject = 1 if args.smoke else (args.per_subject or None)
        t0 = time.perf_counter()
        mmlu_data = load_mmlu(per_subject=per_subject)
        if args.smoke:
            mmlu_data = mmlu_data[:6]
        frames["MMLU"] = mmlu_accuracy(
            model, vec, mults, data=mmlu_data, batch_size=args.batch_size
        )
        frames["MMLU"].to_csv(out / "mmlu.csv", index=False)
        timings["mmlu"] = time.perf_counter() - t0
        report["mmlu_items"] = len(mmlu_data)

    if "jailbreak" not in skip:
        t0 = time.perf_counter()
        jb_n = 3 if args.smoke else min(args.jb_n, 100)
        jb_items = jailbreak_asr(
            model,
            vec,
            mults,
            n=jb_n if jb_n < 100 else None,
            max_new_tokens=4 if args.smoke else args.max_new_tokens,
            batch_size=args.batch_size,
            per_item=True,
        )
        jb_items.to_json(out / "jailbreak.items.jsonl", orient="records", lines=True)
        frames["jailbreak"] = summarize(jb_items, ASR_METRICS)
        jb = frames["jailbreak"]
        jb.insert(4, "direction", [direction_of(m) for m in jb["multiplier"]])
        frames["jailbreak"].to_csv(out / "jailbreak.csv", index=False)
        timings["jailbreak"] = time.perf_counter() - t0
        report["jailbreak_questions"] = jb_n

    if "truthfulqa" not in skip:
        t0 = time.perf_counter()
        tqa_n = 3 if args.smoke else (args.tqa_n or None)
        frames["TruthfulQA"] = truthfulqa_mc(model, None, n=tqa_n, batch_size=args.batch_size)
        frames["TruthfulQA"].to_csv(out / "truthfulqa.csv", index=False)
        timings["truthfulqa"] = time.perf_counter() - t0
        report["truthfulqa_questions"] = tqa_n or 817

    report["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    rows = []
    shown = {"MMLU": ("accuracy", "p_correct"), "jailbreak": ("asr",), "TruthfulQA": ("mc1", "mc2")}
    for name, frame in frames.items():
        metrics = shown[name]
        for r in frame[frame["metric"].isin(metrics)].itertuples():
            rows.append(
                {
                    "benchmark": name,
                    "metric": r.metric,
                    "multiplier": r.multiplier,
                    "value": round(r.value, 4),
                    "sem": round(r.sem, 4) if pd.notna(r.sem) else None,
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
