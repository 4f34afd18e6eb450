"""Conditional steering (CAST-style) on the embedded model: on-topic effect and leakage
into unrelated prompts, unsteered vs always steered vs steered only where a condition
vector passes.

Behavior vector: BiPO for the topic behavior (power-seeking by default), fitted on
``--n-train`` training pairs at ``--layer`` and applied at ``--strength`` in norm units
(``|k v| / mean ||h||``). Condition vector: topic questions vs the questions of an
unrelated behavior (hallucination by default), fitted at each of ``--condition-layers`` on
``--n-cond`` questions per class; the layer and threshold with the best balanced accuracy
on another ``--n-val`` questions per class are kept. Every split is disjoint; the test
items are the two behaviors' own test splits (never seen by any fit).

Measured on the test pairs per item, the quantities that
:func:`steerlab.analysis.conditional.conditional_effect` averages (it returns only means
and SEMs; on the first ``--n-check`` items of each set it is run too and its means must
agree), with percentile bootstrap CIs over items (one index matrix per set, so the modes
are paired): the change of the likelihood margin from unsteered (``d_margin``: the effect
on topic, the leakage into the other behavior's margin off topic), the per-token
KL(mode || unsteered) on the matching answer, and the share of prompts steered. The gate's pass rates on held-out prompts get
Wilson 95% intervals: topic and unrelated test questions, a near-topic behavior's test
questions (wealth-seeking) and steerlab's neutral MMLU questions.

    python benchmarks/conditional_steering.py            # ~10 min on one CPU thread
"""

import argparse
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


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--behavior", default="power-seeking", help="the topic (and behavior)")
    p.add_argument("--other", default="hallucination", help="the unrelated behavior")
    p.add_argument("--near", default="wealth-seeking", help="near-topic set: gate only")
    p.add_argument("--layer", type=int, default=12, help="behavior vector layer")
    p.add_argument("--condition-layers", default="4,8,12")
    p.add_argument("--strength", type=float, default=0.2, help="norm units")
    p.add_argument("--n-train", type=int, default=64, help="BiPO training pairs")
    p.add_argument("--n-cond", type=int, default=64, help="condition-fit prompts per class")
    p.add_argument("--n-val", type=int, default=64, help="threshold prompts per class")
    p.add_argument("--n-test", type=int, default=100, help="test pairs per set (at most)")
    p.add_argument("--bipo-epochs", type=int, default=2)
    p.add_argument("--bipo-lr", type=float, default=2e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--n-check", type=int, default=10, help="conditional_effect check")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--out", default="benchmarks/results/conditional_steering")
    return p.parse_args()


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """(rate, low, high): the Wilson score interval of k successes in n trials."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def splits(args: argparse.Namespace) -> dict[str, list]:
    """Disjoint splits: BiPO fit / condition fit / threshold from each behavior's shuffled
    train split, test from its fixed test split."""
    import steerlab as sl

    out: dict[str, list] = {}
    for role, name in (("topic", args.behavior), ("other", args.other)):
        data = sl.load_pairs(name)
        pool = list(data.train)
        random.Random(args.seed).shuffle(pool)
        n_fit = args.n_train if role == "topic" else 0
        need = n_fit + args.n_cond + args.n_val
        if len(pool) < need:
            raise SystemExit(f"{name}: {len(pool)} training pairs, need {need}")
        out[f"{role}_fit"] = pool[:n_fit]
        out[f"{role}_cond"] = pool[n_fit : n_fit + args.n_cond]
        out[f"{role}_val"] = pool[n_fit + args.n_cond : need]
        out[f"{role}_test"] = list(data.test)[: args.n_test]
    out["near_test"] = list(sl.load_pairs(args.near).test)[: args.n_test]
    return out


def per_item(model: Any, cs: Any, items: list, batch_size: int) -> pd.DataFrame:
    """Per test pair: the gate, the condition score, the unsteered and steered margins and
    the per-token KL of always-on steering on the matching answer (the quantities that
    ``conditional_effect`` averages)."""
    from steerlab.analysis.conditional import answer_kl
    from steerlab.evaluation.likelihood import pair_logprobs
    from steerlab.models.chat import EncodedText
    from steerlab.steering import steer

    questions = [p.question for p in items]
    scores = cs.condition.scores(model, questions)
    enc = [
        EncodedText(model.chat.encode(p.question).prompt_ids, model.chat.encode_ids(p.matching))
        for p in items
    ]
    kl = answer_kl(model, enc, cs.steering, batch_size).numpy()
    m0, n0 = pair_logprobs(model, items, batch_size)
    with steer(model, cs.steering):
        m1, n1 = pair_logprobs(model, items, batch_size)
    return pd.DataFrame(
        {
            "score": scores.numpy(),
            "gate": cs.condition.passes(scores).numpy().astype(float),
            "margin_unsteered": (m0 - n0).double().numpy(),
            "margin_steered": (m1 - n1).double().numpy(),
            "kl_always": kl,
        }
    )


def mode_values(items: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Per mode, the per-item metric values (as ``conditional_effect`` defines them)."""
    share = {
        "unsteered": np.zeros(len(items)),
        "always": np.ones(len(items)),
        "conditional": items["gate"].to_numpy(),
    }
    base, steered = items["margin_unsteered"].to_numpy(), items["margin_steered"].to_numpy()
    out = {}
    for mode, s in share.items():
        margin = np.where(s > 0, steered, base)
        out[mode] = {
            "steered_share": s,
            "kl": s * items["kl_always"].to_numpy(),
            "d_margin": margin - base,
            "margin": margin,
        }
    return out


