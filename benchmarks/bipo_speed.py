"""BiPO speed: the fast trainer vs two plain implementations, side by side, in one run.

Prints JSON (and writes it with ``--out``): seconds per epoch of the fast trainer in fp32
and under bf16 autocast (the median of ``--epochs`` epochs of one run, each epoch listed),
each against a FLOP floor for this machine (matmul FLOPs at the machine's best
square-matmul rate in that precision, over torch's matmul and, on CPUs, oneDNN's; for
fp32 the fastest of the rates taken just before and just after the fp32 run, as the
rate drifts on a shared host); two baselines timed on the same
pairs over ``--baseline-steps`` steps and extrapolated to an epoch: the test suite's
one-by-one plain code and a reference-style batched one (the step's chosen and rejected
responses in one padded forward with the vector, one without for the reference,
recomputed every step, full-vocabulary logits at every position); per-step loss parity;
peak memory; and whether bf16 training gives the fp32 vector's held-out margins (paired
bootstrap CI of the per-pair difference, both vectors scored in fp32).

    python benchmarks/bipo_speed.py --n-pairs 160 --layer 14 --out benchmarks/results/bipo_speed.json
"""

import argparse
import dataclasses
import os
import platform
import statistics
import threading
import time

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import torch
from _report import command_line, cpu_model, emit, git_commit, uptime

import steerlab as sl
import steerlab.utils.gemm as gemm
from steerlab.activations.packed import pack_pairs
from steerlab.data import load_pairs
from steerlab.models.fast_blocks import FastBlocks, _Grid, fast_blocks
from steerlab.vectors.bipo import BiPOConfig, fit_bipo_run
from steerlab.vectors.bipo.schedule import steps_per_epoch
from tests.bipo_plain import batched_score, plain_bipo


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


