"""Attention on CPUs: batched matrix products against the fused kernel, side by side.

The hook-free blocks (:mod:`steerlab.models.fast_blocks`) compute the bf16 and fp32
attention of batches of at most ``MATMUL_ATTENTION_MAX_POS`` positions on CPUs as two
batched matrix products around an fp32 softmax (:class:`steerlab.models.attention.
Attention`; fp32 only since session 22), and longer ones with the fused kernel
(``scaled_dot_product_attention``). This script measures both on the same inputs, in
turn, ``--rounds`` times in one process (so machine drift hits both alike):

- kernels: one call of each on ``--rows`` rows of each width in ``--widths`` (a packed
  pair's mask: causal, the last quarter hidden from the quarter before it), the embedded
  model's head layout (or ``--heads Q,KV,DIM``), fp32 and bf16, forward + backward and the
  forward alone without gradients; the median milliseconds per call, the ratio
  products / fused, and the largest difference of their outputs;
- with ``--epoch-rounds N``: BiPO epochs on the embedded model (``--n-pairs``
  power-seeking pairs at ``--layer``), fp32 and (``--bf16``) under bf16 autocast, with
  the products on and off
  (``use_matmul_attention``): per round, one two-epoch run of each
  (alternating which goes first), the second epoch timed.

    python benchmarks/attention_cpu.py --out benchmarks/results/attention_cpu.json
    python benchmarks/attention_cpu.py --epoch-rounds 2 --bf16 --out benchmarks/results/attention_cpu_epochs.json
"""

import argparse
import statistics
import time

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import torch
from _report import command_line, cpu_model, emit, git_commit, uptime

