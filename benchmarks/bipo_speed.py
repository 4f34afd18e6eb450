"""BiPO speed: the fast trainer vs a plain implementation, side by side, in one run.

Prints JSON: seconds per epoch of each, their ratio, the max per-step loss difference,
peak memory, the bf16 figure and a FLOP-based floor for this machine.

    python benchmarks/bipo_speed.py --n-pairs 32 --layer 14
"""

import argparse
import json
import os
import platform
import threading
import time

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import torch

import steerlab as sl
from steerlab.activations.packed import pack_pairs
from steerlab.data import load_pairs
from steerlab.vectors.bipo import BiPOConfig, fit_bipo_run
from steerlab.vectors.bipo.schedule import epoch_plan
from tests.bipo_plain import plain_bipo


class PeakRSS:
    """Samples this process's resident memory in a thread (Linux /proc)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def __enter__(self) -> "PeakRSS":
        self.base = self._rss()
        self.peak = self.base
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def matmul_gflops(device: torch.device, n: int = 1536, reps: int = 5, trials: int = 5) -> float:
    """Best of ``trials`` fp32 square-matmul rates: what this machine can do at most."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = 0.0
    for _ in range(trials):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def fast_flops(model, pairs, layer, cfg) -> float:
    """Matmul FLOPs of one fast epoch: forward + input-gradient backward (no weight
    gradients, so ~1x forward) of the blocks above ``layer`` over every packed token, plus
    the unembedding at response tokens only. Attention-score FLOPs (short sequences) and
    element-wise work are left out, so the floor is optimistic."""
    blocks = list(model.bridge.blocks)[layer + 1 :]
    p_upper = sum(p.numel() for b in blocks for p in b.parameters())
    packed = pack_pairs(model, pairs)
    tokens = sum(len(p) for p in packed)
    resp = sum(len(p.matching) + len(p.not_matching) for p in packed)
    return 2 * (2 * p_upper * tokens) + 2 * (2 * model.d_model * model.d_vocab * resp)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--behavior", default="power-seeking")
    ap.add_argument("--n-pairs", type=int, default=32)
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--device", default=None)
    ap.add_argument("--skip-plain", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = sl.load_model(args.model, device=args.device)
    pairs = list(load_pairs(args.behavior).train)[: args.n_pairs]
    cfg = BiPOConfig(epochs=1, warmup_steps=2, lr=5e-3)
    out: dict = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "device": str(model.device),
        "threads": torch.get_num_threads(),
        "model": model.model_id,
        "n_pairs": len(pairs),
        "layer": args.layer,
        "n_layers": model.n_layers,
        "batch_size": cfg.batch_size,
        "steps_per_epoch": len(epoch_plan([1] * len(pairs), cfg, 0)),
    }
    # Warm-up: the first forward passes of a process pay one-time costs (allocator,
    # kernel selection) that would otherwise land on whichever variant runs first.
    with torch.no_grad():
        for p in pack_pairs(model, pairs[:4]):
            model.bridge(torch.tensor([p.prompt + p.matching], device=model.device))
    with PeakRSS() as mem:
        t = time.perf_counter()
        run = fit_bipo_run(model, pairs, layer=args.layer, config=cfg, progress=False)
        fast_total = time.perf_counter() - t
    out["fast"] = {
        "seconds_per_epoch": fast_total - run.cache_seconds,
        "one_time_cache_seconds": run.cache_seconds,
        "seconds_first_epoch_incl_cache": fast_total,
        "cache_mb": run.cache_bytes / 2**20,
        "peak_rss_delta_mb": mem.delta_mb,
    }
    with PeakRSS() as mem:
        t = time.perf_counter()
        run16 = fit_bipo_run(
            model,
            pairs,
            layer=args.layer,
            progress=False,
            config=BiPOConfig(epochs=1, warmup_steps=2, lr=5e-3, autocast_bf16=True),
        )
        bf16_total = time.perf_counter() - t
    out["fast_bf16_autocast"] = {
        "seconds_per_epoch": bf16_total - run16.cache_seconds,
        "max_loss_diff_vs_fp32": max(
            abs(a["loss"] - b["loss"]) for a, b in zip(run.steps, run16.steps)
        ),
        "peak_rss_delta_mb": mem.delta_mb,
    }
    if not args.skip_plain:
        with PeakRSS() as mem:
            t = time.perf_counter()
            v_plain, losses = plain_bipo(model, pairs, args.layer, cfg)
            plain_total = time.perf_counter() - t
        fast_losses = [s["loss"] for s in run.steps]
        out["plain"] = {"seconds_per_epoch": plain_total, "peak_rss_delta_mb": mem.delta_mb}
        out["ratio_plain_over_fast_epoch"] = plain_total / out["fast"]["seconds_per_epoch"]
        out["ratio_plain_over_fast_incl_cache"] = plain_total / fast_total
        # Derived from the measured numbers above: the one-time cache amortised over E epochs.
        out["ratio_incl_cache_derived"] = {
            str(e): e * plain_total / (run.cache_seconds + e * out["fast"]["seconds_per_epoch"])
            for e in (1, 3, 20)
        }
        out["max_loss_diff_fast_vs_plain"] = max(abs(a - b) for a, b in zip(fast_losses, losses))
        out["max_vector_diff_fast_vs_plain"] = float(
            (run.vector.direction(args.layer) - v_plain.cpu()).abs().max()
        )
    gflops = matmul_gflops(model.device)
    flops = fast_flops(model, pairs, args.layer, cfg)
    out["flop_floor"] = {
        "fast_epoch_gflop": flops / 1e9,
        "machine_matmul_gflops": gflops,
        "floor_seconds_per_epoch": flops / 1e9 / gflops,
        "fast_over_floor": out["fast"]["seconds_per_epoch"] / (flops / 1e9 / gflops),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
