"""Shared ending of the benchmark scripts: the machine's load line and the JSON out."""

import json
import subprocess
from pathlib import Path
from typing import Any


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