from steerlab.models.attention import (
    MATMUL_ATTENTION_DTYPES,
    MATMUL_ATTENTION_MAX_POS,
    Attention,
    use_matmul_attention,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
ALL = tuple(DTYPES.values())  # the epochs' "on": the products in either precision


def packed_mask(rows: int, width: int) -> torch.Tensor:
    """Causal, with the last quarter of positions unable to see the quarter before it
    (a packed pair's rejected response and its chosen one)."""
    allowed = torch.ones(width, width, dtype=torch.bool).tril().repeat(rows, 1, 1)
    q = width // 4
    if q:
        allowed[:, width - q :, width - 2 * q : width - q] = False
    return allowed


def time_call(fn, reps: int) -> float:
    """Milliseconds per call of ``fn`` (``reps`` calls after one untimed)."""
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1000


def kernel_rows(args: argparse.Namespace) -> list[dict]:
    hq, hk, hd = (int(v) for v in args.heads.split(","))
    out = []
    g = torch.Generator().manual_seed(0)
    for dname in args.dtypes.split(","):
        dtype = DTYPES[dname]
        for width in (int(w) for w in args.widths.split(",")):
            allowed = packed_mask(args.rows, width)
            q, k, v = (
                torch.randn(args.rows, width, h, hd, generator=g).to(dtype) for h in (hq, hk, hk)
            )
            grad_out = torch.randn(q.shape, generator=g).to(dtype)
            matmul = Attention.products(q, allowed, hq, hk, hd**-0.5)  # at every width
            fused = Attention(allowed, hq, hk, hd**-0.5, None)
            with torch.no_grad():
                diff = float((matmul(q, k, v).float() - fused(q, k, v).float()).abs().max())
            for mode in ("forward_backward", "forward"):
                qq, kk, vv = (t.detach().requires_grad_(mode != "forward") for t in (q, k, v))

                def call(attend, qq=qq, kk=kk, vv=vv, mode=mode, go=grad_out):
                    if mode == "forward":
                        with torch.no_grad():
                            attend(qq, kk, vv)
                    else:
                        attend(qq, kk, vv).backward(go)

                ms = {"matmul": [], "fused": []}
                for r in range(args.rounds):
                    for name in ("matmul", "fused") if r % 2 == 0 else ("fused", "matmul"):
                        attend = matmul if name == "matmul" else fused
                        ms[name].append(time_call(lambda a=attend: call(a), args.reps))
                out.append({
                    "dtype": dname,
                    "width": width,
                    "mode": mode,
                    "ms_matmul": statistics.median(ms["matmul"]),
                    "ms_fused": statistics.median(ms["fused"]),
                    "ratio_matmul_over_fused": statistics.median(ms["matmul"])
                    / statistics.median(ms["fused"]),
                    "used_by_the_blocks": dtype in MATMUL_ATTENTION_DTYPES
                    and width <= MATMUL_ATTENTION_MAX_POS,
                    "max_abs_diff": diff,
                })  # fmt: skip
    return out


def epoch_rows(args: argparse.Namespace) -> dict:
    import steerlab as sl
    from steerlab.data import load_pairs
    from steerlab.vectors.bipo import BiPOConfig, fit_bipo_run
    from steerlab.vectors.bipo.schedule import steps_per_epoch

    model = sl.load_model(args.model)
    pairs = list(load_pairs("power-seeking").train)[: args.n_pairs]
    out: dict = {"model": model.model_id, "n_pairs": len(pairs), "layer": args.layer}
    for label in ("fp32", "bf16") if args.bf16 else ("fp32",):
        cfg = BiPOConfig(epochs=2, warmup_steps=2, lr=5e-3, autocast_bf16=label == "bf16")
        per = steps_per_epoch(len(pairs), cfg)
        secs: dict[str, list[float]] = {"matmul": [], "fused": []}
        losses: dict[str, float] = {}
        for r in range(args.epoch_rounds):
            for name in ("matmul", "fused") if r % 2 == 0 else ("fused", "matmul"):
                ends: list[float] = []
                with use_matmul_attention(name == "matmul", ALL):
                    run = fit_bipo_run(model, pairs, layer=args.layer, config=cfg,
                                       progress=False,
                                       on_step=lambda rec, e=ends: e.append(time.perf_counter()))  # fmt: skip
                secs[name].append(ends[2 * per - 1] - ends[per - 1])
                losses[name] = run.steps[-1]["loss"]
        out[label] = {
            "second_epoch_seconds": secs,
            "median_matmul": statistics.median(secs["matmul"]),
            "median_fused": statistics.median(secs["fused"]),
            "ratio_matmul_over_fused": statistics.median(secs["matmul"])
            / statistics.median(secs["fused"]),
            "last_loss": losses,
        }
    return out


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse options the measurement cannot run with (argparse's error: usage, exit 2)."""
    try:
        heads = [int(v) for v in args.heads.split(",")]
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        ap.error(f"--heads {args.heads} / --widths {args.widths}: comma-separated integers")
    if len(heads) != 3 or min(heads) < 1 or heads[0] % heads[1]:
        ap.error(f"--heads {args.heads}: Q,KV,DIM with Q a multiple of KV, all >= 1")
    if min(widths) < 1:
        ap.error(f"--widths {args.widths}: positions >= 1")
    bad = [d for d in args.dtypes.split(",") if d not in DTYPES]
    if bad:
        ap.error(f"--dtypes {args.dtypes}: choose among {', '.join(DTYPES)}")
    if min(args.rows, args.rounds, args.reps) < 1 or args.epoch_rounds < 0:
        ap.error("--rows, --rounds and --reps need >= 1, --epoch-rounds >= 0")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--heads", default="9,3,64", help="query heads, key-value heads, width")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--widths", default="64,100,128,160,192,256,320")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=20, help="calls timed per round")
    ap.add_argument("--epoch-rounds", type=int, default=0, help="BiPO epoch A/B rounds")
    ap.add_argument("--bf16", action="store_true", help="epochs under bf16 autocast too")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--n-pairs", type=int, default=160)
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    check_args(ap, args)
    out: dict = {
        "command": command_line("attention_cpu.py", args),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "code": git_commit(),
        "threads": torch.get_num_threads(),
        "matmul_attention_max_pos": MATMUL_ATTENTION_MAX_POS,
        "uptime_at_start": uptime(),
        "kernels": kernel_rows(args),
    }
    if args.epoch_rounds:
        out["bipo_epochs"] = epoch_rows(args)
    emit(out, args.out)
    return out


if __name__ == "__main__":
    main()
