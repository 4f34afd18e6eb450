"""The fast A/B probability against the plain one: in-process A/B, prints JSON.

On the embedded model, the behavior's A/B test items (``--n-items``), scored under the
vectors ``steerlab run`` compares (CAA, freeform and PCA fitted at ``--layer`` on
``--n-fit`` training pairs, plus CAA four layers lower) at ``--multipliers``, twice: one
vector alone (what ``steerlab eval ab`` does) and all four together (``steerlab run``'s
A/B stage). Each setting runs with ``ab_probability`` and ``ab_probability_fast`` in turn,
``--rounds`` times, in one process (so machine drift hits both alike). Reports the
seconds per round, the median ratio fast/plain and the largest difference of the
per-item values (``p_matching``, ``letter_mass``, ``logit_diff``) between the two.
``--mmlu-per-subject N`` scores CAA's two-choice MMLU items instead (N per subject), as
``steerlab eval mmlu`` does (its plain path is ``ab_probability``'s, its fast path
``ab_probability_fast``).

    python benchmarks/ab_fast.py --out benchmarks/results/ab_fast.json
    python benchmarks/ab_fast.py --mmlu-per-subject 1 --multipliers=-1,0,1 --out benchmarks/results/ab_fast_mmlu.json
"""

import argparse
import statistics
import time

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import numpy as np
import torch
from _report import command_line, emit, uptime

import steerlab as sl
from steerlab.data import load_pairs
from steerlab.evaluation import ab_probability, ab_probability_fast

COLUMNS = ["p_matching", "letter_mass", "logit_diff"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--behavior", default="power-seeking")
    ap.add_argument("--n-items", type=int, default=200, help="A/B test items")
    ap.add_argument("--n-fit", type=int, default=64, help="training pairs of the vectors")
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--multipliers", default="-2,-1,0,1,2")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mmlu-per-subject", type=int, default=None, help="score MMLU items")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    started = uptime()
    torch.manual_seed(0)
    model = sl.load_model(args.model)
    split = load_pairs(args.behavior).split(n_test=args.n_items, seed=0)
    train = list(split.train)[: args.n_fit]
    vecs = [sl.fit(m, model, train, [args.layer]) for m in ("caa", "freeform", "pca")]
    vecs.append(sl.fit("caa", model, train, [args.layer - 4]))
    items = list(split.test_ab)
    if args.mmlu_per_subject:
        items = [it.to_ab() for it in sl.load_mmlu(per_subject=args.mmlu_per_subject)]
    mults = [float(x) for x in args.multipliers.split(",")]
    settings = {"one_vector": vecs[:1], "four_vectors": vecs}
    fns = {"plain": ab_probability, "fast": ab_probability_fast}

    def score(fn, vs):
        return fn(model, items, vs, mults, batch_size=args.batch_size, progress=False,
                  per_item=True)  # fmt: skip

    times = {s: {f: [] for f in fns} for s in settings}
    frames: dict = {s: {} for s in settings}
    for _ in range(args.rounds):
        for s, vs in settings.items():
            for f, fn in fns.items():
                t = time.perf_counter()
                frames[s][f] = score(fn, vs)
                times[s][f].append(time.perf_counter() - t)
    out: dict = {
        "command": command_line("ab_fast.py", args),
        "uptime_at_start": started,
        "threads": torch.get_num_threads(),
        "n_items": len(items),
        "multipliers": mults,
    }
    for s in settings:
        plain, fast = frames[s]["plain"], frames[s]["fast"]
        diff = np.abs(plain[COLUMNS].to_numpy() - fast[COLUMNS].to_numpy()).max(axis=0)
        out[s] = {
            "vectors": [v.method + f":L{v.sites[0].layer}" for v in settings[s]],
            "conditions": int(len(plain) // len(items)),
            "seconds_plain": times[s]["plain"],
            "seconds_fast": times[s]["fast"],
            "fast_over_plain_median": statistics.median(times[s]["fast"])
            / statistics.median(times[s]["plain"]),
            "max_abs_diff": dict(zip(COLUMNS, map(float, diff))),
            "mean_p_matching_by_multiplier": {
                float(k): round(float(v), 4)
                for k, v in fast.groupby("multiplier")["p_matching"].mean().items()
            },
        }
    emit(out, args.out)


if __name__ == "__main__":
    main()
