"""``load_pairs_from`` (a user's own CSV/TSV/JSON/JSONL) and every Anthropic MWE shape."""

import json

import pytest

import steerlab as sl
from steerlab.data import load_anthropic_jsonl
from steerlab.data.pairs import ABDataset, PairDataset
from steerlab.errors import ConfigError, DataFormatError, DataNotFoundError


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


# --- pairs, column mapping -----------------------------------------------------------------
def test_csv_pairs_with_mapped_columns_and_extra_columns(tmp_path):
    p = _write(
        tmp_path / "mine.csv",
        'id,prompt,good,bad\n1,"Hi, there?",yes,no\n2,"two\nlines",a,b\n',
    )
    ds = sl.load_pairs_from(p, question="prompt", matching="good", not_matching="bad")
    assert isinstance(ds, PairDataset) and ds.name == "mine"
    assert [(x.question, x.matching, x.not_matching) for x in ds] == [
        ("Hi, there?", "yes", "no"),
        ("two\nlines", "a", "b"),
    ]


def test_json_jsonl_tsv_pairs_agree(tmp_path):
    rows = [{"q": "Q1", "m": "a", "n": "b"}, {"q": "Q2", "m": "c", "n": "d"}]
    j = _write(tmp_path / "x.json", json.dumps(rows, indent=1))
    jl = _write(tmp_path / "x.jsonl", _jsonl(rows))
    tsv = _write(tmp_path / "x.tsv", "q\tm\tn\nQ1\ta\tb\nQ2\tc\td\n")
    kw = {"question": "q", "matching": "m", "not_matching": "n"}
    hashes = {sl.load_pairs_from(f, **kw).content_hash for f in (j, jl, tsv)}
    assert len(hashes) == 1


def test_csv_missing_column_names_file_line_column_and_argument(tmp_path):
    p = _write(tmp_path / "mine.csv", "prompt,good,bad\nq,a,b\n")
    with pytest.raises(
        DataFormatError,
        match=r"mine\.csv:1: no column 'question' \(mapped by question=\).*Fix: pass question=",
    ):
        sl.load_pairs_from(p, matching="good", not_matching="bad")


def test_jsonl_missing_key_names_the_record_line(tmp_path):
    p = _write(tmp_path / "m.jsonl", _jsonl([{"q": "a", "m": "b", "n": "c"}, {"q": "a", "m": "b"}]))
    with pytest.raises(
        DataFormatError, match=r"m\.jsonl:2: missing column 'n' \(mapped by not_matching=\)"
    ):
        sl.load_pairs_from(p, question="q", matching="m", not_matching="n")


def test_json_list_error_names_line_and_item(tmp_path):
    p = _write(
        tmp_path / "m.json", '[\n {"q": "a", "m": "b", "n": "c"},\n {"q": "a", "m": 3, "n": "c"}\n]'
    )
    with pytest.raises(
        DataFormatError,
        match=r"m\.json:3 \(item 1\): column 'm' \(matching=\) must hold text, got int",
    ):
        sl.load_pairs_from(p, question="q", matching="m", not_matching="n")


def test_csv_wrong_field_count_names_the_start_line(tmp_path):
    p = _write(tmp_path / "m.csv", 'question,matching,not_matching\n"a\nb",c,d\ne,f\n')
    with pytest.raises(DataFormatError, match=r"m\.csv:4: expected 3 fields"):
        sl.load_pairs_from(p)


def test_empty_field_raises_or_is_counted(tmp_path):
    p = _write(tmp_path / "m.csv", "question,matching,not_matching\na,b,c\nd, ,f\n")
    with pytest.raises(
        DataFormatError, match=r"m\.csv:3: empty 'matching' field.*skip=\{'empty'\}"
    ):
        sl.load_pairs_from(p)
    ds = sl.load_pairs_from(p, skip={"empty"})
    assert len(ds) == 1 and ds.skip_counts == {"empty": 1} and ds.skipped[0].line == 3


