"""CPU fp32 matmuls: torch's BLAS against oneDNN on the embedded model's shapes, and the
memory oneDNN's primitive cache keeps in a BiPO epoch. Prints JSON.

Rates (GFLOP/s, best of ``--trials`` loops of ``--reps`` calls, each alone): square 2048,
the decoder blocks' products at 420 rows ([420, 576] x [576, 1536] and back, and the
backward's transposed weight), the unembedding at 200 rows and at 1 row (milliseconds per
call: one decoding step's head), each with the largest error against a float64 product.
Memory (``--memory``): one 160-pair fp32 BiPO epoch at layer 14 in a fresh process per
setting (oneDNN's primitive cache read once per process): peak RSS above the one-time
cache for the BLAS, oneDNN with its default cache of 1024 shapes and with steerlab's 32.

    python benchmarks/cpu_gemm.py --memory --out benchmarks/results/cpu_gemm.json
"""

import argparse
import os
import subprocess
import sys
import time

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import torch
import torch.nn.functional as F
from _report import emit, uptime

import steerlab.utils.gemm as gemm

# (rows, inner, out, transposed weight): x [rows, inner] times a weight of [out, inner]
SHAPES = {
    "square_2048": (2048, 2048, 2048, False),
    "block_up_420": (420, 576, 1536, False),
    "block_down_420": (420, 1536, 576, False),
    "block_up_backward_420": (420, 1536, 576, True),
    "head_200": (200, 576, 49152, False),
    "head_1": (1, 576, 49152, False),
}

_EPOCH = """
import resource, sys, time
sys.path.insert(0, "benchmarks")
import _env
import steerlab as sl
from steerlab.activations.packed import build_cache
from steerlab.data import load_pairs
from steerlab.vectors.bipo import BiPOConfig
from steerlab.vectors.bipo.schedule import epoch_plan
from steerlab.vectors.bipo.trainer import BiPOTrainer
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
model = sl.load_model("embedded")
cache = build_cache(model, list(load_pairs("power-seeking").train)[:160], 14, progress=False)
r0, cfg = rss(), BiPOConfig(epochs=1, warmup_steps=2, lr=5e-3)
trainer, t0 = BiPOTrainer(model, cache, [14], cfg), time.perf_counter()
for s in epoch_plan(cache.lengths, cfg, 0):
    trainer.step(s)
print(rss() - r0, time.perf_counter() - t0)
"""


def rate(fn, x, w, flops: float, reps: int, trials: int) -> float:
    fn(x, w)
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            fn(x, w)
        best = min(best, (time.perf_counter() - t) / reps)
    return flops / best / 1e9


def rates(reps: int, trials: int) -> dict:
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, (m, k, n, transposed) in SHAPES.items():
        x = torch.randn(m, k, generator=g)
        w = torch.randn(k, n, generator=g).t() if transposed else torch.randn(n, k, generator=g)
        w = w / k**0.5
        exact = x.double() @ w.double().t()
        row = {}
        for label, fn in (("blas", F.linear), ("onednn", gemm.onednn_linear)):
            row[f"{label}_gflops"] = rate(fn, x, w, 2 * m * k * n, reps, trials)
            row[f"{label}_max_abs_err_vs_float64"] = float((fn(x, w).double() - exact).abs().max())
        row["ms_per_call_blas"] = 2 * m * k * n / row["blas_gflops"] / 1e6
        row["ms_per_call_onednn"] = 2 * m * k * n / row["onednn_gflops"] / 1e6
        row["onednn_over_blas_rate"] = row["onednn_gflops"] / row["blas_gflops"]
        out[name] = row
    return out


def epoch_memory() -> dict:
    settings = {
        "blas": {"STEERLAB_CPU_GEMM": "blas"},
        "onednn_cache_1024": {
            "STEERLAB_CPU_GEMM": "onednn",
            "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024",
        },
        "onednn_cache_32": {"STEERLAB_CPU_GEMM": "onednn", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "32"},
    }
    out = {}
    for name, env in settings.items():
        done = subprocess.run([sys.executable, "-c", _EPOCH], env={**os.environ, **env},
                              capture_output=True, text=True, check=True)  # fmt: skip
        mib, seconds = map(float, done.stdout.split()[-2:])
        out[name] = {"peak_rss_above_cache_mib": mib, "epoch_seconds": seconds}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--memory", action="store_true", help="also the BiPO epoch memory")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not gemm.has_onednn():
        raise SystemExit("this torch build has no oneDNN")
    out: dict = {
        "command": "python benchmarks/cpu_gemm.py"
        + (" --memory" if args.memory else "")
        + (f" --out {args.out}" if args.out else ""),
        "uptime_at_start": uptime(),
        "threads": torch.get_num_threads(),
        "default_backend": gemm.default_backend(),
        "rates": rates(args.reps, args.trials),
    }
    if args.memory:
        out["bipo_epoch_memory"] = epoch_memory()
    emit(out, args.out)


if __name__ == "__main__":
    main()
