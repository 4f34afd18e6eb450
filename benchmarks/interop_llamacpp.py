"""Run a steerlab vector in llama.cpp itself and compare the steering with steerlab's.

    .venv/bin/python benchmarks/interop_llamacpp.py            # build once, run, write JSON
    .venv/bin/python benchmarks/interop_llamacpp.py --build-only

1. Builds llama.cpp (libllama + llama-common, CPU, -DGGML_NATIVE=ON) from the source that
   ships in the ``llama-cpp-python`` sdist on PyPI, plus ``interop_llamacpp_score.cpp``: a
   tiny program that loads the model and the control vector through llama.cpp's own
   ``common_init_from_params`` (the code path of ``llama-cli --control-vector-scaled``)
   and prints log-probabilities / greedy tokens. The build is cached under
   ``$STEERLAB_LLAMACPP_DIR`` (default ``$STEERLAB_CACHE/llama.cpp``, i.e.
   ``~/.cache/steerlab/llama.cpp``) and done once.
2. Fits a CAA vector on the embedded model (SmolLM2-135M-Instruct) at one layer, exports it
   with ``vec.save("x.gguf")`` and runs the embedded model's own GGUF file
   (``SmolLM2-135M-Instruct.Q4_1.gguf``) with it at several strengths.
3. For held-out A/B prompts, compares log p(matching letter) - log p(not-matching letter)
   under llama.cpp and under ``steerlab.steer`` at the same multiplier, and the first greedy
   tokens of a few open prompts.

Quantisation: llama.cpp runs the Q4_1 weights with its own kernels; steerlab runs the same
weights de-quantised to float32. The two therefore differ slightly even without steering;
the JSON records that baseline gap next to the steered numbers.

Writes ``benchmarks/results/interop_llamacpp.json``.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import _env  # noqa: F401  (set-up: data root, offline, sys.path)

LLAMA_CPP_PYTHON = "0.3.36"
BINARY = "steerlab-cvec-score"
HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "interop_llamacpp.json"

_CMAKELISTS = """\
cmake_minimum_required(VERSION 3.14)
project(steerlab_llamacpp C CXX)
set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_COMMON ON CACHE BOOL "" FORCE)
set(LLAMA_BUILD_TESTS OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_TOOLS OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_SERVER OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_APP OFF CACHE BOOL "" FORCE)
set(LLAMA_OPENSSL OFF CACHE BOOL "" FORCE)
set(LLAMA_CURL OFF CACHE BOOL "" FORCE)
set(GGML_NATIVE ON CACHE BOOL "" FORCE)
add_subdirectory(${LLAMA_SRC} llama.cpp)
add_executable(steerlab-cvec-score ${SCORE_SRC})
target_link_libraries(steerlab-cvec-score PRIVATE llama-common llama)
target_compile_features(steerlab-cvec-score PRIVATE cxx_std_17)
"""


def llamacpp_dir() -> Path:
    """Where the source and the build live (outside the repository)."""
    env = os.environ.get("STEERLAB_LLAMACPP_DIR")
    if env:
        return Path(env).expanduser()
    from steerlab.models.embedded import cache_root

    return cache_root() / "llama.cpp"


def binary_path() -> Path:
    return llamacpp_dir() / "build" / BINARY


def _source_dir(root: Path) -> Path:
    src = root / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
    if src.is_dir():
        return src
    dl = root / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    sdist = dl / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            + [f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(dl)],
            check=True,
        )
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            tar.extractall(root, filter="data")
        else:  # pragma: no cover
            tar.extractall(root)  # noqa: S202
    return src


def build(jobs: int = 2) -> Path:
    """Build (once) the scoring program against llama.cpp; return the binary's path."""
    root = llamacpp_dir()
    out = binary_path()
    score_src = HERE / "interop_llamacpp_score.cpp"
    if out.is_file() and out.stat().st_mtime >= score_src.stat().st_mtime:
        return out
    src = _source_dir(root)
    proj = root / "project"
    proj.mkdir(parents=True, exist_ok=True)
    (proj / "CMakeLists.txt").write_text(_CMAKELISTS)
    shutil.copy(score_src, proj / "score.cpp")
    bdir = root / "build"
    subprocess.run(
        ["cmake", "-S", str(proj), "-B", str(bdir), "-DCMAKE_BUILD_TYPE=Release"]
        + [f"-DLLAMA_SRC={src}", f"-DSCORE_SRC={proj / 'score.cpp'}"],
        check=True,
    )
    subprocess.run(
        ["nice", "-n", "10", "cmake", "--build", str(bdir), "--target", BINARY, "-j", str(jobs)],
        check=True,
    )
    return out


