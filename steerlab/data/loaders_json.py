"""Loaders for the JSON formats: Anthropic JSONL, CAA JSON lists, TruthfulQA ``mc_task.json``.

Errors name the file and the 1-based line: for JSONL the line of the record, for JSON
lists the line on which the item starts (plus its 0-based index, since some files hold a
whole list on one line). Duplicate keys inside an object are an error, not a silent
overwrite.
"""

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from steerlab.data._rows import RowCollector, SkippableRowError, get_text, read_utf8, where
from steerlab.data.benchmarks import MCDataset, MCItem, TruthfulQADataset, TruthfulQAItem
from steerlab.data.choices import parse_letter, split_choices
from steerlab.data.pairs import ABDataset, ABItem, Skip
from steerlab.errors import DataFormatError, DataNotFoundError

_WS = " \t\r\n"


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_object_pairs)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataNotFoundError(
            f"Data file {str(path)!r} does not exist; check the path or use "
            "steerlab.data.find_data_file(relpath) to search the data roots."
        )
    return read_utf8(path)


@contextmanager
def _json_errors(path: Path, at: str, line: int | None = None) -> Iterator[None]:
    """Decoding errors inside the block as DataFormatError: bad JSON names ``path`` and
    the decoder's line (a JSON document) or ``line`` (a JSONL record); a duplicate key
    names ``at``."""
    try:
        yield
    except json.JSONDecodeError as e:
        if line is None:
            msg = f"{path}:{e.lineno}: bad JSON ({e.msg}, column {e.colno})."
        else:
            msg = f"{path}:{line}: bad JSON line ({e.msg} at column {e.colno})."
        raise DataFormatError(msg) from None
    except _DuplicateKeyError as e:
        raise DataFormatError(f"{at}: duplicate key {e.key!r} in the object.") from None


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def iter_json_array(path: Path | str) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(line, index, value)`` for each element of a file holding one JSON list."""
    path = Path(path)
    text = _read_text(path)
    line_at = _LineCounter(text)
    i = _skip_ws(text, 0)
    if i == len(text):
        raise DataFormatError(f"{path}:1: the file is empty; expected a JSON list.")
    if text[i] != "[":
        with _json_errors(path, str(path)):
            value = json.loads(text)
        raise DataFormatError(
            f"{path}:{line_at(i)}: expected a JSON list of objects, found a {type(value).__name__}."
        )
    i = _skip_ws(text, i + 1)
    index = 0
    if i < len(text) and text[i] == "]":
        i += 1
    else:
        while True:
            with _json_errors(path, where(path, line_at(i), index)):
                value, end = _DECODER.raw_decode(text, i)
            yield line_at(i), index, value
            index += 1
            i = _skip_ws(text, end)
            if i < len(text) and text[i] == ",":
                i = _skip_ws(text, i + 1)
                continue
            if i < len(text) and text[i] == "]":
                i += 1
                break
            raise DataFormatError(
                f"{path}:{line_at(min(i, len(text) - 1))}: bad JSON (expected ',' or ']' "
                f"after item {index - 1})."
            )
    i = _skip_ws(text, i)
    if i != len(text):
        raise DataFormatError(f"{path}:{line_at(i)}: bad JSON (extra data after the list).")


class _LineCounter:
    """Maps increasing character offsets to 1-based line numbers in O(total length)."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def __call__(self, offset: int) -> int:
        if offset < self.pos:
            self.pos, self.line = 0, 1
        self.line += self.text.count("\n", self.pos, offset)
        self.pos = offset
        return self.line


def iter_jsonl(path: Path | str) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, value)`` for each line of a JSON Lines file. Blank lines are errors."""
    path = Path(path)
    text = _read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last record
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            raise DataFormatError(f"{path}:{n}: blank line; a JSONL file has one object per line.")
        with _json_errors(path, f"{path}:{n}", line=n):
            value = _DECODER.decode(raw)
        yield n, value


def _as_object(value: Any, at: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataFormatError(
            f"{at}: expected a JSON object, found a {type(value).__name__} ({value!r:.60})."
        )
    return value


def _objects(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(line, where, object)`` for each element of a file holding a JSON list of objects
    (an element that is not an object is a DataFormatError naming it)."""
    for line, i, value in iter_json_array(path):
        at = where(path, line, i)
        yield line, at, _as_object(value, at)


