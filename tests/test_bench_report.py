"""benchmarks/_report.command_line: the JSON's command reproduces the run."""

import argparse

from tests._bench import load_benchmark


def test_command_line_prints_flags_bare_and_leaves_out_unset_and_skipped():
    report = load_benchmark("_report")
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-pairs", type=int, default=160)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(["--no-bf16", "--out", "x.json"])
    assert report.command_line("bipo_speed.py", args) == (
        "python benchmarks/bipo_speed.py --n-pairs 160 --no-bf16 --out x.json"
    )
    args = ap.parse_args(["--n-pairs", "8", "--out", "x.json"])
    assert report.command_line("bipo_speed.py", args, skip=("out",)) == (
        "python benchmarks/bipo_speed.py --n-pairs 8"
    )
