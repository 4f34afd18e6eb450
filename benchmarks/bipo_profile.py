"""Where a fast BiPO epoch goes: torch.profiler over the training steps of one epoch.

Runs one untimed epoch first (the one-time cache, oneDNN's compiled primitives, the
allocator's pools), then a second run of one epoch under the profiler, from the end of its
first step to the end of its last (the cache and the first step left out). Operators are
grouped by what they do, by self CPU time: the matmuls (the blocks' and the head's linear
maps, forward and backward, through oneDNN or the BLAS, and attention's batched products
where it runs as matrix products), attention (the fused kernel, or the softmax between
the products, and their backwards), the head's log-softmax and gathers, element-wise work, copies and indexing,
allocation, the rest; the linear maps also by weight shape, with the rate each reached
(FLOPs from the recorded input shapes). "outside operators" is the wall time no operator
accounts for: Python, hooks, the optimizer's bookkeeping, the profiler's own overhead. The profiler
slows the run, so the epoch time printed beside it is the profiled one, not a benchmark's.

    python benchmarks/bipo_profile.py --n-pairs 160 --layer 14 --out benchmarks/results/bipo_profile.json
    python benchmarks/bipo_profile.py --bf16 --n-pairs 160 --layer 14  # under bf16 autocast
"""

import argparse
import time

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import torch
from _report import command_line, cpu_model, emit, git_commit, uptime
from torch.profiler import ProfilerActivity, profile

import steerlab as sl
import steerlab.utils.gemm as gemm
from steerlab.data import load_pairs
from steerlab.vectors.bipo import BiPOConfig, fit_bipo_run
from steerlab.vectors.bipo.schedule import steps_per_epoch

# First match wins; substrings of aten / mkldnn operator names, lower-cased.
GROUPS = {
    "matmul": "mkldnn::_linear aten::mm aten::addmm aten::bmm aten::matmul aten::linear "
    "aten::baddbmm aten::_mkl",
    "attention": "attention aten::_softmax aten::softmax flash",
    "log_softmax_gather": "log_softmax logsumexp gather aten::take",
    "elementwise": "aten::mul aten::add aten::sub aten::div aten::silu aten::neg aten::pow "
    "aten::rsqrt aten::mean aten::sum aten::exp aten::where aten::cos aten::sin aten::sigmoid "
    "aten::logsigmoid aten::log_sigmoid aten::threshold aten::clamp aten::fill_ aten::zero_ "
    "aten::lerp aten::sqrt aten::addcmul aten::addcdiv aten::maximum aten::softplus aten::norm",
    "copy_index": "aten::copy_ aten::index aten::cat aten::stack aten::clone aten::contiguous "
    "aten::to aten::_to_copy aten::scatter aten::masked aten::narrow_copy aten::slice_backward "
    "aten::select_backward aten::embedding",
    "allocation": "aten::empty aten::resize_ aten::zeros aten::ones aten::full aten::new_",
}


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS.items():
        if any(k in low for k in keys.split()):
            return group
    return "other"


def _operands(key: str, shapes: list) -> tuple[list[int], tuple[int, int]] | None:
    """(input shape, weight shape ``[out, in]``) of a linear map: oneDNN's (``x``, ``w``),
    or a BLAS product (``mm(x, w.T)``, ``addmm(bias, x, w.T)``, as under autocast)."""
    if key.startswith("mkldnn::_linear") and len(shapes) >= 2 and len(shapes[1]) == 2:
        return shapes[0], (shapes[1][0], shapes[1][1])
    if key in ("aten::mm", "aten::addmm"):
        ab = shapes[-2:] if key == "aten::addmm" else shapes[:2]
        if len(ab) == 2 and all(len(t) == 2 for t in ab):
            return ab[0], (ab[1][1], ab[1][0])
    return None


