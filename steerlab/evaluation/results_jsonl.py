"""Append-only JSONL results files that survive a crash, and refuse files steerlab did not write.

Every row steerlab writes is a JSON object whose first field is ``key``; rows are appended,
flushed and fsynced batch by batch, so a crash can at worst leave one cut-off last line,
which :func:`read_jsonl` drops (and, with ``repair=True``, truncates away).
"""

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from steerlab.errors import ConfigError, DataFormatError


def read_jsonl(path: "str | Path", *, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a missing file is empty.

    The last line is ignored when it is cut short (no final newline) or does not parse:
    that is what a crash mid-write leaves. With ``repair=True`` it is also cut from the
    file, so that appending starts on a clean line; a file steerlab did not write (a row
    without ``key``, or a cut-off line that does not start like steerlab's rows) raises
    :class:`~steerlab.errors.ConfigError` and is left untouched. A malformed line before the last one
    raises :class:`~steerlab.errors.DataFormatError` naming the line.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")  # the piece after the last newline is b"" or a cut-off row
    rows: list[dict[str, Any]] = []
    good_end = 0  # byte offset just after the last line that was kept
    offset = 0
    for i, line in enumerate(lines):
        complete = i < len(lines) - 1
        offset += len(line) + complete
        if not line.strip():
            good_end = offset if complete else good_end
            continue
        try:
            row = json.loads(line) if complete else None
        except ValueError as exc:
            row, error = None, str(exc)
        else:
            error = "not a JSON object" if complete and not isinstance(row, dict) else ""
        if isinstance(row, dict) and not error:
            rows.append(row)
            good_end = offset
            continue
        last_row = not any(rest.strip() for rest in lines[i + 1 :])
        if not last_row:
            if repair and not rows:  # a foreign file, rather than a damaged one of ours
                _check_own_file(path, rows, line)
            raise DataFormatError(
                f"{path}:{i + 1}: malformed JSONL row ({error}); fix or delete that line, "
                "or write to a new file."
            )
        break
    if repair:
        _check_own_file(path, rows, data[good_end:])
    if repair and good_end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return rows


_OWN_ROW_START = b'{"key": '


def _check_own_file(path: Path, rows: list[dict[str, Any]], tail: bytes) -> None:
    """Refuse to append to (or cut) a file steerlab did not write. Every row steerlab writes
    is a JSON object whose first field is ``key``, so a crash can only leave a cut-off
    line that starts the same way."""
    foreign = next((i for i, r in enumerate(rows) if "key" not in r), None)
    tail = tail.strip()
    if foreign is not None or (tail and not tail.startswith(_OWN_ROW_START)):
        raise ConfigError(
            f"{path} exists but is not a results file written by steerlab (its rows lack the "
            "'key' field steerlab writes first); steerlab will not append to or cut it. "
            "Pass another output path."
        )


def append_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows (one JSON object a line), then flush and fsync."""
    with open(path, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, allow_nan=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


__all__ = ["append_jsonl", "read_jsonl"]
