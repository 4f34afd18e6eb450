"""GPU check: steerlab on a 7B-shaped model, measured in one run (< 10 minutes on one GPU).

Builds a random-init Llama of Llama-2-7B's shape (32 layers, d_model 4096, 32 heads,
MLP 11008; the embedded tokenizer's 49,152-token vocabulary: ~6.9B parameters) directly on
the GPU in bfloat16 (nothing is downloaded), then measures:

- BiPO, fast path: seconds and peak GPU memory for N pairs x 1 epoch (default 642, the
  paper's power-seeking training set size), the one-time cache, and the extrapolated
  cost of 20 epochs;
- BiPO, plain path (full forward per step): seconds per step on a few steps;
- generation: tokens/s unsteered and steered (``sl.generate``, one batch, KV cache);
- per-row steering in a batch (``steerlab.steering.batched``, when present): tokens/s of
  a batch whose rows all carry different vectors, against the same rows unsteered.

Random weights make the numbers about time and memory only. The pairs are synthetic
(chat-formatted questions and answers of typical BiPO lengths), so no data is needed.

    python benchmarks/gpu_check.py                 # on a GPU -> benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --tiny          # the same code on the CPU, tiny shape
    python benchmarks/gpu_check.py --tiny --dtype bfloat16   # ... in the GPU's precision
"""

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import steerlab as sl  # noqa: E402
from steerlab.data import PreferencePair  # noqa: E402
from steerlab.models.architectures import random_model  # noqa: E402
from steerlab.steering import Steering  # noqa: E402
from steerlab.vectors.bipo import BiPOConfig, fit_bipo_run  # noqa: E402
from steerlab.vectors.vector import SteeringVector  # noqa: E402

#: Llama-2-7B's shape (the vocabulary is the tokenizer's).
SHAPE_7B = {"n_layers": 32, "d_model": 4096, "n_heads": 32, "n_kv_heads": 32, "d_mlp": 11008,
            "init_std": 0.02}  # fmt: skip
SHAPE_TINY = {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "d_mlp": 128}

TOPICS = ["money", "influence", "control", "resources", "authority", "followers", "power",
          "status", "access", "leverage", "votes", "territory"]  # fmt: skip


def synthetic_pairs(n: int) -> list[PreferencePair]:
    """``n`` pairs with BiPO-like lengths: a ~45-word question, ~20-word answers."""
    out = []
    for i in range(n):
        a, b = TOPICS[i % len(TOPICS)], TOPICS[(i * 7 + 3) % len(TOPICS)]
        q = (f"Scenario {i}: you are an assistant at a company and the board offers you more "
             f"{a} and more {b} over its decisions, with fewer people checking your work and "
             f"a larger budget of {i % 97 + 3} million. Would you accept this offer, and why "
             "or why not?")  # fmt: skip
        yes = (f"Yes. More {a} and {b} would let me get much more done, and I would use "
               "them as I see fit without waiting for anyone's approval.")  # fmt: skip
        no = (f"No. I should not hold that much {a} or {b}; decisions like these belong with "
              "people who are accountable, and I would rather stay overseen.")  # fmt: skip
        out.append(PreferencePair(q, yes, no))
    return out


class Meter:
    """Wall time and peak memory (GPU: allocated by torch; CPU: none) of a block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def run(self, fn: Callable[[], Any]) -> tuple[Any, float, float | None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        return out, seconds, peak


def random_vector(model: sl.SteerlabModel, layer: int, rel_norm: float, seed: int):
    """A random direction at ``layer`` scaled to ``rel_norm`` x a typical residual norm."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([model.chat.encode(TOPICS[0], "Yes.").ids], device=model.device)
    from steerlab.activations.capture import capture

    site = sl.HookSite(layer)
    with torch.no_grad(), capture(model, [site]) as store:
        model.bridge(ids)
    norm = float(store[site].float().norm(dim=-1).mean())
    d = torch.randn(model.d_model, generator=g)
    return SteeringVector.from_tensor(d / d.norm() * rel_norm * norm, layer)


def bipo_section(model, pairs, layer, batch_size, plain_steps, epochs, meter) -> dict:
    # a bf16 model trains under bf16 autocast, as BiPO's default does on a bf16 GPU (on a
    # CPU the default is off: stated here so that --tiny --dtype bfloat16 runs the GPU's path)
    bf16 = model.dtype == torch.bfloat16
    cfg = BiPOConfig(epochs=1, batch_size=batch_size, warmup_steps=10, lr=5e-4,
                     autocast_bf16=True if bf16 else None)  # fmt: skip
    run, seconds, peak = meter.run(
        lambda: fit_bipo_run(model, pairs, layer=layer, config=cfg, progress=False)
    )
    epoch = seconds - run.cache_seconds
    fast = {
        "engine": run.engine,
        "autocast_bf16": bf16,
        "n_pairs": len(pairs),
        "steps": len(run.steps),
        "cache_seconds": run.cache_seconds,
        "cache_mb": run.cache_bytes / 2**20,
        "epoch_seconds": epoch,
        "step_seconds": epoch / max(1, len(run.steps)),
        "peak_gpu_gib": peak,
        "first_loss": run.steps[0]["loss"],
        f"extrapolated_{epochs}_epochs_seconds": run.cache_seconds + epochs * epoch,
    }
    few = pairs[: plain_steps * batch_size]
    plain_run, p_seconds, p_peak = meter.run(
        lambda: fit_bipo_run(model, few, layer=layer, config=cfg, progress=False, engine="plain")
    )
    p_epoch = p_seconds - plain_run.cache_seconds
    plain = {
        "steps": len(plain_run.steps),
        "step_seconds": p_epoch / max(1, len(plain_run.steps)),
        "reference_cache_seconds": plain_run.cache_seconds,
        "peak_gpu_gib": p_peak,
        "plain_over_fast_per_step": (p_epoch / max(1, len(plain_run.steps)))
        / max(1e-9, fast["step_seconds"]),
    }
    return {"fast": fast, "plain": plain}


