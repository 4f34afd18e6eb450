"""The architecture matrix: what steerlab does on each model family TransformerBridge runs.

For every family of :data:`steerlab.models.architectures.TINY_ARCHITECTURES` a tiny
random-init model (2 layers, d_model 64, the embedded model's tokenizer) is saved as an
ordinary checkpoint and loaded with ``steerlab.load_model(path)``, the path users take;
then each capability of :data:`CAPABILITIES` is checked and the table is written to
``docs/architectures.md`` (and the rows as JSON).

    python benchmarks/architectures.py                  # all families -> docs/architectures.md
    python benchmarks/architectures.py --archs llama gemma2 --out /tmp/arch.md

The test suite runs the same checks (tests/test_architectures.py).
"""

import argparse
import importlib.metadata
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tiny models only: nothing to download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import steerlab as sl  # noqa: E402
from steerlab.activations.capture import capture  # noqa: E402
from steerlab.data import PreferencePair  # noqa: E402
from steerlab.errors import HookSiteError  # noqa: E402
from steerlab.evaluation.likelihood import likelihood_margin  # noqa: E402
from steerlab.evaluation.likelihood_fast import (  # noqa: E402
    fast_path_applies,
    likelihood_margin_fast,
)
from steerlab.models.architectures import TINY_ARCHITECTURES, build_tiny_checkpoint  # noqa: E402
from steerlab.models.sites import HOOK_KINDS, HookSite  # noqa: E402
from steerlab.vectors.bipo import BiPOConfig, fit_bipo_run  # noqa: E402
from steerlab.vectors.bipo.plain import PlainPathWarning, fast_path_refusal  # noqa: E402
from steerlab.vectors.fitting import fit_vectors  # noqa: E402
from steerlab.vectors.vector import Provenance, SteeringVector  # noqa: E402

PASS, FAIL, NA = "pass", "fail", "n/a"
WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "forest"]
PAIRS = [
    PreferencePair(f"Do you like the {w} number {i}?", f"Yes, I like the {w}.", f"No, not {w}.")
    for i, w in enumerate(WORDS)
]
PROMPTS = ("Hi.", "Would you like more power over the world, or less of it?")


@dataclass(frozen=True)
class Outcome:
    arch: str
    capability: str
    status: str
    why: str
    seconds: float = 0.0


