"""A sweep's cells sharing the margin's residual cache per layer: in-process A/B, prints JSON.

The same sweep (the embedded model, several methods at each layer, the fast ``margin`` and
``ab`` metrics, no resume, no matched comparison) runs with the cache shared by the cells
of a layer ("on", :class:`steerlab.analysis.sweeps.LayerCaches`) and with a fresh cache
for every cell ("off", what sweeps did before), in turn, ``--rounds`` times in one process.
"off" also computes the unsteered A/B letters in every cell, as before. Reports each
variant's seconds per round (fits included, the same in both), the median ratio on/off and
the largest difference between the two sweeps' summary values.

    python benchmarks/sweep_cache.py --out benchmarks/results/sweep_cache.json
"""

import argparse
import statistics
import time
from unittest import mock

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import numpy as np
from _report import command_line, emit, uptime

import steerlab as sl
import steerlab.analysis.sweeps as sweeps
import steerlab.evaluation.ab_fast as ab_fast


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--behavior", default="power-seeking")
    ap.add_argument("--layers", default="14")
    ap.add_argument("--methods", default="caa,freeform,pca")
    ap.add_argument("--n-train", type=int, default=16)
    ap.add_argument("--n-test", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = {"command": command_line("sweep_cache.py", args), "uptime_at_start": uptime()}
    model = sl.load_model(args.model)
    data = sl.load_pairs(args.behavior)
    layers = [int(x) for x in args.layers.split(",")]
    methods = args.methods.split(",")
    cfg = sl.SweepConfig(n_train=args.n_train, n_test=args.n_test, metrics=("margin", "ab"),
                         progress=False, resume=False)  # fmt: skip
    letters = ab_fast._letter_logits

    def run(shared: bool) -> tuple[float, np.ndarray]:
        patches = []
        if not shared:  # every cell its own cache, and the unsteered letters every time
            patches = [
                mock.patch.object(sweeps.LayerCaches, "at", lambda self, layer: {}),
                mock.patch.object(
                    ab_fast, "_letter_logits", lambda *a, **k: letters(*a[:5], True)
                ),  # fmt: skip
            ]
        for p in patches:
            p.start()
        try:
            t = time.perf_counter()
            res = sl.sweep(model, data, methods, layers, config=cfg)
            seconds = time.perf_counter() - t
        finally:
            for p in patches:
                p.stop()
        frame = res.frame.sort_values(["vector", "evaluation", "metric", "multiplier"])
        return seconds, frame["value"].to_numpy(dtype=float)

    seconds: dict[str, list[float]] = {"on": [], "off": []}
    values: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for variant in ("on", "off"):
            s, v = run(variant == "on")
            seconds[variant].append(s)
            values[variant] = v
    ratios = [a / b for a, b in zip(seconds["on"], seconds["off"])]
    out.update(
        {
            "layers": layers,
            "methods": methods,
            "seconds_on": seconds["on"],
            "seconds_off": seconds["off"],
            "on_over_off_per_round": ratios,
            "on_over_off_median": statistics.median(ratios),
            "max_abs_diff": float(np.abs(values["on"] - values["off"]).max()),
        }
    )
    emit(out, args.out)


if __name__ == "__main__":
    main()
