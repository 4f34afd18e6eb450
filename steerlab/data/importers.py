"""``load_pairs_from``: a user's own CSV / TSV / JSON / JSONL file as pairs or A/B items.

Columns (CSV header names, or JSON keys) are mapped by argument::

    sl.load_pairs_from("mine.csv", question="prompt", matching="good", not_matching="bad")
    sl.load_pairs_from("mine.jsonl", question="q", choices=("a", "b"), matching="label")
    sl.load_pairs_from("mwe.jsonl", question="question", choices="embedded",
                       matching="answer_matching_behavior")

Without ``choices`` each row is a :class:`PreferencePair` (``matching`` / ``not_matching``
hold answer texts). With ``choices`` each row is an :class:`ABItem` and ``matching`` holds
a letter (``"A"``, ``"(B)"``, ``" (A)"``): ``choices=("col_a", "col_b")`` reads the two answer
texts from columns, ``choices="embedded"`` parses them out of the question text (every
Anthropic model-written-eval shape, see :mod:`steerlab.data.choices`).

Every error names ``file:line`` (the line a record starts on; plus the item index in JSON
lists) and, for a missing column, the argument that maps it. ``skip`` is the loaders'
policy (:data:`steerlab.data.SKIP_KINDS`): ``"empty"``, ``"multi-choice"`` (an embedded
block without exactly two choices), ``"duplicate"``; skipped rows are counted in
``.skipped`` / ``.skip_counts``.
"""

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from steerlab.data._rows import RowCollector, SkippableRowError, read_utf8, where
from steerlab.data.choices import parse_letter, split_choices
from steerlab.data.loaders_csv import iter_csv_records, read_csv_header
from steerlab.data.loaders_json import iter_json_array, iter_jsonl
from steerlab.data.pairs import ABDataset, ABItem, PairDataset, PreferencePair
from steerlab.errors import ConfigError, DataFormatError, DataNotFoundError

FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl"}


def _format_of(path: Path, fmt: str | None) -> str:
    valid = sorted(set(FORMATS.values()))
    if fmt is not None:
        if fmt not in valid:
            raise ConfigError(f"Unknown format {fmt!r}; valid formats: {', '.join(valid)}.")
        return fmt
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"Cannot tell the format of {str(path)!r} from its suffix {suffix!r}; pass "
            f"format= one of {', '.join(valid)}."
        )
    return FORMATS[suffix]


Roles = tuple[tuple[str, str], ...]  # (argument name, column name)


def _records(path: Path, fmt: str, needed: Roles) -> Iterator[tuple[int, str, Any]]:
    """``(line, where, row)`` per record; CSV headers are checked for the needed columns."""
    if fmt in ("csv", "tsv"):
        if fmt == "tsv":
            yield from _tsv_records(path, needed)
            return
        header = read_csv_header(path)
        _check_header(path, header, needed)
        for line, row in iter_csv_records(path, header):
            yield line, where(path, line), row
    elif fmt == "json":
        for line, index, value in iter_json_array(path):
            yield line, where(path, line, index), value
    else:
        for line, value in iter_jsonl(path):
            yield line, where(path, line), value


