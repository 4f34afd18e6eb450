"""``steerlab data fetch|verify``: download the data files and check their sha256.

Both print a short summary (counts per status, then the files with a problem, a few
per status) and exit 1 when any file is missing, failed or has the wrong sha256.
"""

from pathlib import Path
from typing import Any

import typer

from steerlab.cli import _common

data_app = _common.new_app("Datasets: download and verify.")

#: Problem files listed per status; the rest are counted.
SHOWN = 5
_NAMES = typer.Argument(
    None,
    help="Groups (bipo, caa, anthropic-evals, truthfulqa, advbench), folders or paths; "
    "default all.",
)


def summarize(report: Any, action: str) -> list[str]:
    """Readable lines for a fetch / verify report: the counts, then the problems."""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(report.counts.items()))
    lines = [f"{action} {len(report)} files under {report.root}: {counts or 'none selected'}."]
    failures = report.failures()
    for status in dict.fromkeys(f.status for f in failures):
        same = [f for f in failures if f.status == status]
        for f in same[:SHOWN]:
            lines.append(
                f"  {status}: {f.path}" + (f" ({f.detail})" if status != "missing" else "")
            )
        if len(same) > SHOWN:
            lines.append(f"  ... and {len(same) - SHOWN} more {status}")
    if failures:
        groups = sorted({f.path.split("/", 1)[0] for f in failures})
        lines.append(
            f"{len(failures)} problem(s). Fix: steerlab data fetch {' '.join(groups)} "
            "(re-downloads missing and mismatched files)."
        )
    return lines


@data_app.command("fetch")
def data_fetch(
    names: list[str] | None = _NAMES,
    dest: Path | None = typer.Option(None, help="Destination (default: the download cache)."),
) -> None:
    """Download dataset files from their upstream URLs and check their sha256."""
    from steerlab.data import fetch
    from steerlab.errors import DataFetchError

    if dest is not None:
        _common.check_out_dir(dest, "--dest")
    try:
        report = fetch(names or None, dest)
    except DataFetchError as exc:
        if exc.report is None:
            raise
        report = exc.report
    for line in summarize(report, "fetched"):
        typer.echo(line)
    if not report.ok:
        raise typer.Exit(code=1)


@data_app.command("verify")
def data_verify(
    names: list[str] | None = _NAMES,
    root: Path | None = typer.Option(None, help="Data root (default: resolved)."),
) -> None:
    """Check the sha256 of the data files under the data root; exit 1 on any problem."""
    from steerlab.data import verify

    report = verify(root, names or None)
    for line in summarize(report, "verified"):
        typer.echo(line)
    if not report.ok:
        raise typer.Exit(code=1)