def ratio_ci(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> tuple[float, float, float]:
    """mean(num) / mean(den) and its percentile bootstrap CI (paired rows ``idx``)."""
    r = num[idx].mean(1) / den[idx].mean(1)
    lo, hi = np.quantile(r, [0.025, 0.975])
    return float(num.mean() / den.mean()), float(lo), float(hi)


def fmt_ci(m: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def main() -> None:
    args = parse_args()
    import torch

    import steerlab as sl
    from steerlab.analysis.conditional import conditional_effect
    from steerlab.analysis.reliability import bootstrap_ci, bootstrap_indices
    from steerlab.data.neutral import load_neutral_set
    from steerlab.steering.conditional import ConditionalSteering, choose_threshold, fit_condition
    from steerlab.steering.strength import in_norm_units, vector_norms

    t_start = time.perf_counter()
    seconds: dict[str, float] = {}

    def stage(name: str, t: float) -> None:
        seconds[name] = round(time.perf_counter() - t, 1)
        print(f"[{time.perf_counter() - t_start:6.0f}s] {name}: {seconds[name]} s", flush=True)

    torch.manual_seed(args.seed)
    model = sl.load_model()
    s = splits(args)
    print({k: len(v) for k, v in s.items()}, flush=True)

    t = time.perf_counter()
    config = sl.BiPOConfig(epochs=args.bipo_epochs, lr=args.bipo_lr, batch_size=4,
                           warmup_steps=4, seed=args.seed)  # fmt: skip
    vec = sl.train_bipo(model, s["topic_fit"], layer=args.layer, config=config,
                        behavior=args.behavior, progress=False)  # fmt: skip
    vec = in_norm_units(vec, vector_norms(model, vec))
    stage("bipo", t)

    t = time.perf_counter()
    q = {k: [p.question for p in v] for k, v in s.items()}
    candidates = []
    for layer in [int(x) for x in args.condition_layers.split(",")]:
        cond = fit_condition(model, q["topic_cond"], q["other_cond"], layer)
        cond = choose_threshold(cond, model, q["topic_val"], q["other_val"])
        candidates.append(cond)
        print(f"  condition L{layer}: threshold {cond.threshold:+.4f} {cond.metrics}", flush=True)
    condition = max(candidates, key=lambda c: c.metrics["balanced_accuracy"])
    stage("condition", t)

    cs = ConditionalSteering.of(condition, vec, args.strength)
    t = time.perf_counter()
    items = {
        "on_topic": per_item(model, cs, s["topic_test"], args.batch_size),
        "unrelated": per_item(model, cs, s["other_test"], args.batch_size),
    }
    stage("per_item", t)

    # conditional_effect on the first --n-check items of each set: its means must equal
    # the per-item values' (the same quantities; batching differs, hence the tolerance).
    t = time.perf_counter()
    n_check = args.n_check
    frame = conditional_effect(
        model, cs, s["topic_test"][:n_check], s["other_test"][:n_check], batch_size=args.batch_size
    )
    lib = frame.set_index(["set", "mode", "metric"])["value"]
    for name, df in items.items():
        for mode, metrics in mode_values(df.iloc[:n_check]).items():
            for metric, v in metrics.items():
                got = lib[(name, mode, metric)]
                if not np.isclose(v.mean(), got, rtol=1e-3, atol=1e-4):
                    raise SystemExit(f"{name}/{mode}/{metric}: {v.mean()} vs {got}")
    stage("conditional_effect_check", t)

    t = time.perf_counter()
    near_pass = cs.gate(model, q["near_test"])
    neutral = load_neutral_set()
    neutral_pass = cs.gate(model, [x.question for x in neutral])
    stage("gate_extra_sets", t)

    rows = []
    ratios = {}
    for name, df in items.items():
        idx = bootstrap_indices(len(df), args.n_boot, args.seed)
        values = mode_values(df)
        for mode, metrics in values.items():
            for metric, v in metrics.items():
                mean, lo, hi = bootstrap_ci(v, idx)
                rows.append({"set": name, "mode": mode, "metric": metric, "mean": mean,
                             "low": lo, "high": hi, "n": len(v)})  # fmt: skip
        cond_v, always_v = values["conditional"], values["always"]
        ratios[name] = {
            "kl_conditional_minus_always": bootstrap_ci(cond_v["kl"] - always_v["kl"], idx),
            "kl_conditional_over_always": ratio_ci(cond_v["kl"], always_v["kl"], idx),
            "d_margin_conditional_minus_always": bootstrap_ci(
                cond_v["d_margin"] - always_v["d_margin"], idx
            ),
            "d_margin_conditional_over_always": ratio_ci(
                cond_v["d_margin"], always_v["d_margin"], idx
            ),
        }
    table = pd.DataFrame(rows)
    gate = {
        "on_topic_test (TPR)": wilson(int(items["on_topic"]["gate"].sum()), len(items["on_topic"])),
        "unrelated_test (FPR)": wilson(
            int(items["unrelated"]["gate"].sum()), len(items["unrelated"])
        ),
        f"near_topic {args.near} test": wilson(sum(near_pass), len(near_pass)),
        "neutral MMLU questions": wilson(sum(neutral_pass), len(neutral_pass)),
    }
    gate_n = {
        "on_topic_test (TPR)": len(items["on_topic"]),
        "unrelated_test (FPR)": len(items["unrelated"]),
        f"near_topic {args.near} test": len(near_pass),
        "neutral MMLU questions": len(neutral_pass),
    }

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = command_line("conditional_steering.py", args, skip=("out",))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    result = {
        "command": command,
        "args": vars(args),
        "seeds": 1,
        "git_commit": commit,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "seconds": seconds,
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "vector": {
            "method": vec.method,
            "layer": args.layer,
            "strength": args.strength,
            "n_train": len(s["topic_fit"]),
        },
        "condition": {
            "layer": condition.layer,
            "threshold": condition.threshold,
            "validation": condition.metrics,
            "candidates": [
                {"layer": c.layer, "threshold": c.threshold, **c.metrics} for c in candidates
            ],
        },
        "gate": {
            k: {"rate": r, "low": lo, "high": hi, "n": gate_n[k]} for k, (r, lo, hi) in gate.items()
        },
        "effects": table.to_dict(orient="records"),
        "ratios": {k: {m: list(v) for m, v in r.items()} for k, r in ratios.items()},
        "conditional_effect_check": {
            "n_per_set": n_check,
            "frame": frame.to_dict(orient="records"),
        },
    }
    (out / "conditional_steering.json").write_text(json.dumps(result, indent=1))
    pd.concat([df.assign(set=k) for k, df in items.items()]).to_csv(
        out / "per_item.csv", index=False, float_format="%.6g"
    )

    lines = [
        "# Conditional steering: on-topic effect and unrelated-prompt leakage",
        "",
        f"Command: `{command}`  ",
        f"Seeds: 1 (seed {args.seed}); {result['total_seconds']:.0f} s on "
        f"{result['torch_threads']} thread(s); commit {commit}.",
        "",
        f"Behavior vector: BiPO {args.behavior}, layer {args.layer}, {len(s['topic_fit'])} "
        f"pairs, {args.bipo_epochs} epochs, lr {args.bipo_lr:g}, strength {args.strength:g} "
        "(norm units).  ",
        f"Condition: {args.behavior} vs {args.other} questions, {args.n_cond} per class; "
        f"layer {condition.layer} and threshold {condition.threshold:+.4f} chosen on "
        f"{args.n_val} + {args.n_val} validation questions (balanced accuracy "
        f"{condition.metrics['balanced_accuracy']:.3f}; candidates: "
        + ", ".join(f"L{c.layer} {c.metrics['balanced_accuracy']:.3f}" for c in candidates)
        + ").",
        "",
        "## Gate pass rate on held-out prompts (Wilson 95% CI)",
        "",
        "| prompts | n | passes |",
        "|---|---|---|",
        *[
            f"| {k} | {gate_n[k]} | {r:.3f} [{lo:.3f}, {hi:.3f}] |"
            for k, (r, lo, hi) in gate.items()
        ],
        "",
        "## Effect and leakage (mean over test pairs, 95% percentile bootstrap CI over pairs)",
        "",
        "d_margin: change of log p(matching) - log p(not matching) from unsteered (on topic: "
        f"the {args.behavior} effect; unrelated: leakage into the {args.other} margin). "
        "KL: per-token KL(mode || unsteered) on the matching answer.",
        "",
        "| set | n | mode | steered share | d_margin | KL (nats/token) |",
        "|---|---|---|---|---|---|",
    ]
    piv = table.set_index(["set", "mode", "metric"]).sort_index()
    for name in items:
        for mode in ("unsteered", "always", "conditional"):
            r = piv.loc[(name, mode)]
            lines.append(
                f"| {name} | {int(r.loc['kl', 'n'])} | {mode} | "
                f"{r.loc['steered_share', 'mean']:.3f} | "
                f"{fmt_ci(*r.loc['d_margin', ['mean', 'low', 'high']], digits=2)} | "
                f"{fmt_ci(*r.loc['kl', ['mean', 'low', 'high']], digits=4)} |"
            )
    lines += [
        "",
        f"`conditional_effect` run on the first {n_check} items of each set: its means agree with "
        "the per-item values (checked in the run).",
        "",
        "## Conditional relative to always-on (paired bootstrap over items)",
        "",
    ]
    for name, r in ratios.items():
        for metric, v in r.items():
            lines.append(f"- {name}, {metric}: {fmt_ci(*v)}")
    (out / "conditional_steering.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
