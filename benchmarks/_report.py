"""Shared parts of the benchmark scripts: the command that ran, the machine, its load line
and the JSON out."""

import argparse
import json
import platform
import subprocess
from pathlib import Path
from typing import Any


def command_line(script: str, args: argparse.Namespace, skip: tuple[str, ...] = ()) -> str:
    """The command that reproduces this run: ``python benchmarks/{script}`` and every
    option set (a flag that is on bare, one that is off or unset left out)."""
    parts = [f"python benchmarks/{script}"]
    for key, value in vars(args).items():
        if key in skip or value is None or value is False:
            continue
        parts.append(f"--{key.replace('_', '-')}" + ("" if value is True else f" {value}"))
    return " ".join(parts)


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


#: Paths whose changes do not make a checkout's code "dirty": the benchmarks' own results.
RESULTS = "benchmarks/results"


def git_commit(cwd: "str | Path | None" = None) -> str:
    """The checkout's commit, ``-dirty`` when it has uncommitted changes other than under
    :data:`RESULTS` (a results file a benchmark has just rewritten is not a code change)."""
    here = Path(cwd) if cwd is not None else Path(__file__).parent

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=here).stdout.strip()

    rev = git("rev-parse", "--short", "HEAD")
    if not rev:
        return ""
    top = git("rev-parse", "--show-toplevel")
    changed = git("-C", top, "status", "--porcelain", "--untracked-files=no", "--", ".",
                  f":(exclude){RESULTS}")  # fmt: skip
    return rev + ("-dirty" if changed else "")


def uptime() -> str:
    """The ``uptime`` line (load averages): recorded beside every timing."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def emit(out: dict[str, Any], path: "str | Path | None") -> None:
    """Record ``uptime_at_end``, print ``out`` as JSON and also write it to ``path``."""
    out["uptime_at_end"] = uptime()
    text = json.dumps(out, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
