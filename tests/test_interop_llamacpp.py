"""llama.cpp itself runs steerlab's GGUF export and steers the same way (benchmarks/
interop_llamacpp.py). The run needs the llama.cpp build (skips with how to make it); the
committed result and the layer convention in llama.cpp's source are checked without it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "interop_llamacpp.py"
RESULT = ROOT / "benchmarks" / "results" / "interop_llamacpp.json"
BUILD_HINT = (
    "Build it once with `.venv/bin/python benchmarks/interop_llamacpp.py --build-only` "
    "(llama.cpp from the llama-cpp-python sdist; cmake + a C++ compiler)."
)


def _bench():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import interop_llamacpp  # noqa: PLC0415

        return interop_llamacpp
    finally:
        sys.path.remove(str(SCRIPT.parent))


def _check_agreement(result: dict) -> None:
    rows = {r["multiplier"]: r for r in result["per_multiplier"]}
    steered = [r for m, r in rows.items() if m != 0.0]
    assert steered and 0.0 in rows
    for r in steered:
        # the two engines' next-token log-prob changes point the same way, prompt by prompt
        assert r["logprob_shift_pearson"] >= 0.95, r
        # and the A/B margin moves the same way on average (when it moves at all)
        if abs(r["steerlab_mean_margin_shift"]) > 0.05:
            assert (r["steerlab_mean_margin_shift"] > 0) == (r["llamacpp_mean_margin_shift"] > 0)
    # llama.cpp's direction.L matches steerlab at resid_post L, not at L-1 or L+1
    fit = {
        x["steerlab_site"]: x["logprob_shift_pearson_vs_llamacpp_direction_L"]
        for x in result["layer_check"]["rows"]
    }
    best = max(fit, key=fit.get)
    assert best == f"{result['layer']}.resid_post", fit
    assert all(v < fit[best] - 0.1 for k, v in fit.items() if k != best), fit


def test_committed_result_shows_agreement():
    if not RESULT.is_file():
        pytest.skip(f"{RESULT.name} is not committed yet; run {SCRIPT.name}")
    _check_agreement(json.loads(RESULT.read_text()))


def test_layer_convention_in_llama_cpp_source():
    src = _bench().llamacpp_dir() / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
    if not src.is_dir():
        pytest.skip(f"llama.cpp source not unpacked under {src}. {BUILD_HINT}")
    common = (src / "common" / "common.cpp").read_text()
    adapter = (src / "src" / "llama-adapter.cpp").read_text()
    llama = (src / "src" / "models" / "llama.cpp").read_text()
    # direction.N is stored at data[(N - 1) * n_embd] and N == 0 is rejected ...
    assert "result.n_embd * (layer_idx - 1)" in common
    assert "invalid (zero) direction tensor layer index" in common
    # ... and that block goes to tensors[il] with off = n_embd * (il - 1): tensors[N] = direction.N
    assert "tensors.push_back(nullptr); // there's never a tensor for layer 0" in adapter
    assert "const size_t off = n_embd * (il - 1);" in adapter
    # tensors[il] is added after layer il's FFN residual add: the block's output
    ffn_add = llama.index("cur = ggml_add(ctx0, cur, ffn_inp);")
    assert (
        ffn_add < llama.index("cur = build_cvec(cur, il);") < llama.index('cb(cur, "l_out", il);')
    )


@pytest.mark.integration
@pytest.mark.slow
def test_llama_cpp_steers_like_steerlab(tmp_path):
    exe = _bench().binary_path()
    if not exe.is_file():
        pytest.skip(f"llama.cpp scorer not built ({exe}). {BUILD_HINT}")
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(SCRIPT), "--n-train", "16", "--n-test", "4", "--n-open", "1"]
    cmd += ["--n-greedy", "3", "--multipliers=-32,0,32", "--threads", "1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True, timeout=1200)
    _check_agreement(json.loads(out.read_text()))