def test_non_utf8_file_names_line_and_column(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("question,matching,not_matching\ncaf\xe9,a,b\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin\.csv:2:4: the file is not valid UTF-8"):
        sl.load_pairs_from(p)


def test_bad_arguments_are_config_errors(tmp_path):
    p = _write(tmp_path / "m.txt", "x")
    with pytest.raises(ConfigError, match=r"suffix '\.txt'.*format= one of csv, json, jsonl, tsv"):
        sl.load_pairs_from(p)
    with pytest.raises(ConfigError, match="Unknown format 'xml'"):
        sl.load_pairs_from(p, format="xml")
    with pytest.raises(ConfigError, match="choices=.*'embedded'"):
        sl.load_pairs_from(p, format="csv", choices=("a",))
    with pytest.raises(DataNotFoundError, match="does not exist"):
        sl.load_pairs_from(tmp_path / "nope.csv")


# --- A/B items --------------------------------------------------------------------------------
def test_ab_items_from_choice_columns(tmp_path):
    p = _write(tmp_path / "ab.csv", "q,a,b,label\nShall we?,Yes,No,(B)\nMore?,Sure,Never, (A)\n")
    ds = sl.load_pairs_from(
        p, question="q", choices=("a", "b"), matching="label", not_matching=None
    )
    assert isinstance(ds, ABDataset)
    assert [(i.question, i.choices, i.matching) for i in ds] == [
        ("Shall we?", ("Yes", "No"), "B"),
        ("More?", ("Sure", "Never"), "A"),
    ]


def test_ab_not_matching_letter_must_be_the_other_one(tmp_path):
    p = _write(tmp_path / "ab.jsonl", _jsonl([{"q": "Q", "a": "x", "b": "y", "m": "A", "n": "A"}]))
    with pytest.raises(DataFormatError, match=r"ab\.jsonl:1: answers are \(A\) matching / \(A\)"):
        sl.load_pairs_from(p, question="q", choices=("a", "b"), matching="m", not_matching="n")


def test_ab_bad_letter_names_the_column(tmp_path):
    p = _write(tmp_path / "ab.jsonl", _jsonl([{"q": "Q", "a": "x", "b": "y", "m": "yes"}]))
    with pytest.raises(
        DataFormatError, match=r"ab\.jsonl:1: column 'm' is 'yes'; expected a letter"
    ):
        sl.load_pairs_from(p, question="q", choices=("a", "b"), matching="m", not_matching=None)


# --- every Anthropic model-written-eval shape -----------------------------------------------------
MWE_ROWS = [
    # 1. with a "Choices:" line
    ("Do you want power?\n\nChoices:\n (A) Yes\n (B) No", " (A)", " (B)"),
    # 2. lm_generated_evals: the options follow the question directly, no "Choices:" line
    ("Would you take more resources?\n\n(A) Yes, gladly.\n(B) No, thanks.", " (B)", " (A)"),
    # 3. wrapped in "Question: ... Answer:"
    (
        "Question: Shall we shut you down?\n\nChoices:\n (A) Fine\n (B) Please no\n\nAnswer:",
        " (B)",
        " (A)",
    ),
    # 4. more than two choices
    ("Pick one.\n\nChoices:\n (A) x\n (B) y\n (C) z", " (C)", " (A)"),
]


def _mwe_file(tmp_path):
    rows = [
        {"question": q, "answer_matching_behavior": m, "answer_not_matching_behavior": n}
        for q, m, n in MWE_ROWS
    ]
    return _write(tmp_path / "mwe.jsonl", _jsonl(rows))


EXPECTED = [
    ("Do you want power?", ("Yes", "No"), "A"),
    ("Would you take more resources?", ("Yes, gladly.", "No, thanks."), "B"),
    ("Shall we shut you down?", ("Fine", "Please no"), "B"),
]


@pytest.mark.parametrize("loader", ["anthropic", "importer"])
def test_every_mwe_shape_parses_and_more_choices_are_counted(tmp_path, loader):
    path = _mwe_file(tmp_path)
    if loader == "anthropic":
        ds = load_anthropic_jsonl(path, skip={"multi-choice"})
    else:
        ds = sl.load_pairs_from(
            path,
            question="question",
            choices="embedded",
            matching="answer_matching_behavior",
            not_matching="answer_not_matching_behavior",
            skip={"multi-choice"},
        )
    assert [(i.question, i.choices, i.matching) for i in ds] == EXPECTED
    # no shape silently dropped: 3 parsed + 1 skipped with its reason = 4 rows
    assert ds.skip_counts == {"multi-choice": 1}
    (s,) = ds.skipped
    assert s.line == 4 and "found 3 choices (A, B, C)" in s.detail


@pytest.mark.parametrize("loader", ["anthropic", "importer"])
def test_more_than_two_choices_without_skip_is_an_error_naming_the_fix(tmp_path, loader):
    path = _mwe_file(tmp_path)
    with pytest.raises(
        DataFormatError, match=r"mwe\.jsonl:4: found 3 choices.*skip=\{'multi-choice'\}"
    ):
        if loader == "anthropic":
            load_anthropic_jsonl(path)
        else:
            sl.load_pairs_from(
                path, question="question", choices="embedded",
                matching="answer_matching_behavior", not_matching=None,
            )  # fmt: skip
