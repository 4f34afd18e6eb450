"""benchmarks/bipo_profile.py on the tiny model: the profiled steps are the epoch's steps
after the first, every operator lands in one group, and the groups plus the time outside
operators add up to the profiled wall time."""

import json

import pytest

from tests._bench import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bipo_profile")


def test_operator_names_fall_in_their_groups(bench):
    assert bench.group_of("mkldnn::_linear_pointwise") == "matmul"
    assert bench.group_of("aten::mm") == "matmul"
    assert bench.group_of("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert bench.group_of("aten::_softmax_backward_data") == "attention"
    assert bench.group_of("aten::_softmax") == "attention"
    assert bench.group_of("aten::_log_softmax") == "log_softmax_gather"
    assert bench.group_of("aten::_log_softmax_backward_data") == "log_softmax_gather"
    assert bench.group_of("aten::mul") == "elementwise"
    assert bench.group_of("aten::index_select") == "copy_index"
    assert bench.group_of("aten::empty_strided") == "allocation"
    assert bench.group_of("_LinearBackward") == "other"


def test_profile_of_a_tiny_epoch(bench, tmp_path):
    out_path = tmp_path / "profile.json"
    out = bench.main(["--model", "tiny", "--n-pairs", "12", "--layer", "1", "--out",
                      str(out_path)])  # fmt: skip
    assert json.loads(out_path.read_text()) == json.loads(json.dumps(out))
    assert out["steps_per_epoch"] == 3 and out["steps_profiled"] == 2
    assert out["groups_seconds"]["matmul"] > 0 and out["profiled_wall_seconds"] > 0
    total = sum(out["groups_seconds"].values()) + out["outside_operators_seconds"]
    assert total == pytest.approx(out["profiled_wall_seconds"], rel=1e-9)
    assert sum(out["groups_share_of_wall"].values()) == pytest.approx(1.0)
    assert {op["group"] for op in out["top_operators"]} <= {*out["groups_seconds"]}
    shapes = out["matmul_by_weight_shape"]
    if out["fp32_gemm"] == "onednn":  # AMD CPUs: every linear map is oneDNN's
        weights = {row["weight"] for row in shapes}
        assert weights & {"49152 x 64", "64 x 49152"}  # the head (d_model 64), either way
        assert sum(r["seconds"] for r in shapes) <= out["groups_seconds"]["matmul"] + 1e-9
        assert all(r["gflop"] > 0 and r["calls"] > 0 for r in shapes)


def test_too_few_pairs_for_two_steps_is_refused(bench):
    with pytest.raises(SystemExit, match="--n-pairs 4 gives 1 step; profiling needs >= 2"):
        bench.main(["--model", "tiny", "--n-pairs", "4", "--layer", "1"])
