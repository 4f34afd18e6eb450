"""benchmarks/shared_prefix.py --toggle packed --rounds 0 on a few pairs: whole BiPO epochs
timed with oneDNN-packed weights and without, bitwise the same losses."""

import json

import pytest

from tests._bench import assert_refused, load_benchmark


def test_packed_toggle_steps_and_epochs(tmp_path, embedded_model):
    bench = load_benchmark("shared_prefix")
    out_path = tmp_path / "packed.json"
    out = bench.main(["--toggle", "packed", "--n-pairs", "8", "--n-eval", "4", "--n-neutral",
                      "2", "--rounds", "0", "--epoch-rounds", "2", "--out", str(out_path)])  # fmt: skip
    assert json.loads(out_path.read_text()) == json.loads(json.dumps(out))
    assert "bipo_steps" not in out and "generate_greedy" not in out  # --rounds 0: epochs only
    row = out["bipo_epochs"]
    assert len(row["seconds_on"]) == len(row["seconds_off"]) == 2 and row["on_over_off_median"] > 0
    assert row["steps"] == 2  # 8 pairs, batches of 4
    assert row["max_abs_diff"] == 0.0  # packed weights: the same losses, bit for bit


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--rounds", "0"], "not both 0"),
        (["--epoch-rounds", "-1"], "counts >= 0"),
        (["--n-pairs", "0"], "--n-pairs, --n-eval and --n-neutral need >= 1"),
    ],
)
def test_bad_options_are_refused(argv, says, capsys):
    assert_refused("shared_prefix", argv, says, capsys)