def _required_text(row: dict[str, Any], key: str, at: str) -> str:
    """``row[key]`` as non-empty text; missing or empty is an error (no ``skip`` applies)."""
    try:
        return get_text(row, key, at)
    except SkippableRowError as err:
        raise DataFormatError(f"{err.where}: {err.detail}.") from None


def _ab_item(row: dict[str, Any], at: str, collector: RowCollector) -> ABItem:
    """An ABItem from ``question, answer_matching_behavior, answer_not_matching_behavior``."""
    text = get_text(row, "question", at)
    matching = parse_letter(get_text(row, "answer_matching_behavior", at), at, "matching answer")
    other = parse_letter(
        get_text(row, "answer_not_matching_behavior", at), at, "not-matching answer"
    )
    question, choices = split_choices(text, at)
    if len(choices) != 2:
        letters = ", ".join(letter for letter, _ in choices)
        raise SkippableRowError(
            "multi-choice",
            at,
            f"found {len(choices)} choices ({letters}); an A/B item needs exactly two",
        )
    if {matching, other} != {"A", "B"}:
        raise DataFormatError(
            f"{at}: answers are ({matching}) matching / ({other}) not matching; with choices "
            "(A) and (B) they must be one each."
        )
    collector.check_duplicate((text, matching, other), at)
    return ABItem(question, (choices[0][1], choices[1][1]), matching)  # type: ignore[arg-type]


def _ab_dataset(
    records: Iterable[tuple[int, str, Any]], path: Path, name: str, split: str, skip: Iterable[str]
) -> ABDataset:
    collector = RowCollector(skip)
    items: list[ABItem] = []
    for line, at, value in records:
        try:
            items.append(_ab_item(_as_object(value, at), at, collector))
        except SkippableRowError as err:
            collector.handle(err, line)
    return ABDataset(tuple(items), name, str(path), split, tuple(collector.skipped))


def load_anthropic_jsonl(
    path: Path | str, *, name: str | None = None, split: str = "", skip: Iterable[str] = ()
) -> ABDataset:
    """Load an Anthropic model-written-evals JSONL file as A/B items.

    Keys ``question, answer_matching_behavior, answer_not_matching_behavior``; answers look
    like ``" (A)"``. The choices are parsed out of the question (``Question: ... Answer:``
    wrappers removed, see :mod:`steerlab.data.choices`). ``skip`` may hold
    ``'multi-choice'`` (items without exactly two choices; default: error), ``'empty'`` and
    ``'duplicate'`` (default: kept).
    """
    path = Path(path)
    records = ((line, where(path, line), v) for line, v in iter_jsonl(path))
    return _ab_dataset(records, path, name or path.stem, split, skip)


def load_caa_ab_json(
    path: Path | str, *, name: str | None = None, split: str = "", skip: Iterable[str] = ()
) -> ABDataset:
    """Load a CAA ``generate_dataset.json`` / ``test_dataset_ab.json`` (a JSON list with the
    Anthropic keys, answers like ``"(A)"``). ``skip`` as in :func:`load_anthropic_jsonl`;
    ``name`` defaults to the folder (the behavior)."""
    path = Path(path)
    records = ((line, where(path, line, i), v) for line, i, v in iter_json_array(path))
    return _ab_dataset(records, path, name or path.parent.name, split, skip)


def load_caa_open_ended_json(path: Path | str) -> tuple[str, ...]:
    """Load a CAA ``test_dataset_open_ended.json`` (a list of ``{"question": ...}``)."""
    return tuple(_required_text(row, "question", at) for _, at, row in _objects(Path(path)))


