"""benchmarks/_report: the JSON's command reproduces the run; the code's commit ignores results."""

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


def test_git_commit_ignores_the_results_files(tmp_path):
    import subprocess

    report = load_benchmark("_report")

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "r.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    rev = report.git_commit(tmp_path)
    assert rev and not rev.endswith("-dirty")
    (tmp_path / "benchmarks" / "results" / "r.json").write_text('{"new": 1}')
    (tmp_path / "benchmarks" / "results" / "new.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("untracked")  # as git describe --dirty: not counted
    assert report.git_commit(tmp_path) == rev  # a rewritten result is not a code change
    (tmp_path / "code.py").write_text("x = 2\n")
    assert report.git_commit(tmp_path) == rev + "-dirty"
    assert report.git_commit(tmp_path / "benchmarks") == rev + "-dirty"  # from a subfolder
