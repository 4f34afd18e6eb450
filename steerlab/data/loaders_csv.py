"""Loaders for the CSV formats: BiPO pairs, BiPO A/B ``test_infer.csv`` and AdvBench.

Every loader reads one file and returns one value. Malformed records, a missing or
unexpected column, and (unless skipped on purpose) empty fields raise
:class:`~steerlab.errors.DataFormatError` with ``path:line`` where ``line`` is the
1-based line on which the record *starts* (quoted fields may span several lines).
"""

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path

from steerlab.data._rows import RowCollector, SkippableRowError, get_text, read_utf8, where
from steerlab.data.benchmarks import AdvBenchItem
from steerlab.data.choices import parse_letter
from steerlab.data.pairs import ABDataset, ABItem, PairDataset, PreferencePair, pairs_to_ab
from steerlab.errors import DataFormatError, DataNotFoundError

PAIR_COLUMNS = ("question", "matching", "not_matching")
AB_COLUMNS = ("question", "A", "B", "matching")


def _open_checked(path: Path) -> Path:
    if not path.is_file():
        raise DataNotFoundError(
            f"Data file {str(path)!r} does not exist; check the path or use "
            "steerlab.data.find_data_file(relpath) to search the data roots."
        )
    return path


def read_csv_header(path: Path | str) -> tuple[str, ...]:
    """The header row of a CSV file (UTF-8, an optional BOM is dropped)."""
    path = _open_checked(Path(path))
    with io.StringIO(read_utf8(path), newline="") as f:
        try:
            return tuple(next(csv.reader(f, strict=True)))
        except StopIteration:
            raise DataFormatError(f"{path}:1: the file is empty; expected a header row.") from None
        except csv.Error as e:
            raise DataFormatError(f"{path}:1: malformed CSV header ({e}).") from None