def matmul_gflops(
    device: torch.device, n: int = 1536, reps: int = 5, trials: int = 5, dtype=torch.float32
) -> dict[str, float]:
    """Best of ``trials`` square-matmul rates in ``dtype`` per backend: torch's matmul
    and, on CPUs with oneDNN, oneDNN's (``steerlab.utils.gemm``: on AMD CPUs torch's BLAS
    runs at less than half the rate oneDNN reaches). The floor takes the fastest: what
    this machine can do at most."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    backends = {"torch_matmul": lambda: a @ b}
    if device.type == "cpu" and gemm.has_onednn():
        backends["onednn"] = lambda: gemm.onednn_linear(a, b)  # a @ b.T, the same FLOPs
    rates = {}
    for name, fn in backends.items():
        fn()
        best = 0.0
        for _ in range(trials):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
        rates[name] = best
    return rates


def fast_flops(model, pairs, layer, cfg, reference_forward: bool = False) -> float:
    """Matmul FLOPs of one fast epoch: forward + input-gradient backward (no weight
    gradients, so ~1x forward) of the blocks above ``layer`` over every token of the
    pairs (the prompt once, both responses), plus the unembedding at response tokens only.
    Attention-score FLOPs (short sequences) and element-wise work are left out, so the
    floor is optimistic. The fast path runs fewer (a prompt prefix common to a batch
    once, the last block's MLP only where read, not each response's last token):
    :class:`Performed` counts those, reported beside this floor."""
    blocks = list(model.bridge.blocks)[layer + 1 :]
    p_upper = sum(p.numel() for b in blocks for p in b.parameters())
    packed = pack_pairs(model, pairs)
    tokens = sum(p.n_tokens for p in packed)
    resp = sum(len(p.matching) + len(p.not_matching) for p in packed)
    passes = 3 if reference_forward else 2  # + the reference, where recomputed every step
    return passes * (2 * p_upper * tokens) + passes * (2 * model.d_model * model.d_vocab * resp)


class Performed:
    """Counts the matmul FLOPs the fast path actually ran, from each ``FastBlocks.forward``
    call of a run (tokens computed once: real tokens only, a prompt prefix common to the
    batch once; the last block's output projection and MLP only at the positions read)
    plus the unembedding at those positions; forward and input-gradient backward. Only
    the training steps' forwards count (with gradients), not the cache's.

    :meth:`attention_flops` counts the attention products apart: query-key and
    attention-value over the allowed (query, key) pairs of the queries computed (a row
    that reads a shared prefix computes no queries there), in every upper block, forward
    and the four backward products (3x the forward's FLOPs)."""

    def __init__(self, model, layer: int) -> None:
        self.fb = fast_blocks(model)
        blocks = list(model.bridge.blocks)[layer + 1 :]
        self.p_block = [sum(p.numel() for p in b.parameters()) for b in blocks]
        last = self.fb.blocks[-1]
        self.p_last_qkv = sum(lin.weight.numel() for lin in (last.q, last.k, last.v))
        self.unembed = model.d_model * model.d_vocab
        self.calls: list[tuple[int, int]] = []  # (tokens computed, positions read)
        self.pairs = 0  # allowed (query, key) pairs of the computed queries, per block

    def __enter__(self) -> "Performed":
        original = self.original = FastBlocks.forward

        def counted(fb, x, position_ids, allowed, *args, lengths=None, at=None, shared=0,
                    leaders=None, **kw):  # fmt: skip
            kw.update(lengths=lengths, at=at, shared=shared, leaders=leaders)
            if not torch.is_grad_enabled():  # the cache's reference forwards: not an epoch's
                return original(fb, x, position_ids, allowed, *args, **kw)
            grid = _Grid.of(x, lengths, shared, leaders)  # the tokens the forward computes
            b, t, n = grid.batch, grid.width, int(grid.rows.numel())
            self.calls.append((n, int(at[0].numel()) if at is not None else n))
            queries = torch.zeros(b, t, dtype=torch.bool, device=x.device)
            queries[grid.rows, grid.pos] = True
            real = torch.arange(t, device=x.device)[None, :] < grid.lengths[:, None]
            pairs = allowed.to(x.device) & queries[:, :, None] & real[:, None, :]
            self.pairs += int(pairs.sum())
            return original(fb, x, position_ids, allowed, *args, **kw)

        FastBlocks.forward = counted
        return self

    def __exit__(self, *exc) -> None:
        FastBlocks.forward = self.original

    def flops(self, passes: int = 2) -> float:
        total = 0.0
        for n, read in self.calls:
            total += sum(2 * p * n for p in self.p_block[:-1])
            total += 2 * (self.p_last_qkv * n + (self.p_block[-1] - self.p_last_qkv) * read)
            total += 2 * self.unembed * read
        return passes * total

    def attention_flops(self) -> float:
        """Forward (2 products) and backward (4) of the attention, 2 FLOPs per
        multiply-add, over every upper block."""
        width = self.fb.n_heads * self.fb.head_dim
        return 6 * 2 * width * self.pairs * len(self.p_block)


def timed_run(model, pairs, layer, cfg):
    """One fast run of ``cfg.epochs`` epochs (its cache built first): (run, seconds in all,
    seconds of each epoch, peak RSS delta in MB). An epoch's time runs from the end of the
    previous one (the first: from the end of the cache) to its last step."""
    per_epoch = steps_per_epoch(len(pairs), cfg)
    ends: list[float] = []
    with PeakRSS() as mem:
        t = time.perf_counter()
        run = fit_bipo_run(model, pairs, layer=layer, config=cfg, progress=False,
                           on_step=lambda rec: ends.append(time.perf_counter()))  # fmt: skip
        total = time.perf_counter() - t
    marks = [t + run.cache_seconds] + ends[per_epoch - 1 :: per_epoch]
    epochs = [b - a for a, b in zip(marks, marks[1:])]
    return run, total, epochs, mem.delta_mb


def epoch_summary(run, total, epochs, mem) -> dict:
    """Seconds per epoch: the median of the timed epochs (and each of them)."""
    return {
        "seconds_per_epoch": statistics.median(epochs),
        "seconds_per_epoch_best": min(epochs),
        "epoch_seconds": epochs,
        "one_time_cache_seconds": run.cache_seconds,
        "seconds_first_epoch_incl_cache": run.cache_seconds + epochs[0],
        "peak_rss_delta_mb": mem,
    }


def baseline(model, pairs, layer, cfg, steps, score=None):
    """A plain implementation over its first ``steps`` steps: (seconds per step, losses)."""
    with PeakRSS() as mem:
        t = time.perf_counter()
        _, losses = plain_bipo(model, pairs, layer, cfg, max_steps=steps, score=score)
        per_step = (time.perf_counter() - t) / len(losses)
    return per_step, losses, mem.delta_mb


def margin_check(model, vec32, vec16, pairs, n_boot: int = 2000) -> dict:
    """Held-out margins of the fp32- and bf16-trained vectors (both scored in fp32) at
    multiplier +1, per pair, and the paired bootstrap CI of their difference."""
    import numpy as np

    from steerlab.evaluation.likelihood_fast import likelihood_margin_fast

    a, b = (
        likelihood_margin_fast(model, pairs, [v], (1.0,), progress=False, per_item=True)
        .query("multiplier == 1.0")
        .sort_values("item")["margin"]
        .to_numpy()
        for v in (vec32, vec16)
    )
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))

    def ci(x):
        boots = x[idx].mean(1)
        return [float(x.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]

    diff = ci(b - a)
    return {"n_pairs": len(a), "margin_fp32": ci(a), "margin_bf16": ci(b),
            "bf16_minus_fp32": diff, "ci_contains_0": diff[1] <= 0.0 <= diff[2]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--behavior", default="power-seeking")
    ap.add_argument("--n-pairs", type=int, default=160)
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--device", default=None)
    ap.add_argument("--epochs", type=int, default=3, help="epochs timed per fast run")
    ap.add_argument("--baseline-steps", type=int, default=8, help="0 skips the baselines")
    ap.add_argument("--n-heldout", type=int, default=100, help="test pairs of the margin check")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument(
        "--no-bf16",
        action="store_true",
        help="fp32 only: skip the bf16 autocast run, its floor and the margin check (CPUs "
        "without native bf16, where autocast emulates it and an epoch takes many times fp32's)",
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    started = uptime()
    model = sl.load_model(args.model, device=args.device)
    data = load_pairs(args.behavior)
    pairs = list(data.train)[: args.n_pairs]
    cfg = BiPOConfig(epochs=args.epochs, warmup_steps=2, lr=5e-3)
    steps = steps_per_epoch(len(pairs), cfg)
    out: dict = {
        "command": command_line("bipo_speed.py", args),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "cpu": cpu_model(),
        "code": git_commit(),
        "uptime_at_start": started,
        "device": str(model.device),
        "threads": torch.get_num_threads(),
        "model": model.model_id,
        "n_pairs": len(pairs),
        "layer": args.layer,
        "n_layers": model.n_layers,
        "batch_size": cfg.batch_size,
        "steps_per_epoch": steps,
    }
    # Warm-up: the first forward passes of a process pay one-time costs (allocator,
    # kernel selection) that would otherwise land on whichever variant runs first.
    with torch.no_grad():
        for p in pack_pairs(model, pairs[:4]):
            model.bridge(torch.tensor([p.prompt + p.matching], device=model.device))
    # The fp32 floor's matmul rate is taken just before and just after the fp32 run, and
    # the faster of the two kept: the rate drifts by 10-15% over minutes on a shared host.
    rates32 = [matmul_gflops(model.device)]
    with Performed(model, args.layer) as performed:
        run, *timing = timed_run(model, pairs, args.layer, cfg)
    rates32.append(matmul_gflops(model.device))
    out["fast"] = {**epoch_summary(run, *timing), "cache_mb": run.cache_bytes / 2**20}
    run16 = None
    if not args.no_bf16:
        cfg16 = dataclasses.replace(cfg, autocast_bf16=True)
        run16, *timing16 = timed_run(model, pairs, args.layer, cfg16)
        out["fast_bf16_autocast"] = {
            **epoch_summary(run16, *timing16),
            "max_loss_diff_vs_fp32": max(
                abs(a["loss"] - b["loss"]) for a, b in zip(run.steps, run16.steps)
            ),
            "reference": run16.reference,  # cached once, or recomputed every step
        }
    fast_losses = [s["loss"] for s in run.steps]
    for name, score in (("plain", None), ("batched_reference_style", batched_score)):
        if not args.baseline_steps:
            break
        per_step, losses, mem_b = baseline(model, pairs, args.layer, cfg, args.baseline_steps,
                                           score)  # fmt: skip
        out[name] = {
            "seconds_per_step": per_step,
            "steps_timed": len(losses),
            "seconds_per_epoch_extrapolated": per_step * steps,
            "ratio_over_fast_fp32_epoch": per_step * steps / out["fast"]["seconds_per_epoch"],
            "max_loss_diff_vs_fast_fp32": max(abs(a - b) for a, b in zip(fast_losses, losses)),
            "peak_rss_delta_mb": mem_b,
        }
        if run16 is not None:
            out[name]["ratio_over_fast_bf16_epoch"] = (
                per_step * steps / out["fast_bf16_autocast"]["seconds_per_epoch"]
            )
    floors = {}
    ref16 = run16 is not None and run16.reference == "per step"  # one more forward a step
    for label, dtype, ref, key, rates in (
        ("fp32", torch.float32, False, "fast", rates32),
        ("bf16", torch.bfloat16, ref16, "fast_bf16_autocast", None),
    ):
        if key not in out:
            continue
        rates = rates or [matmul_gflops(model.device, dtype=dtype)]
        gflops = max(r for measured in rates for r in measured.values())
        flops = fast_flops(model, pairs, args.layer, cfg, reference_forward=ref)
        floor = flops / 1e9 / gflops
        floors[label] = {
            "epoch_gflop": flops / 1e9,
            "machine_matmul_gflops": gflops,
            "matmul_gflops_measured": rates,
            "floor_seconds_per_epoch": floor,
            "fast_over_floor": out[key]["seconds_per_epoch"] / floor,
            "fast_over_floor_best_epoch": out[key]["seconds_per_epoch_best"] / floor,
        }
        if label == "fp32":  # the matmuls the fast path actually ran (fewer: see Performed)
            ran = performed.flops() / cfg.epochs
            att = performed.attention_flops() / cfg.epochs
            floors[label]["performed"] = {
                "epoch_gflop": ran / 1e9,
                "floor_seconds_per_epoch": ran / 1e9 / gflops,
                "fast_over_floor": out[key]["seconds_per_epoch"] / (ran / 1e9 / gflops),
                "forward_calls": len(performed.calls),
                "attention_epoch_gflop": att / 1e9,
                "floor_with_attention_seconds_per_epoch": (ran + att) / 1e9 / gflops,
                "fast_over_floor_with_attention": out[key]["seconds_per_epoch"]
                / ((ran + att) / 1e9 / gflops),
            }
    out["flop_floor"] = floors
    test = list(data.test)[: args.n_heldout]
    if run16 is not None:
        out["bf16_margin_check"] = margin_check(model, run.vector, run16.vector, test)
    emit(out, args.out)


if __name__ == "__main__":
    main()
