"""BiPO acceptance check: train on power-seeking pairs, then the held-out likelihood
margin across multipliers (mean log p(matching) - log p(not matching), response tokens).

    python benchmarks/bipo_margin.py --n-train 160 --epochs 3 --layer 14 --n-test 100 --lr 5e-4

Validation (best-epoch selection) uses ``--n-val`` pairs taken from the train split after
the first ``--n-train``, so the test pairs are only used for the final measurement.
"""

import argparse
import json
import time

import _env  # noqa: F401  (set-up: data root, offline, sys.path)

import steerlab as sl
from steerlab.data import load_pairs
from steerlab.evaluation import likelihood_margin_fast
from steerlab.vectors.bipo import BiPOConfig, fit_bipo_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--behavior", default="power-seeking")
    ap.add_argument("--n-train", type=int, default=160)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--n-val", type=int, default=32, help="0: no validation")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    model = sl.load_model()
    data = load_pairs(args.behavior)
    cfg = BiPOConfig(epochs=args.epochs, warmup_steps=args.warmup_steps, lr=args.lr)
    val = data.train[args.n_train : args.n_train + args.n_val] if args.n_val else None
    t = time.perf_counter()
    run = fit_bipo_run(
        model,
        data.train[: args.n_train],
        layer=args.layer,
        config=cfg,
        val_pairs=val,
        behavior=args.behavior,
        out_dir=args.out,
        progress=False,
    )
    train_s = time.perf_counter() - t
    df = likelihood_margin_fast(
        model, data.test[: args.n_test], run.vector, [-2.0, -1.0, 0.0, 1.0, 2.0], progress=False
    )
    margins = df[df.metric == "margin"].sort_values("multiplier")
    vals = margins["value"].tolist()
    print(
        json.dumps(
            {
                "config": cfg.to_dict(),
                "n_train": args.n_train,
                "n_test": args.n_test,
                "n_val": args.n_val,
                "layer": args.layer,
                "train_seconds": train_s,
                "vector_norm": {str(k): v for k, v in run.vector.norms().items()},
                "epochs": run.epochs,
                "margin_by_multiplier": dict(zip(margins["multiplier"].tolist(), vals)),
                "monotonic": all(a < b for a, b in zip(vals, vals[1:])),
            },
            indent=2,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
