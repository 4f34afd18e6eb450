"""benchmarks/shared_prefix.py --toggle packed --rounds 0 on a few pairs: whole BiPO epochs
timed with oneDNN-packed weights and without, bitwise the same losses."""

import json

from tests._bench import load_benchmark


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