def linear_shapes(events) -> list[dict]:
    """The linear maps (oneDNN's, and 2-D BLAS products) grouped by weight shape ``[out,
    in]`` (a backward's transposed weight shows as its own shape): seconds, GFLOP and the
    rate reached."""
    by: dict[tuple[int, int], list[float]] = {}
    for e in events:
        got = _operands(e.key, e.input_shapes or [])
        if got is None or not got[0]:
            continue
        x, w = got
        rows = 1
        for d in x[:-1]:
            rows *= d
        acc = by.setdefault((w[0], w[1]), [0.0, 0.0, 0])
        acc[0] += e.self_cpu_time_total / 1e6
        acc[1] += 2 * rows * w[0] * w[1] * e.count / 1e9
        acc[2] += e.count
    return [
        {
            "weight": f"{m} x {k}",
            "seconds": sec,
            "gflop": gf,
            "calls": n,
            "gflops_per_s": gf / sec if sec else None,
        }  # fmt: skip
        for (m, k), (sec, gf, n) in sorted(by.items(), key=lambda kv: -kv[1][0])
    ]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded", help='"tiny": the tests\' random 4-layer model')
    ap.add_argument("--behavior", default="power-seeking")
    ap.add_argument("--n-pairs", type=int, default=160)
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--device", default=None)
    ap.add_argument("--bf16", action="store_true", help="train under bf16 autocast")
    ap.add_argument("--top", type=int, default=25, help="operators listed one by one")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    started = uptime()
    if args.model == "tiny":
        from steerlab.models.tiny import load_tiny_model

        model = load_tiny_model(n_layers=4, seed=1)
    else:
        model = sl.load_model(args.model, device=args.device)
    pairs = list(load_pairs(args.behavior).train)[: args.n_pairs]
    cfg = BiPOConfig(epochs=1, warmup_steps=2, lr=5e-3, autocast_bf16=args.bf16)
    steps = steps_per_epoch(len(pairs), cfg)
    if steps < 2:
        raise SystemExit(f"--n-pairs {args.n_pairs} gives {steps} step; profiling needs >= 2")
    t = time.perf_counter()
    fit_bipo_run(model, pairs, layer=args.layer, config=cfg, progress=False)
    warm = time.perf_counter() - t

    prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
    marks: list[float] = []

    def on_step(rec: dict) -> None:
        marks.append(time.perf_counter())
        if len(marks) == 1:
            prof.start()
        elif len(marks) == steps:
            prof.stop()

    fit_bipo_run(model, pairs, layer=args.layer, config=cfg, progress=False, on_step=on_step)
    wall = marks[-1] - marks[0]
    rows = [
        (e.key, e.self_cpu_time_total / 1e6, e.count)
        for e in prof.key_averages()
        if e.self_cpu_time_total > 0
    ]
    groups: dict[str, float] = {}
    for name, seconds, _ in rows:
        groups[group_of(name)] = groups.get(group_of(name), 0.0) + seconds
    in_ops = sum(groups.values())
    profiled = steps - 1
    out = {
        "command": command_line("bipo_profile.py", args),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "code": git_commit(),
        "uptime_at_start": started,
        "device": str(model.device),
        "threads": torch.get_num_threads(),
        "precision": "bf16 autocast" if args.bf16 else "fp32",
        "fp32_gemm": gemm.default_backend() if model.device.type == "cpu" else "cuda",
        "n_pairs": len(pairs),
        "layer": args.layer,
        "steps_per_epoch": steps,
        "steps_profiled": profiled,
        "unprofiled_warmup_epoch_seconds": warm,
        "profiled_wall_seconds": wall,
        "profiled_seconds_per_epoch_scaled": wall * steps / profiled,
        "groups_seconds": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "outside_operators_seconds": wall - in_ops,
        "groups_share_of_wall": {
            **{g: s / wall for g, s in sorted(groups.items(), key=lambda kv: -kv[1])},
            "outside operators": (wall - in_ops) / wall,
        },
        "matmul_by_weight_shape": linear_shapes(prof.key_averages(group_by_input_shape=True)),
        "top_operators": [
            {"name": n, "self_seconds": s, "calls": c, "group": group_of(n)}
            for n, s, c in sorted(rows, key=lambda r: -r[1])[: args.top]
        ],
        "uptime_at_end": uptime(),
    }
    emit(out, args.out)
    return out


if __name__ == "__main__":
    main()