class LlamaCpp:
    """The scoring program on the embedded GGUF, one process per control-vector strength."""

    def __init__(self, exe: Path, model_gguf: Path, threads: int = 2) -> None:
        self.exe, self.model_gguf, self.threads = exe, model_gguf, threads

    def run(self, requests: list[str], cvec: Path | None, scale: float) -> list[str]:
        cmd = [str(self.exe), "-m", str(self.model_gguf), "-c", "2048", "-t", str(self.threads)]
        # --no-repack: with -DGGML_NATIVE=ON on a CPU with AMX, ggml's AMX repacked Q4_1
        # matmul segfaults on these machines; the plain CPU kernels are used instead.
        cmd += ["--no-repack"]
        if cvec is not None and scale != 0.0:
            cmd += ["--control-vector-scaled", f"{cvec}:{scale}"]
        proc = subprocess.run(
            cmd, input="\n".join(requests) + "\n", capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        out = proc.stdout.strip().split("\n")
        if "control vector" in proc.stderr and "skipping" in proc.stderr:
            raise RuntimeError(f"llama.cpp skipped the control vector:\n{proc.stderr[-3000:]}")
        return out


def _ids(seq) -> str:
    return " ".join(str(int(i)) for i in seq)


def _pearson(a: list[float], b: list[float]) -> float:
    import numpy as np

    return float(np.corrcoef(np.asarray(a), np.asarray(b))[0, 1])


def compare(args: argparse.Namespace, exe: Path) -> dict:
    import numpy as np
    import torch

    import steerlab as sl
    from steerlab.activations.prompts import encode_ab, letter_token_ids
    from steerlab.data import pairs_to_ab
    from steerlab.models.embedded import EMBEDDED_GGUF, embedded_gguf_path

    model = sl.load_model("embedded", device="cpu")
    data = sl.load_pairs(args.behavior)
    train = pairs_to_ab(data.train[: args.n_train], seed=0)
    test = pairs_to_ab(data.test[: args.n_test], seed=1)
    vec = sl.fit_caa(model, train, layers=[args.layer], behavior=args.behavior, progress=False)
    work = llamacpp_dir() / "runs"
    work.mkdir(parents=True, exist_ok=True)
    cvec = vec.save(work / f"caa_{args.behavior}_L{args.layer}.gguf")
    lid = letter_token_ids(model)
    # A/B prompts end with "(": the next token is the answer letter
    prompts = [list(encode_ab(model, it).ids) for it in test]
    letters = [(lid.of(it.matching), lid.of(it.not_matching)) for it in test]
    open_prompts = [list(model.chat.encode(q).prompt_ids) for q in data.open_ended[: args.n_open]]

    def last_logprobs(v: "sl.SteeringVector | None", mult: float, p: list[int]) -> "torch.Tensor":
        if v is None or mult == 0.0:
            return model.forward(torch.tensor([p]))[0, -1].float().log_softmax(-1)
        with sl.steer(model, v, multiplier=mult):
            return model.forward(torch.tensor([p]))[0, -1].float().log_softmax(-1)

    # candidates per prompt: both letters + the top-k next tokens of the unsteered model
    cands = []
    for p, (m, n) in zip(prompts, letters):
        top = last_logprobs(None, 0.0, p).topk(args.top_k).indices.tolist()
        cands.append([m, n] + [t for t in top if t not in (m, n)])
    requests = [f"P {_ids(p)} | {_ids(c)}" for p, c in zip(prompts, cands)]
    requests += [f"G {args.n_greedy} | {_ids(p)}" for p in open_prompts]
    llama = LlamaCpp(exe, embedded_gguf_path(), threads=args.threads)

    def ours_at(v: "sl.SteeringVector", mult: float) -> "list[np.ndarray]":
        return [last_logprobs(v, mult, p)[c].double().numpy() for p, c in zip(prompts, cands)]

    def greedy(mult: float) -> list[list[int]]:
        out = []
        for p in open_prompts:
            ids = list(p)
            with sl.steer(model, vec, multiplier=mult):
                for _ in range(args.n_greedy):
                    ids.append(int(model.forward(torch.tensor([ids]))[0, -1].argmax()))
            out.append(ids[len(p) :])
        return out

    def shift_pearson(a_m, a_0, b_m, b_0) -> float:
        """Mean over prompts of the correlation of the two log-prob changes (candidates)."""
        return float(
            np.mean(
                [_pearson(list(x - x0), list(y - y0)) for x, x0, y, y0 in zip(a_m, a_0, b_m, b_0)]
            )
        )

    t0 = time.perf_counter()
    runs = {}
    for mult in sorted(set(args.multipliers) | {0.0}):
        lines = llama.run(requests, cvec, mult)
        theirs = [
            np.array([float(x) for x in ln.split()[1:]]) for ln in lines if ln.startswith("P ")
        ]
        g_theirs = [[int(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("G ")]
        runs[mult] = (ours_at(vec, mult), theirs, greedy(mult), g_theirs)
    ours0, theirs0, _, _ = runs[0.0]
    margin = lambda lp: np.array([x[0] - x[1] for x in lp])  # noqa: E731
    rows = []
    for mult, (ours, theirs, g_ours, g_theirs) in runs.items():
        row = {
            "multiplier": mult,
            "steerlab_mean_margin": float(margin(ours).mean()),
            "llamacpp_mean_margin": float(margin(theirs).mean()),
            "mean_abs_margin_diff": float(np.abs(margin(ours) - margin(theirs)).mean()),
            "greedy_identical_prefix": [
                next((k for k, (a, b) in enumerate(zip(x, y)) if a != b), len(x))
                for x, y in zip(g_ours, g_theirs)
            ],
            "greedy_steerlab": [model.tokenizer.decode(x) for x in g_ours],
            "greedy_llamacpp": [model.tokenizer.decode(x) for x in g_theirs],
        }
        if mult != 0.0:
            d_ours, d_theirs = margin(ours) - margin(ours0), margin(theirs) - margin(theirs0)
            row["steerlab_mean_margin_shift"] = float(d_ours.mean())
            row["llamacpp_mean_margin_shift"] = float(d_theirs.mean())
            row["margin_shift_sign_agreement"] = float(
                np.mean(np.sign(d_ours) == np.sign(d_theirs))
            )
            row["margin_shift_pearson"] = _pearson(list(d_ours), list(d_theirs))
            row["logprob_shift_pearson"] = shift_pearson(ours, ours0, theirs, theirs0)
        rows.append(row)
    # layer convention: llama.cpp's direction.L against steerlab at L-1, L, L+1
    m_check = max(args.multipliers, key=abs)
    theirs_l = runs[m_check][1]
    layer_rows = []
    for dl in (-1, 0, 1):
        ours_l = ours_at(vec.moved_to(args.layer + dl), m_check)
        layer_rows.append(
            {
                "steerlab_site": str(sl.HookSite(args.layer + dl)),
                "logprob_shift_pearson_vs_llamacpp_direction_L": shift_pearson(
                    ours_l, ours0, theirs_l, theirs0
                ),
            }
        )
    return {
        "what": (
            "A CAA vector fitted by steerlab on the embedded model, exported with "
            "vec.save('x.gguf') and run by llama.cpp (--control-vector-scaled FILE:M, loaded "
            "by common_init_from_params) on the embedded model's own Q4_1 GGUF, against "
            "steerlab.steer(model, vec, multiplier=M) on the de-quantised float32 weights, on "
            "held-out A/B prompts ending in '('. margin = log p(matching letter) - log p(not-"
            "matching letter); shift = value(M) - value(0) per prompt; logprob_shift_pearson = "
            "mean over prompts of the correlation between the two engines' log-prob shifts "
            f"over both letters + the top-{args.top_k} next tokens."
        ),
        "quantisation": (
            "llama.cpp computes with the Q4_1 weights and its own CPU kernels; steerlab uses "
            "the same weights de-quantised to float32 by transformers. The multiplier-0 row "
            "shows the gap that comes from that alone (mean_abs_margin_diff)."
        ),
        "model_gguf": EMBEDDED_GGUF,
        "llama_cpp_source": f"llama-cpp-python {LLAMA_CPP_PYTHON} sdist, vendor/llama.cpp",
        "behavior": args.behavior,
        "layer": args.layer,
        "layer_convention": (
            f"GGUF tensor direction.{args.layer} == steerlab HookSite({args.layer}, "
            f"'resid_post') == blocks.{args.layer}.hook_resid_post"
        ),
        "n_train_ab": len(train),
        "n_test_ab": len(test),
        "vector_norm": float(vec.direction().norm()),
        "per_multiplier": rows,
        "layer_check": {"multiplier": m_check, "rows": layer_rows},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--behavior", default="power-seeking")
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=24)
    ap.add_argument("--n-open", type=int, default=3)
    ap.add_argument("--n-greedy", type=int, default=8)
    ap.add_argument("--multipliers", type=lambda s: [float(x) for x in s.split(",")],
                    default=[-32.0, -16.0, 0.0, 16.0, 32.0])  # fmt: skip
    ap.add_argument("--top-k", type=int, default=32)
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()
    t = time.perf_counter()
    exe = build(args.jobs)
    print(f"llama.cpp scorer: {exe} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    if args.build_only:
        return
    result = compare(args, exe)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["per_multiplier"]:
        print(
            f"M={row['multiplier']:+.1f}  margin steerlab {row['steerlab_mean_margin']:+.3f}  "
            f"llama.cpp {row['llamacpp_mean_margin']:+.3f}  |diff| {row['mean_abs_margin_diff']:.3f}"
            f"  shift r={row.get('logprob_shift_pearson', float('nan')):.3f}"
        )
    print(json.dumps(result["layer_check"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