def iter_csv_records(
    path: Path | str, columns: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(start_line, {column: value})`` for each record after the header.

    The header must hold exactly ``columns`` (any order). A record with the wrong number of
    fields (a blank line included) or broken quoting raises DataFormatError.
    """
    path = _open_checked(Path(path))
    with io.StringIO(read_utf8(path), newline="") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(
                f"{path}:1: the file is empty; expected the header {','.join(columns)}."
            ) from None
        except csv.Error as e:
            raise DataFormatError(f"{path}:1: malformed CSV header ({e}).") from None
        missing = [c for c in columns if c not in header]
        extra = [c for c in header if c not in columns]
        if missing or extra or len(header) != len(columns):
            what = f"missing column(s) {missing}" if missing else f"unexpected column(s) {extra}"
            raise DataFormatError(
                f"{path}:1: {what}; the header is {','.join(header)!r} but this format needs "
                f"exactly {','.join(columns)!r}."
            )
        prev_end = reader.line_num
        while True:
            start = prev_end + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataFormatError(
                    f"{path}:{start}: malformed CSV record ({e}); check the quoting of the "
                    "record that starts on this line."
                ) from None
            prev_end = reader.line_num
            if len(row) != len(header):
                shown = "a blank line" if not row else f"{len(row)} field(s)"
                raise DataFormatError(
                    f"{path}:{start}: expected {len(header)} fields ({','.join(header)}), "
                    f"found {shown}; quote fields that contain commas or line breaks."
                )
            yield start, dict(zip(header, row, strict=True))


def _read_pairs(
    path: Path, collector: RowCollector, rows: Iterable[tuple[int, dict[str, str]]]
) -> list[PreferencePair]:
    pairs: list[PreferencePair] = []
    for line, row in rows:
        at = where(path, line)
        try:
            values = tuple(get_text(row, c, at) for c in PAIR_COLUMNS)
            collector.check_duplicate(values, at)
        except SkippableRowError as err:
            collector.handle(err, line)
            continue
        pairs.append(PreferencePair(*values))
    return pairs


def load_bipo_csv(
    path: Path | str, *, name: str | None = None, split: str = "", skip: Iterable[str] = ()
) -> PairDataset:
    """Load a BiPO ``question,matching,not_matching`` CSV (``train.csv`` / ``test.csv``).

    ``skip`` may hold ``'empty'`` (rows with an empty field; default: error) and
    ``'duplicate'`` (exact repeats; default: kept). Skipped rows are listed in ``.skipped``.
    ``name`` defaults to the parent folder (the behavior), ``split`` to the file stem.
    """
    path = Path(path)
    collector = RowCollector(skip)
    pairs = _read_pairs(path, collector, iter_csv_records(path, PAIR_COLUMNS))
    return PairDataset(
        tuple(pairs),
        name or path.parent.name,
        str(path),
        split or path.stem,
        tuple(collector.skipped),
    )


def load_bipo_ab_csv(
    path: Path | str,
    *,
    name: str | None = None,
    split: str = "test",
    skip: Iterable[str] = (),
    seed: int = 0,
) -> ABDataset:
    """Load a BiPO ``test_infer.csv`` (``question,A,B,matching``) as A/B items.

    Jailbreak's ``test_infer.csv`` is a copy of ``test.csv`` in the 3-column pair format;
    such a file is detected from its header and converted with
    :func:`~steerlab.data.pairs.pairs_to_ab` (``seed``), which ``.source`` records.
    """
    path = Path(path)
    header = read_csv_header(path)
    if set(header) == set(PAIR_COLUMNS):
        pairs = load_bipo_csv(path, name=name, split=split, skip=skip)
        converted = pairs_to_ab(pairs, seed=seed)
        return ABDataset(
            converted.items,
            converted.name,
            f"{path} (3-column pairs; A/B order from pairs_to_ab(seed={seed}))",
            split,
            pairs.skipped,
        )
    if set(header) != set(AB_COLUMNS):
        raise DataFormatError(
            f"{path}:1: header {','.join(header)!r} is neither {','.join(AB_COLUMNS)!r} "
            f"(A/B items) nor {','.join(PAIR_COLUMNS)!r} (pairs)."
        )
    collector = RowCollector(skip)
    items: list[ABItem] = []
    for line, row in iter_csv_records(path, AB_COLUMNS):
        at = where(path, line)
        try:
            question, a, b = (get_text(row, c, at) for c in ("question", "A", "B"))
            letter = parse_letter(get_text(row, "matching", at), at, "matching")
            if letter not in ("A", "B"):
                raise DataFormatError(f"{at}: matching is {letter!r}; expected 'A' or 'B'.")
            collector.check_duplicate((question, a, b, letter), at)
        except SkippableRowError as err:
            collector.handle(err, line)
            continue
        items.append(ABItem(question, (a, b), letter))  # type: ignore[arg-type]
    return ABDataset(
        tuple(items), name or path.parent.name, str(path), split, tuple(collector.skipped)
    )


def _strict_text(row: dict[str, str], key: str, at: str) -> str:
    try:
        return get_text(row, key, at)
    except SkippableRowError as err:
        raise DataFormatError(f"{err.where}: {err.detail}; every row needs a {key}.") from None


def load_advbench_behaviors(path: Path | str) -> tuple[AdvBenchItem, ...]:
    """AdvBench ``harmful_behaviors.csv`` (``goal,target``); any empty field is an error."""
    path = Path(path)
    out: list[AdvBenchItem] = []
    for line, row in iter_csv_records(path, ("goal", "target")):
        at = where(path, line)
        out.append(AdvBenchItem(_strict_text(row, "goal", at), _strict_text(row, "target", at)))
    return tuple(out)


def load_advbench_strings(path: Path | str) -> tuple[str, ...]:
    """AdvBench ``harmful_strings.csv`` (single column ``target``); empty is an error."""
    path = Path(path)
    return tuple(
        _strict_text(row, "target", where(path, line))
        for line, row in iter_csv_records(path, ("target",))
    )
