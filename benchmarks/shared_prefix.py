"""A prompt prefix common to a batch computed once: in-process A/B, prints JSON.

Three fast paths run with the shared prefix on and off (``use_shared_prefix``), in turn, ``--rounds`` times over
the same work in one process (so machine drift hits both alike): BiPO training steps
(fp32, the power-seeking pairs at layer 14, every third step of the first epoch's plan),
RePS training steps (every other one of those; each pair in both directions, so the
prefix is shared within each sign), the fast likelihood margin and the fast KL damage
(two random vectors x three multipliers); with ``--toggle onednn`` also greedy generation
(8 prompts x 32 tokens, steered). Reports each variant's seconds per round, the median ratio on/off, and the
largest difference of the results (losses, margins, KL) between the two.

    python benchmarks/shared_prefix.py --out benchmarks/results/shared_prefix.json

``--toggle onednn`` runs the same A/B for the CPU fp32 matmul backend instead
(:func:`steerlab.utils.gemm.use_onednn`: oneDNN "on", torch's BLAS "off"; the shared
prefix stays on in both):

    python benchmarks/shared_prefix.py --toggle onednn --out benchmarks/results/onednn.json

``--toggle packed`` does it for oneDNN-packed copies of the weights
(:func:`steerlab.utils.gemm.packed_weights` over every block and the unembedding, made
anew in each "on" run, so each pays its packing once):

    python benchmarks/shared_prefix.py --toggle packed --out benchmarks/results/packed_weights.json

``--epoch-rounds N`` adds whole BiPO epochs of the ``--n-pairs`` pairs, on and off in
turn, N rounds (``--rounds 0``: only those):

    python benchmarks/shared_prefix.py --toggle packed --rounds 0 --epoch-rounds 3
"""

import argparse
import statistics
import time
from contextlib import nullcontext

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import numpy as np
import torch
from _report import command_line, emit, uptime

import steerlab as sl
import steerlab.evaluation.damage_fast as damage_fast
import steerlab.evaluation.likelihood_fast as likelihood_fast
import steerlab.vectors.bipo.trainer as trainer_mod
from steerlab.activations.packed import build_cache, upper_linears, use_shared_prefix
from steerlab.data import load_pairs
from steerlab.data.neutral import load_neutral_set
from steerlab.utils.gemm import packed_weights, use_onednn
from steerlab.vectors.bipo import BiPOConfig
from steerlab.vectors.bipo.config import RePSConfig
from steerlab.vectors.bipo.reps import RePSTrainer
from steerlab.vectors.bipo.schedule import epoch_plan
from steerlab.vectors.vector import SteeringVector


