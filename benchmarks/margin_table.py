"""Held-out likelihood margin of saved vectors across multipliers (the cached-residual
fast path), as JSON and a markdown table.

    .venv/bin/python benchmarks/margin_table.py runs/vectors/*.safetensors \
        --behavior power-seeking --n-test 30 --layers 14,18
"""

import argparse
import json
import time
from pathlib import Path

import _env  # noqa: F401  (set-up: data root, offline, sys.path)

import steerlab as sl
from steerlab.evaluation import likelihood_margin_fast, pivot_metric


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("vectors", nargs="+", type=Path)
    ap.add_argument("--behavior", default="power-seeking")
    ap.add_argument("--n-test", type=int, default=30)
    ap.add_argument("--layers", default=None, help="keep only these layers, e.g. 14,18")
    ap.add_argument("--multipliers", default="-2,-1,0,1,2")
    args = ap.parse_args()
    model = sl.load_model()
    pairs = sl.load_pairs(args.behavior).test[: args.n_test]
    keep = {int(x) for x in args.layers.split(",")} if args.layers else None
    vecs = []
    for path in args.vectors:
        vec = sl.load_vector(path)
        for site in vec.sites:
            if keep is None or site.layer in keep:
                vecs.append(vec.at_site(site))
    mults = [float(x) for x in args.multipliers.split(",")]
    t = time.perf_counter()
    df = likelihood_margin_fast(model, pairs, vecs, mults, progress=False)
    table = pivot_metric(df, "margin")
    print(
        json.dumps(
            {
                "behavior": args.behavior,
                "n_test": len(pairs),
                "seconds": time.perf_counter() - t,
                "margin": [
                    {"vector": v, "method": m, **{str(k): float(x) for k, x in row.items()}}
                    for (v, m), row in table.iterrows()
                ],
            },
            indent=2,
        )
    )
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
