"""benchmarks/attention_cpu.py on tiny shapes: both kernels timed at every width and
dtype, in both modes, their outputs equal within rounding, and the blocks' cut-off shown."""

import json

import pytest

from steerlab.models.attention import MATMUL_ATTENTION_MAX_POS
from tests._bench import assert_refused, load_benchmark


def test_kernels_side_by_side(tmp_path):
    bench = load_benchmark("attention_cpu")
    out_path = tmp_path / "attention.json"
    widths = f"8,{MATMUL_ATTENTION_MAX_POS + 1}"
    out = bench.main(["--heads", "4,2,8", "--rows", "2", "--widths", widths, "--rounds", "2",
                      "--reps", "1", "--out", str(out_path)])  # fmt: skip
    assert json.loads(out_path.read_text()) == json.loads(json.dumps(out))
    rows = out["kernels"]
    assert len(rows) == 2 * 2 * 2  # dtypes x widths x modes
    assert {(r["dtype"], r["mode"]) for r in rows} == {
        (d, m) for d in ("fp32", "bf16") for m in ("forward_backward", "forward")
    }
    for r in rows:
        assert r["ms_matmul"] > 0 and r["ms_fused"] > 0
        assert r["used_by_the_blocks"] is (r["width"] == 8)  # bf16 and fp32 alike
        assert r["max_abs_diff"] < (1e-5 if r["dtype"] == "fp32" else 0.05)
    assert "bipo_epochs" not in out


def test_packed_mask_hides_one_quarter_from_the_last():
    bench = load_benchmark("attention_cpu")
    m = bench.packed_mask(1, 8)[0]
    assert m[7, 4:6].tolist() == [False, False] and m[7, :4].all() and m[7, 6:].all()
    assert not m.triu(1).any() and m[:6].tril().sum() == 21  # causal above the last quarter


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--heads", "9,2,64"], "Q a multiple of KV"),
        (["--heads", "9,3"], "Q a multiple of KV"),
        (["--widths", "8,x"], "comma-separated integers"),
        (["--widths", "0"], "positions >= 1"),
        (["--dtypes", "fp16"], "choose among fp32, bf16"),
        (["--rounds", "0"], "need >= 1"),
    ],
)
def test_bad_options_are_refused(argv, says, capsys):
    assert_refused("attention_cpu", argv, says, capsys)
