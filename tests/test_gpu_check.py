"""benchmarks/gpu_check.py in --tiny mode: the same code as on a GPU, on the CPU."""

import json
import math

import pytest

from tests._bench import load_benchmark


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_check_runs_in_tiny_mode(tmp_path, dtype):
    """fp32 (the default with --tiny) and bf16 weights with bf16 autocast: the precision
    and BiPO mode the GPU run uses."""
    mod = load_benchmark("gpu_check")
    out_path = tmp_path / "gpu_check.json"
    out = mod.main(["--tiny", "--n-pairs", "8", "--dtype", dtype, "--out", str(out_path)])
    assert json.loads(out_path.read_text()) == json.loads(json.dumps(out))
    assert out["mode"] == "tiny" and out["device"] == "cpu" and out["parameters"] > 0
    assert out["dtype"] == dtype
    fast, plain = out["bipo"]["fast"], out["bipo"]["plain"]
    assert fast["engine"] == "fast" and fast["steps"] == 2 and fast["step_seconds"] > 0
    assert fast["autocast_bf16"] == (dtype == "bfloat16")
    assert fast["first_loss"] == math.log(2)
    assert fast["extrapolated_20_epochs_seconds"] > fast["epoch_seconds"]
    assert plain["steps"] == 2 and plain["step_seconds"] > 0
    gen = out["generation"]
    assert gen["unsteered"]["tokens_per_s"] > 0 and gen["steered"]["tokens_per_s"] > 0
    batched = out["batched"]
    assert "skipped" in batched or batched["per_row_steered"]["tokens_per_s"] > 0
    assert mod.SHAPE_7B["d_model"] == 4096 and mod.SHAPE_7B["n_layers"] == 32
    assert len(mod.synthetic_pairs(642)) == 642
