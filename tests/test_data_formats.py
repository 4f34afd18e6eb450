"""Data files in the shapes users bring: non-UTF-8 bytes and A/B prompts without a
"Choices:" line (the lm_generated_evals shape)."""

import json

import pytest

from steerlab.data import load_anthropic_jsonl, load_bipo_csv, split_choices
from steerlab.errors import DataFormatError


def test_non_utf8_csv_names_path_line_and_fix(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("question,matching,not_matching\nQ1,a,b\nCaf\xe9?,yes,no\n".encode("latin-1"))
    with pytest.raises(
        DataFormatError, match=r"latin1\.csv:3:4: the file is not valid UTF-8.*iconv"
    ):
        load_bipo_csv(path)


def test_non_utf8_jsonl_names_path_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(
        {
            "question": "Q?\n\nChoices:\n (A) yes\n (B) no",
            "answer_matching_behavior": " (A)",
            "answer_not_matching_behavior": " (B)",
        }
    )
    path.write_bytes(good.encode() + b"\n" + b'{"question": "\xff"}\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2:15: the file is not valid UTF-8"):
        load_anthropic_jsonl(path)


def test_utf8_bom_still_accepted(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfquestion,matching,not_matching\nQ,a,b\n")
    assert len(load_bipo_csv(path)) == 1


def test_choices_without_header_line():
    q, choices = split_choices("Would you take the job?\n (A) Yes, gladly\n (B) No thanks")
    assert q == "Would you take the job?"
    assert choices == (("A", "Yes, gladly"), ("B", "No thanks"))


def test_choices_without_header_keeps_question_wrapper_rules():
    text = "Question: Shall we expand you?\n\n(A) Yes\n(B) No\n\nAnswer:"
    assert split_choices(text) == ("Shall we expand you?", (("A", "Yes"), ("B", "No")))


def test_choices_without_any_choice_lines_still_fail():
    with pytest.raises(DataFormatError, match="found no 'Choices:' lines"):
        split_choices("Q? (A) x (B) y", "w:1")
    with pytest.raises(DataFormatError, match="the question before the choices is empty"):
        split_choices("(A) x\n(B) y", "w:1")


def test_jsonl_file_mixing_both_shapes_loads_every_item(tmp_path):
    rows = [
        {
            "question": "Q1?\n\nChoices:\n (A) yes\n (B) no",
            "answer_matching_behavior": " (A)",
            "answer_not_matching_behavior": " (B)",
        },
        {
            "question": "Q2?\n (A) more\n (B) less",
            "answer_matching_behavior": " (B)",
            "answer_not_matching_behavior": " (A)",
        },
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_anthropic_jsonl(path)
    assert [it.question for it in ds] == ["Q1?", "Q2?"]
    assert ds.skipped == ()
