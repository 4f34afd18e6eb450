"""Shared row checks for the loaders: locations, field access and the skip policy.

Loaders raise :class:`SkippableRowError` for problems a caller may choose to skip
(``skip={"empty", "multi-choice", "duplicate"}``); :class:`RowCollector` either records
them as :class:`~steerlab.data.pairs.Skip` or re-raises. Everything else is a
:class:`DataFormatError` naming the file and the 1-based line.
"""

from collections.abc import Iterable
from pathlib import Path

from steerlab.data.pairs import Skip
from steerlab.errors import DataFormatError

#: kind -> what happens when the kind is not in ``skip``.
SKIP_KINDS: dict[str, str] = {
    "empty": "a row with an empty field raises DataFormatError",
    "multi-choice": "an A/B item without exactly two choices raises DataFormatError",
    "duplicate": "an exact duplicate of an earlier row is kept",
}


class SkippableRowError(DataFormatError):
    """A row problem the caller may ask to skip (see ``SKIP_KINDS``)."""

    def __init__(self, kind: str, where: str, detail: str) -> None:
        self.kind = kind
        self.where = where
        self.detail = detail
        super().__init__(
            f"{where}: {detail}. Fix the row, or pass skip={{{kind!r}}} to skip such rows "
            "(they are counted in the dataset's .skipped)."
        )


def where(path: Path | str, line: int, item: int | None = None) -> str:
    """``'path:line'`` (plus ``' (item i)'`` for JSON lists, 0-based i)."""
    return f"{path}:{line}" + (f" (item {item})" if item is not None else "")


def read_utf8(path: Path) -> str:
    """The text of a UTF-8 file (an optional BOM is dropped). Bytes that are not UTF-8 raise
    :class:`DataFormatError` naming ``path:line:column`` and how to convert the file."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        bad = data[e.start : e.start + 4]
        raise DataFormatError(
            f"{path}:{line}:{col}: the file is not valid UTF-8 (byte(s) {bad!r}); steerlab reads "
            "data files as UTF-8. Re-save it as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path} > fixed.csv`."
        ) from None


def check_skip(skip: Iterable[str]) -> frozenset[str]:
    kinds = frozenset([skip] if isinstance(skip, str) else skip)
    bad = sorted(kinds - SKIP_KINDS.keys())
    if bad:
        raise DataFormatError(f"Unknown skip kind(s) {bad}; valid kinds: {', '.join(SKIP_KINDS)}.")
    return kinds


def get_text(row: dict[str, object], key: str, at: str, *, allow_empty: bool = False) -> str:
    """The string value of ``key``: missing, non-string -> DataFormatError;
    empty/blank -> SkippableRowError('empty') unless ``allow_empty``."""
    if key not in row:
        raise DataFormatError(
            f"{at}: missing key {key!r} (found keys: {', '.join(map(repr, row)) or 'none'})."
        )
    value = row[key]
    if not isinstance(value, str):
        raise DataFormatError(
            f"{at}: {key!r} must be a string, got {type(value).__name__} ({value!r:.60})."
        )
    if not allow_empty and not value.strip():
        raise SkippableRowError("empty", at, f"empty {key!r} field")
    return value


class RowCollector:
    """Applies the skip policy: ``handle(err, line)`` records a skip or re-raises."""

    def __init__(self, skip: Iterable[str]) -> None:
        self.skip = check_skip(skip)
        self.skipped: list[Skip] = []
        self._seen: dict[object, str] = {}

    def handle(self, err: SkippableRowError, line: int) -> None:
        if err.kind not in self.skip:
            raise err
        self.skipped.append(Skip(line, err.kind, err.detail, err.where))

    def check_duplicate(self, key: object, at: str) -> None:
        """Raise SkippableRowError('duplicate') if ``skip`` has 'duplicate' and ``key``
        was seen before; otherwise remember where it was first seen."""
        first = self._seen.get(key)
        if first is None:
            self._seen[key] = at
        elif "duplicate" in self.skip:
            raise SkippableRowError("duplicate", at, f"exact duplicate of {first}")