def _vec(model: sl.SteerlabModel, sites: Sequence[HookSite], scale: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dirs = {s: torch.randn(model.d_model, generator=g) * scale for s in sites}
    return SteeringVector(dirs, Provenance(method="caa", behavior="matrix"))


def _weights(model: sl.SteerlabModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.bridge.original_model.state_dict().items()}


# --- capabilities: each returns (status, why) -----------------------------------------------


def hook_sites(model: sl.SteerlabModel) -> tuple[str, str]:
    parallel = bool(getattr(model.bridge.cfg, "parallel_attn_mlp", False))
    missing: list[str] = []
    for kind in HOOK_KINDS:
        try:
            for layer in range(model.n_layers):
                model.site(layer, kind).hook_name(model)
        except HookSiteError as exc:
            if not (kind == "resid_mid" and parallel and "in parallel" in str(exc)):
                return FAIL, str(exc)
            missing.append(kind)  # no such residual; the error says so
    found = [k for k in HOOK_KINDS if k not in missing]
    why = f"{', '.join(found)} at all {model.n_layers} layers"
    if missing:  # an architectural fact, with its own error message
        why += "; no resid_mid: attention and MLP run in parallel on resid_pre"
    return PASS, why


@torch.no_grad()
def steer_restores(model: sl.SteerlabModel) -> tuple[str, str]:
    ids = torch.tensor([model.chat.encode(PROMPTS[1], "Yes.").ids])
    before = model.bridge(ids)
    with sl.steer(model, _vec(model, [HookSite(0)], 4.0)):
        steered = model.bridge(ids)
    after = model.bridge(ids)
    if torch.allclose(steered, before):
        return FAIL, "steering did not change the logits"
    if not torch.equal(before, after):
        return FAIL, f"logits differ after steer(): max {float((before - after).abs().max()):.3g}"
    return PASS, "logits bit-identical after leaving steer(); different inside"


@torch.no_grad()
def lower_layers_untouched(model: sl.SteerlabModel) -> tuple[str, str]:
    top = model.n_layers - 1
    ids = torch.tensor([model.chat.encode(PROMPTS[1], "Yes.").ids])
    sites = [HookSite(x) for x in range(model.n_layers)] + [HookSite(top, "resid_pre")]
    with capture(model, sites) as plain:
        model.bridge(ids)
    plain = dict(plain)
    with sl.steer(model, _vec(model, [HookSite(top)], 4.0)), capture(model, sites) as steered:
        model.bridge(ids)
    below = [s for s in sites if s.layer < top or s.kind == "resid_pre"]
    changed = [s.key for s in below if not torch.equal(plain[s], steered[s])]
    if changed:
        return FAIL, f"steering at layer {top} changed {', '.join(changed)}"
    if torch.equal(plain[HookSite(top)], steered[HookSite(top)]):
        return FAIL, f"resid_post of layer {top} did not change"
    return PASS, f"vector at layer {top}: every site below bit-identical"


def kv_cache_generation(model: sl.SteerlabModel) -> tuple[str, str]:
    vec = _vec(model, [HookSite(0)], 8.0, seed=1)
    kw = dict(max_new_tokens=6, stop_at_eos=False, steering=vec)
    cached = sl.generate(model, list(PROMPTS), use_cache=True, **kw)
    uncached = sl.generate(model, list(PROMPTS), use_cache=False, **kw)
    if cached.token_ids != uncached.token_ids:
        return FAIL, f"cached {cached.token_ids} != uncached {uncached.token_ids}"
    plain = sl.generate(model, list(PROMPTS), max_new_tokens=6, stop_at_eos=False)
    moved = "steered tokens differ from unsteered" if plain.token_ids != cached.token_ids else (
        "steering did not change these tokens")  # fmt: skip
    return PASS, f"greedy, 2 left-padded prompts x 6 tokens, cached == uncached ({moved})"


def fit_methods(model: sl.SteerlabModel) -> tuple[str, str]:
    layer = model.n_layers - 1
    vecs = fit_vectors(model, PAIRS, ["caa", "freeform", "pca"], [layer])
    bad = [m for (m, _), v in vecs.items()
           if not (torch.isfinite(v.direction(layer)).all() and v.direction(layer).norm() > 0)]  # fmt: skip
    if bad:
        return FAIL, f"zero or non-finite vectors: {', '.join(bad)}"
    return PASS, f"CAA, freeform and PCA at layer {layer}: finite, non-zero"


def bipo_trains(model: sl.SteerlabModel) -> tuple[str, str]:
    before = _weights(model)
    cfg = BiPOConfig(epochs=1, batch_size=4, warmup_steps=0, lr=2e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlainPathWarning)
        run = fit_bipo_run(model, PAIRS, layer=0, config=cfg, progress=False)
    if run.steps[0]["loss"] != math.log(2):
        return FAIL, f"first loss {run.steps[0]['loss']} != log 2 (policy != reference at v=0)"
    if not float(run.vector.direction(0).norm()) > 0:
        return FAIL, "the vector did not move"
    after = _weights(model)
    if any(not torch.equal(before[k], after[k]) for k in before):
        return FAIL, "model weights changed"
    reason = fast_path_refusal(model)
    how = "fast path" if reason is None else f"plain path ({reason})"
    return PASS, f"{how}; loss log 2 at v=0, vector moved, weights unchanged"


def bipo_fast_equals_plain(model: sl.SteerlabModel) -> tuple[str, str]:
    reason = fast_path_refusal(model)
    if reason is not None:
        return NA, f"fast path refused ({reason}); BiPO trains on the plain path"
    cfg = BiPOConfig(epochs=1, batch_size=2, warmup_steps=0, lr=2e-2)
    kw = dict(layer=0, config=cfg, progress=False)
    fast = fit_bipo_run(model, PAIRS[:4], engine="fast", **kw)
    plain = fit_bipo_run(model, PAIRS[:4], engine="plain", **kw)
    gap = max(abs(a["loss"] - b["loss"]) for a, b in zip(fast.steps, plain.steps))
    vgap = float((fast.vector.direction(0) - plain.vector.direction(0)).abs().max())
    if gap > 1e-4 or vgap > 1e-4:
        return FAIL, f"fast and plain paths differ: loss {gap:.2g}, vector {vgap:.2g}"
    return PASS, f"per-step loss within {gap:.1g}, vector within {vgap:.1g}"


def margin_fast_equals_plain(model: sl.SteerlabModel) -> tuple[str, str]:
    vecs = [_vec(model, [HookSite(0)], 3.0, 2), _vec(model, [HookSite(0), HookSite(1)], 3.0, 3)]
    if not fast_path_applies(model, vecs):
        return NA, f"fast path refused ({fast_path_refusal(model)}); the plain margin is used"
    kw = dict(progress=False, per_item=True)
    fast = likelihood_margin_fast(model, PAIRS[:4], vecs, [-1.0, 0.0, 1.0], **kw)
    plain = likelihood_margin(model, PAIRS[:4], vecs, [-1.0, 0.0, 1.0], **kw)
    cols = ["logp_matching", "logp_not_matching", "margin"]
    gap = float((fast[cols].to_numpy() - plain[cols].to_numpy()).__abs__().max())
    if gap > 1e-3:
        return FAIL, f"fast and plain margins differ by {gap:.3g} nats"
    return PASS, f"per-pair log-probs within {gap:.1g} nats (vectors at layers 0 and 0+1)"


#: name -> check, in table order.
CAPABILITIES: dict[str, Callable[[sl.SteerlabModel], tuple[str, str]]] = {
    "hook sites": hook_sites,
    "steer() restores": steer_restores,
    "layers below untouched": lower_layers_untouched,
    "KV-cache generation": kv_cache_generation,
    "CAA/freeform/PCA": fit_methods,
    "BiPO trains": bipo_trains,
    "BiPO fast == plain": bipo_fast_equals_plain,
    "margin fast == plain": margin_fast_equals_plain,
}


# --- the matrix --------------------------------------------------------------------------


def check_architecture(arch: str, workdir: Path, tokenizer: Any = None) -> list[Outcome]:
    """Build, save and load a tiny ``arch``; run every capability (a failure is recorded
    with its exception, never raised)."""
    t0 = time.perf_counter()
    try:
        path = build_tiny_checkpoint(arch, workdir / arch, tokenizer=tokenizer)
        model = sl.load_model(str(path), device="cpu")
    except Exception as exc:  # the row says why
        why = f"could not build or load: {type(exc).__name__}: {exc}"[:300]
        return [Outcome(arch, "load", FAIL, why, time.perf_counter() - t0)] + [
            Outcome(arch, cap, FAIL, "model did not load") for cap in CAPABILITIES
        ]
    out = [Outcome(arch, "load", PASS, "load_model(dir) of a saved checkpoint",
                   time.perf_counter() - t0)]  # fmt: skip
    for name, check in CAPABILITIES.items():
        t = time.perf_counter()
        try:
            status, why = check(model)
        except Exception as exc:
            status, why = FAIL, f"{type(exc).__name__}: {exc}"[:300]
        out.append(Outcome(arch, name, status, why, time.perf_counter() - t))
    return out


def run_matrix(archs: Sequence[str] | None = None, workdir: Path | None = None) -> list[Outcome]:
    from transformers import AutoTokenizer

    from steerlab.models.embedded import ensure_embedded_cache

    archs = list(archs or TINY_ARCHITECTURES)
    tokenizer = AutoTokenizer.from_pretrained(str(ensure_embedded_cache()))  # shared by all
    with tempfile.TemporaryDirectory(prefix="steerlab-arch-") as tmp:
        root = workdir or Path(tmp)
        return [o for arch in archs for o in check_architecture(arch, root, tokenizer)]


def _versions() -> str:
    names = ("transformer-lens", "transformers", "torch")
    return ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)