def _tsv_records(path: Path, needed: Roles) -> Iterator[tuple[int, str, Any]]:
    lines = read_utf8(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataFormatError(f"{path}:1: the file is empty; expected a header row.")
    header = tuple(h.strip("\r") for h in lines[0].split("\t"))
    _check_header(path, header, needed)
    for n, raw in enumerate(lines[1:], start=2):
        fields = raw.rstrip("\r").split("\t")
        if len(fields) != len(header):
            raise DataFormatError(
                f"{path}:{n}: expected {len(header)} tab-separated fields ({', '.join(header)}), "
                f"found {len(fields)}."
            )
        yield n, where(path, n), dict(zip(header, fields, strict=True))


def _check_header(path: Path, header: tuple[str, ...], needed: Roles) -> None:
    for role, column in needed:
        if column not in header:
            raise DataFormatError(
                f"{path}:1: no column {column!r} (mapped by {role}=); the header has "
                f"{', '.join(map(repr, header))}. Fix: pass {role}='<column name>'."
            )


def _value(row: Any, role: str, column: str, at: str) -> str:
    if not isinstance(row, dict):
        raise DataFormatError(
            f"{at}: expected an object with keys, found a {type(row).__name__} ({row!r:.60})."
        )
    if column not in row:
        found = ", ".join(map(repr, row)) or "none"
        raise DataFormatError(
            f"{at}: missing column {column!r} (mapped by {role}=); this record has {found}. "
            f"Fix: pass {role}='<column name>' or complete the record."
        )
    value = row[column]
    if not isinstance(value, str):
        raise DataFormatError(
            f"{at}: column {column!r} ({role}=) must hold text, got {type(value).__name__} "
            f"({value!r:.60})."
        )
    if not value.strip():
        raise SkippableRowError("empty", at, f"empty {column!r} field ({role}=)")
    return value


def _ab_item(
    row: Any,
    at: str,
    question: str,
    matching: str,
    not_matching: str | None,
    choices: "str | tuple[str, str]",
) -> ABItem:
    text = _value(row, "question", question, at)
    letter = parse_letter(_value(row, "matching", matching, at), at, f"column {matching!r}")
    if choices == "embedded":
        q, parsed = split_choices(text, at)
        if len(parsed) != 2:
            letters = ", ".join(x for x, _ in parsed)
            raise SkippableRowError(
                "multi-choice", at, f"found {len(parsed)} choices ({letters}); an A/B item "
                "needs exactly two"
            )  # fmt: skip
        texts = (parsed[0][1], parsed[1][1])
    else:
        q = text
        texts = (_value(row, "choices", choices[0], at), _value(row, "choices", choices[1], at))
    if letter not in ("A", "B"):
        raise DataFormatError(f"{at}: matching letter is ({letter}); an A/B item needs A or B.")
    if not_matching is not None:
        other = parse_letter(
            _value(row, "not_matching", not_matching, at), at, f"column {not_matching!r}"
        )
        if {letter, other} != {"A", "B"}:
            raise DataFormatError(
                f"{at}: answers are ({letter}) matching / ({other}) not matching; they must be "
                "one each of (A) and (B)."
            )
    return ABItem(q, texts, letter)  # type: ignore[arg-type]


def load_pairs_from(
    path: "str | Path",
    *,
    question: str = "question",
    matching: str = "matching",
    not_matching: str | None = "not_matching",
    choices: "str | Sequence[str] | None" = None,
    format: str | None = None,
    name: str | None = None,
    split: str = "",
    skip: Iterable[str] = (),
) -> "PairDataset | ABDataset":
    """Load pairs (or, with ``choices=``, A/B items) from a CSV/TSV/JSON/JSONL file.

    Args:
        question, matching, not_matching: the columns (keys) holding each field. For A/B
            items ``matching`` holds the matching letter; ``not_matching`` is optional there
            (pass ``None``) and, when given, must hold the other letter.
        choices: ``None`` (pairs), ``("col_a", "col_b")`` or ``"embedded"`` (A/B items).
        format: ``csv``, ``tsv``, ``json`` (a list of objects) or ``jsonl``; default from
            the suffix.
        name: dataset name (default: the file stem). ``split``: recorded on the dataset.
        skip: kinds of rows to skip and count instead of raising (see module doc).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Data file {str(path)!r} does not exist; check the path.")
    fmt = _format_of(path, format)
    if choices is not None and choices != "embedded":
        if isinstance(choices, str) or len(choices) != 2:
            raise ConfigError(
                f"choices={choices!r}: pass None (pairs), 'embedded' (choices inside the "
                "question) or the two column names ('col_a', 'col_b')."
            )
        choices = (choices[0], choices[1])
    if choices is None and not_matching is None:
        raise ConfigError("Pairs need a not_matching= column (or pass choices= for A/B items).")
    needed: Roles = (("question", question), ("matching", matching))
    if not_matching is not None:
        needed += (("not_matching", not_matching),)
    if isinstance(choices, tuple):
        needed += (("choices", choices[0]), ("choices", choices[1]))
    collector = RowCollector(skip)
    out: list[Any] = []
    for line, at, row in _records(path, fmt, needed):
        try:
            if choices is None and not_matching is not None:
                values = (
                    _value(row, "question", question, at),
                    _value(row, "matching", matching, at),
                    _value(row, "not_matching", not_matching, at),
                )
                collector.check_duplicate(values, at)
                out.append(PreferencePair(*values))
            elif choices is not None:
                item = _ab_item(row, at, question, matching, not_matching, choices)
                collector.check_duplicate((item.question, item.choices, item.matching), at)
                out.append(item)
        except SkippableRowError as err:
            collector.handle(err, line)
    ds_name = name or path.stem
    skipped = tuple(collector.skipped)
    if choices is None:
        return PairDataset(tuple(out), ds_name, str(path), split, skipped)
    return ABDataset(tuple(out), ds_name, str(path), split, skipped)