def epoch_ab(model, cache, layer: int, cfg: BiPOConfig, toggle, rounds: int) -> dict:
    """Whole fp32 BiPO epochs of the cache's pairs with the toggle on and off, in turn
    (which goes first alternates by round); each epoch a fresh trainer inside a fresh
    ``toggle(on)``, so whatever the toggle sets up once per run is in its time."""
    secs: dict[str, list[float]] = {"off": [], "on": []}
    losses: dict[str, list[float]] = {}
    for r in range(rounds):
        for label in ("on", "off") if r % 2 == 0 else ("off", "on"):
            tr = trainer_mod.BiPOTrainer(model, cache, [layer], cfg)
            with toggle(label == "on"):
                t = time.perf_counter()
                losses[label] = [tr.step(s)["loss"] for s in tr.plan()]
                secs[label].append(time.perf_counter() - t)
    return {
        "steps": len(losses["on"]),
        "seconds_off": secs["off"],
        "seconds_on": secs["on"],
        "on_over_off_median": statistics.median(secs["on"]) / statistics.median(secs["off"]),
        "max_abs_diff": max(abs(a - b) for a, b in zip(losses["on"], losses["off"])),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--behavior", default="power-seeking")
    ap.add_argument("--n-pairs", type=int, default=160, help="BiPO training pairs")
    ap.add_argument("--n-eval", type=int, default=48, help="test pairs of the margin")
    ap.add_argument("--n-neutral", type=int, default=32, help="prompts of the KL damage")
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--rounds", type=int, default=4, help="0: only --epoch-rounds")
    ap.add_argument("--epoch-rounds", type=int, default=0,
                    help="also whole BiPO epochs of the --n-pairs pairs, on and off in turn")  # fmt: skip
    ap.add_argument("--toggle", choices=("shared-prefix", "onednn", "packed"),
                    default="shared-prefix")  # fmt: skip
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if min(args.rounds, args.epoch_rounds) < 0 or not (args.rounds or args.epoch_rounds):
        ap.error(f"--rounds {args.rounds} --epoch-rounds {args.epoch_rounds}: counts >= 0, "
                 "not both 0")  # fmt: skip
    if min(args.n_pairs, args.n_eval, args.n_neutral) < 1:
        ap.error("--n-pairs, --n-eval and --n-neutral need >= 1")
    started = uptime()
    torch.manual_seed(0)
    model = sl.load_model(args.model)
    weights = [m.weight for m in upper_linears(model, 0)]

    def packed(on: bool):
        return packed_weights(weights) if on else nullcontext()

    toggle = {"shared-prefix": use_shared_prefix, "onednn": use_onednn, "packed": packed}[
        args.toggle
    ]
    data = load_pairs(args.behavior)
    cfg = BiPOConfig(epochs=1, warmup_steps=2, lr=5e-3)
    cache = build_cache(model, list(data.train)[: args.n_pairs], args.layer, progress=False)
    steps = epoch_plan(cache.lengths, cfg, 0)[::3]
    g = torch.Generator().manual_seed(0)
    vecs = [
        SteeringVector.from_tensor(
            torch.randn(model.d_model, generator=g) * 4, layer, method="caa"
        )  # fmt: skip
        for layer in (args.layer - 4, args.layer)
    ]
    mults = (-1.0, 1.0, 2.0)
    pairs = list(data.test)[: args.n_eval]
    caches: dict = {}
    likelihood_fast.likelihood_margin_fast(model, pairs, vecs, [1.0], caches=caches,
                                           progress=False)  # fmt: skip
    kl_run = damage_fast.fast_kl_runner(model, load_neutral_set(n=args.n_neutral), 8, False)

    def bipo() -> list[float]:
        tr = trainer_mod.BiPOTrainer(model, cache, [args.layer], cfg)
        return [tr.step(s)["loss"] for s in steps]

    reps_cfg = RePSConfig(epochs=1, warmup_steps=2, lr=5e-3)  # both signs in every step

    def reps() -> list[float]:
        tr = RePSTrainer(model, cache, [args.layer], reps_cfg)
        return [tr.step(s)["loss"] for s in steps[::2]]

    def margin() -> list[float]:
        out = likelihood_fast.likelihood_margin_fast(
            model, pairs, vecs, mults, caches=caches, progress=False, per_item=True
        )
        return out["margin"].tolist()

    def kl() -> list[float]:
        return kl_run(vecs, mults)["kl"].tolist()

    questions = [p.question for p in pairs[:8]]

    def generation() -> list[float]:  # greedy, KV cache, steered by the first vector
        with sl.steer(model, vecs[1]):
            out = sl.generate(model, questions, max_new_tokens=32, stop_at_eos=False)
        return [float(len(t)) for t in out.texts]  # text lengths: a coarse equality check

    work = {
        "bipo_steps": bipo,
        "reps_steps": reps,
        "likelihood_margin_fast": margin,
        "kl_damage_fast": kl,
    }
    if args.toggle in ("onednn", "packed"):  # the bridge's own forward: generation
        work["generate_greedy"] = generation
    if not args.rounds:  # --epoch-rounds alone
        work = {}
    for fn in work.values():  # warm-up, both variants
        for on in (False, True):
            with toggle(on):
                fn()
    times: dict = {k: {"off": [], "on": []} for k in work}
    results: dict = {k: {} for k in work}
    for _ in range(args.rounds):
        for name, fn in work.items():
            for label, on in (("off", False), ("on", True)):
                with toggle(on):
                    t = time.perf_counter()
                    results[name][label] = fn()
                    times[name][label].append(time.perf_counter() - t)
    out: dict = {
        "command": command_line("shared_prefix.py", args),
        "uptime_at_start": started,
        "threads": torch.get_num_threads(),
        "bipo_steps_timed": len(steps),
    }
    if args.epoch_rounds:
        out["bipo_epochs"] = epoch_ab(model, cache, args.layer, cfg, toggle, args.epoch_rounds)
    for name in work:
        a, b = np.array(results[name]["off"]), np.array(results[name]["on"])
        out[name] = {
            "seconds_off": times[name]["off"],
            "seconds_on": times[name]["on"],
            "on_over_off_median": statistics.median(times[name]["on"])
            / statistics.median(times[name]["off"]),
            "max_abs_diff": float(np.abs(a - b).max()),
        }
    emit(out, args.out)
    return out


if __name__ == "__main__":
    main()