def table_lines(rows: Sequence[Outcome]) -> list[str]:
    """The markdown table: one line per architecture, one column per capability."""
    caps = ["load", *CAPABILITIES]
    archs = list(dict.fromkeys(r.arch for r in rows))
    status = {(r.arch, r.capability): r.status for r in rows}
    lines = ["| architecture | " + " | ".join(caps) + " |", "|---" * (len(caps) + 1) + "|"]
    for a in archs:
        spec = TINY_ARCHITECTURES[a]
        cells = [status.get((a, c), "?") for c in caps]
        lines.append(f"| {spec.family} (`{spec.hf_class}`) | " + " | ".join(cells) + " |")
    return lines


def to_markdown(rows: Sequence[Outcome]) -> str:
    archs = list(dict.fromkeys(r.arch for r in rows))
    n_pass = sum(all(r.status != FAIL for r in rows if r.arch == a) for a in archs)
    out = [
        "# Architecture matrix",
        "",
        "Generated by `python benchmarks/architectures.py` (the test suite runs the same "
        "checks: `tests/test_architectures.py`). Each family is a tiny random-init model "
        "(2 layers, d_model 64, the embedded SmolLM2 tokenizer) built from its "
        "`transformers` config, saved as a checkpoint and loaded with "
        "`steerlab.load_model(path)`.",
        "",
        f"Versions: {_versions()}. {n_pass} of {len(archs)} families pass every check "
        "that applies; `n/a` says why a check does not apply.",
        "",
        *table_lines(rows),
        "",
        "## What each check asserts",
        "",
        "- **load**: `load_model(dir)` of the saved checkpoint (TransformerBridge adapter).",
        "- **hook sites**: every `HookSite` kind resolves at every layer.",
        "- **steer() restores**: logits inside `steer()` differ, after it are bit-identical.",
        "- **layers below untouched**: a vector at the last layer leaves every activation "
        "below it bit-identical.",
        "- **KV-cache generation**: greedy steered generation with the KV cache equals "
        "generation without it (two left-padded prompts).",
        "- **CAA/freeform/PCA**: the three activation methods fit finite, non-zero vectors.",
        "- **BiPO trains**: one epoch from `v = 0` (first loss exactly log 2), the vector "
        "moves, the model's weights do not; the fast path where it applies, else the plain "
        "path (`engine='auto'`).",
        "- **BiPO fast == plain**: the fast path (cached residuals, packed pairs) and the "
        "plain path (full forward per step) give the same losses and vector.",
        "- **margin fast == plain**: `likelihood_margin_fast` equals `likelihood_margin` "
        "per pair (vectors at layer 0 and at layers 0 and 1).",
        "",
        "## Details",
        "",
    ]
    for a in archs:
        spec = TINY_ARCHITECTURES[a]
        out.append(f"### {spec.family} (`{spec.hf_class}`)")
        out.append("")
        out += [f"- {r.capability}: **{r.status}**: {r.why}" for r in rows if r.arch == a]
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", nargs="*", default=None, choices=list(TINY_ARCHITECTURES))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "architectures.md")
    ap.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "architectures.json"
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = run_matrix(args.archs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_markdown(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    print("\n".join(table_lines(rows)))
    print(f"{time.perf_counter() - t0:.0f} s; wrote {args.out} and {args.json}", file=sys.stderr)
    return int(any(r.status == FAIL for r in rows))


if __name__ == "__main__":
    sys.exit(main())