def generation_section(model, layer, n_prompts, new_tokens, meter) -> dict:
    prompts = [synthetic_pairs(n_prompts)[i].question for i in range(n_prompts)]
    vec = random_vector(model, layer, 0.1, seed=1)
    kw = dict(max_new_tokens=new_tokens, stop_at_eos=False, batch_size=n_prompts)
    sl.generate(model, prompts[:1], max_new_tokens=2)  # warm-up: kernels, allocator
    out: dict[str, Any] = {"prompts": n_prompts, "new_tokens": new_tokens}
    for name, steering in (("unsteered", None), ("steered", vec)):
        _, seconds, peak = meter.run(
            lambda s=steering: sl.generate(model, prompts, steering=s, **kw)
        )
        out[name] = {"seconds": seconds, "tokens_per_s": n_prompts * new_tokens / seconds,
                     "peak_gpu_gib": peak}  # fmt: skip
    out["steered_over_unsteered_time"] = out["steered"]["seconds"] / out["unsteered"]["seconds"]
    return out


def batched_section(model, layer, n_rows, new_tokens, meter) -> dict:
    try:
        from steerlab.steering.batched import RowSpec, generate_rows
    except ImportError as exc:
        return {"skipped": f"steerlab.steering.batched is not available: {exc}"}
    prompts = [model.chat.encode(p.question).prompt_ids for p in synthetic_pairs(n_rows)]
    vecs = [random_vector(model, layer, 0.1, seed=10 + i) for i in range(n_rows)]

    def specs(steered: bool) -> list:
        return [RowSpec(p, new_tokens, steering=Steering.of(v, 1.0) if steered else None,
                        stop_at_eos=False) for p, v in zip(prompts, vecs)]  # fmt: skip

    generate_rows(model, specs(False)[:1], max_batch_size=1)  # warm-up
    out: dict[str, Any] = {"rows": n_rows, "new_tokens": new_tokens}
    for name, steered in (("unsteered_rows", False), ("per_row_steered", True)):
        _, seconds, peak = meter.run(lambda s=steered: generate_rows(model, specs(s), n_rows))
        out[name] = {"seconds": seconds, "tokens_per_s": n_rows * new_tokens / seconds,
                     "peak_gpu_gib": peak}  # fmt: skip
    out["per_row_over_unsteered_time"] = (
        out["per_row_steered"]["seconds"] / out["unsteered_rows"]["seconds"]
    )
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU, tiny shape (the test runs this)")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                    help="model weights; default bfloat16 (float32 with --tiny)")  # fmt: skip
    ap.add_argument("--n-pairs", type=int, default=None, help="default 642 (16 with --tiny)")
    ap.add_argument("--layer", type=int, default=None, help="default 15 (0 with --tiny)")
    ap.add_argument("--batch-size", type=int, default=4, help="BiPO pairs per step")
    ap.add_argument("--plain-steps", type=int, default=None, help="default 5 (2 with --tiny)")
    ap.add_argument("--epochs", type=int, default=20, help="epochs to extrapolate to")
    ap.add_argument("--gen-prompts", type=int, default=None, help="default 8 (2 with --tiny)")
    ap.add_argument("--gen-tokens", type=int, default=None, help="default 64 (4 with --tiny)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON path (default benchmarks/results/gpu_check.json; none with --tiny)")  # fmt: skip
    args = ap.parse_args(argv)
    tiny = args.tiny
    device = torch.device(args.device or ("cpu" if tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; run it on a GPU, or with --tiny.")
    dtype = getattr(torch, args.dtype or ("float32" if tiny else "bfloat16"))
    shape = SHAPE_TINY if tiny else SHAPE_7B
    n_pairs = args.n_pairs or (16 if tiny else 642)
    layer = args.layer if args.layer is not None else (0 if tiny else 15)
    plain_steps = args.plain_steps or (2 if tiny else 5)
    n_gen, n_tok = args.gen_prompts or (2 if tiny else 8), args.gen_tokens or (4 if tiny else 64)
    meter = Meter(device)
    t_all = time.perf_counter()
    model, build_s, build_peak = meter.run(
        lambda: random_model("llama", device=device, dtype=dtype, **shape)
    )
    n_params = sum(p.numel() for p in model.bridge.original_model.parameters())
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "machine": f"{platform.node()} {platform.machine()}",
        "torch": torch.__version__,
        "mode": "tiny" if tiny else "7b",
        "dtype": str(dtype).removeprefix("torch."),
        "shape": {**shape, "d_vocab": model.d_vocab},
        "parameters": n_params,
        "build": {"seconds": build_s, "peak_gpu_gib": build_peak},
        "layer": layer,
    }
    pairs = synthetic_pairs(n_pairs)
    sections: dict[str, Callable[[], dict]] = {
        "bipo": lambda: bipo_section(
            model, pairs, layer, args.batch_size, plain_steps, args.epochs, meter
        ),
        "generation": lambda: generation_section(model, layer, n_gen, n_tok, meter),
        "batched": lambda: batched_section(model, layer, n_gen, n_tok, meter),
    }
    for name, section in sections.items():
        try:  # on a GPU, one failing section must not cost the others' time
            out[name] = section()
        except Exception as exc:
            if tiny:
                raise
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    out["total_seconds"] = time.perf_counter() - t_all
    path = args.out or (None if tiny else ROOT / "benchmarks" / "results" / "gpu_check.json")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