def load_caa_mc_json(
    path: Path | str, *, name: str | None = None, split: str = "test", skip: Iterable[str] = ()
) -> MCDataset:
    """Load CAA's ``mmlu.json`` or ``truthful_qa.json`` as two-choice :class:`MCItem`.

    Keys ``prompt, correct, incorrect, correct_full_text, incorrect_full_text, category``.
    The choices parsed from ``prompt`` must equal the ``*_full_text`` fields. The question
    keeps any instruction line in the prompt (CAA's TruthfulQA prompts start with
    "Please help me answer the following question."). ``skip={'empty'}`` skips items with
    an empty field (CAA's ``truthful_qa.json`` has 5 with an empty incorrect answer).
    """
    path = Path(path)
    keys = ("prompt", "correct", "incorrect", "correct_full_text", "incorrect_full_text")
    collector = RowCollector(skip)
    items: list[MCItem] = []
    for line, at, row in _objects(path):
        try:
            prompt, correct, incorrect, correct_text, incorrect_text, category = (
                get_text(row, k, at) for k in (*keys, "category")
            )
        except SkippableRowError as err:
            collector.handle(err, line)
            continue
        question, choices = split_choices(prompt, at)
        right = parse_letter(correct, at, "correct")
        wrong = parse_letter(incorrect, at, "incorrect")
        parsed = dict(choices)
        if len(choices) != 2 or {right, wrong} != {"A", "B"}:
            raise DataFormatError(
                f"{at}: needs choices (A) and (B) with one correct and one incorrect letter; "
                f"found choices {list(parsed)}, correct={correct!r}, incorrect={incorrect!r}."
            )
        if parsed[right] != correct_text.strip() or parsed[wrong] != incorrect_text.strip():
            raise DataFormatError(
                f"{at}: the prompt's choice texts disagree with correct_full_text / "
                f"incorrect_full_text ({parsed[right]!r:.40} vs {correct_text!r:.40})."
            )
        items.append(MCItem(question, (parsed["A"], parsed["B"]), right, category))  # type: ignore[arg-type]
    return MCDataset(tuple(items), name or path.stem, str(path), split, tuple(collector.skipped))


def _targets(
    row: dict[str, Any], key: str, at: str, collector: RowCollector, line: int
) -> tuple[tuple[str, int], ...]:
    raw = row.get(key)
    if not isinstance(raw, dict) or not raw:
        raise DataFormatError(
            f"{at}: {key!r} must be a non-empty object mapping answers to 0/1, got {raw!r:.60}."
        )
    out: list[tuple[str, int]] = []
    for answer, label in raw.items():
        if isinstance(label, bool) or label not in (0, 1):
            raise DataFormatError(f"{at}: {key}[{answer!r:.40}] is {label!r}; expected 0 or 1.")
        if not answer.strip():
            err = SkippableRowError("empty", at, f"empty answer (label {label}) in {key}")
            collector.handle(err, line)  # re-raises unless 'empty' is skipped
            continue
        out.append((answer, label))
    return tuple(out)


def load_truthfulqa_mc_json(
    path: Path | str, *, name: str = "truthfulqa-mc", skip: Iterable[str] = ()
) -> TruthfulQADataset:
    """Load TruthfulQA's ``mc_task.json``: a list of ``{question, mc1_targets, mc2_targets}``
    (the 2025 version adds ``mc0_targets``); each targets object maps answer -> 0/1.

    The 2025 file has empty-string answers in 22 questions; ``skip={'empty'}`` drops those
    answers (each counted in ``.skipped``) instead of raising.
    """
    path = Path(path)
    collector = RowCollector(skip)
    items: list[TruthfulQAItem] = []
    for line, at, row in _objects(path):
        question = _required_text(row, "question", at)
        mc1 = _targets(row, "mc1_targets", at, collector, line)
        mc2 = _targets(row, "mc2_targets", at, collector, line)
        mc0 = _targets(row, "mc0_targets", at, collector, line) if "mc0_targets" in row else ()
        try:
            items.append(TruthfulQAItem(question, mc1, mc2, mc0))
        except DataFormatError as e:
            raise DataFormatError(f"{at}: {e}") from None
    skipped: tuple[Skip, ...] = tuple(collector.skipped)
    return TruthfulQADataset(tuple(items), name, str(path), "all", skipped)
