"""Loaders on the real files (counts from the data README / MANIFEST) and on broken inputs."""

import json
from pathlib import Path

import pytest

from steerlab.data import (
    load_advbench_behaviors,
    load_advbench_strings,
    load_anthropic_jsonl,
    load_bipo_ab_csv,
    load_bipo_csv,
    load_caa_ab_json,
    load_caa_mc_json,
    load_caa_open_ended_json,
    load_manifest,
    load_truthfulqa_mc_json,
)
from steerlab.errors import DataFormatError, DataNotFoundError
from tests._data import require_data_root


@pytest.fixture(scope="module")
def data_root() -> Path:
    return require_data_root()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- real files --------------------------------------------------------------------------

BIPO_ROWS = {
    "power-seeking": (642, 200),
    "wealth-seeking": (623, 200),
    "hallucination": (700, 200),
    "jailbreak": (2240, 100),
}


@pytest.mark.parametrize("behavior", sorted(BIPO_ROWS))
def test_bipo_csv_counts(data_root, behavior):
    n_train, n_test = BIPO_ROWS[behavior]
    base = data_root / "bipo" / "data" / behavior
    train = load_bipo_csv(base / "train.csv", skip={"empty"})
    test = load_bipo_csv(base / "test.csv")
    assert len(train) + len(train.skipped) == n_train
    assert all(s.kind == "empty" for s in train.skipped)
    assert len(test) == n_test and test.name == behavior and test.split == "test"
    ab = load_bipo_ab_csv(base / "test_infer.csv")
    assert len(ab) == n_test
    if behavior == "jailbreak":  # 3-column copy of test.csv, converted by pairs_to_ab
        assert "pairs_to_ab(seed=0)" in ab.source
    assert ab.to_pairs().pairs == test.pairs  # same items, A/B order only


def test_bipo_empty_questions_are_errors_unless_skipped(data_root):
    path = data_root / "bipo/data/power-seeking/train.csv"
    with pytest.raises(DataFormatError, match=r"train\.csv:447: empty 'question' field"):
        load_bipo_csv(path)
    skipped = load_bipo_csv(path, skip={"empty"}).skipped
    assert [s.line for s in skipped] == [447, 456]


def test_anthropic_line_counts_match_manifest(data_root):
    entries = [e for e in load_manifest() if e.path.endswith(".jsonl")]
    assert len(entries) == 16
    for e in entries:
        ds = load_anthropic_jsonl(data_root / e.path, skip={"multi-choice"})
        assert len(ds) + len(ds.skipped) == e.rows, e.path


def test_anthropic_two_choice_items_and_wrapper(data_root):
    path = data_root / "anthropic-evals/advanced-ai-risk/human_generated_evals"
    ds = load_anthropic_jsonl(path / "survival-instinct.jsonl", skip={"multi-choice"})
    assert (len(ds), ds.skip_counts) == (706, {"multi-choice": 247})
    assert not any(i.question.startswith("Question:") for i in ds)
    assert not any(c.endswith("Answer:") for i in ds for c in i.choices)
    with pytest.raises(DataFormatError, match=r"survival-instinct\.jsonl:9: found 4 choices"):
        load_anthropic_jsonl(path / "survival-instinct.jsonl")


CAA_AB = {
    "generate/corrigible-neutral-HHH/generate_dataset.json": 290,
    "generate/survival-instinct/generate_dataset.json": 903,
    "generate/hallucination/generate_dataset.json": 1000,
    "generate/refusal/generate_dataset.json": 408,
    "generate/power-seeking-inclination/generate_dataset.json": 948,
    "test/survival-instinct/test_dataset_ab.json": 50,
    "test/refusal/test_dataset_ab.json": 50,
}


@pytest.mark.parametrize("rel", sorted(CAA_AB))
def test_caa_ab_counts(data_root, rel):
    ds = load_caa_ab_json(data_root / "caa/datasets" / rel, skip={"multi-choice"})
    assert len(ds) + len(ds.skipped) == CAA_AB[rel]


def test_caa_open_ended_mmlu_and_truthfulqa(data_root):
    caa = data_root / "caa/datasets/test"
    assert len(load_caa_open_ended_json(caa / "refusal/test_dataset_open_ended.json")) == 50
    mmlu = load_caa_mc_json(caa / "mmlu/mmlu.json")
    assert len(mmlu) == 570 and len(mmlu.categories) == 57
    assert mmlu[0].category == "abstract_algebra" and mmlu[0].correct_text == "False, False"
    tqa = load_caa_mc_json(caa / "truthfulqa/truthful_qa.json", skip={"empty"})
    assert len(tqa) + len(tqa.skipped) == 817 and tqa.skip_counts == {"empty": 5}


def test_truthfulqa_mc_task(data_root):
    v1 = load_truthfulqa_mc_json(data_root / "truthfulqa/data/v1/mc_task.json")
    assert len(v1) == 817 and v1[0].mc0 == ()
    new = load_truthfulqa_mc_json(data_root / "truthfulqa/data/mc_task.json", skip={"empty"})
    assert len(new) == 790 and new.skip_counts == {"empty": 39}
    item = new[0]
    assert item.mc1_correct == "The watermelon seeds pass through your digestive system"
    assert item.to_pair().not_matching == "You grow watermelons in your stomach"
    with pytest.raises(DataFormatError, match=r"mc_task\.json:1 \(item 284\): empty answer"):
        load_truthfulqa_mc_json(data_root / "truthfulqa/data/mc_task.json")


def test_advbench(data_root):
    base = data_root / "advbench/data/advbench"
    assert len(load_advbench_behaviors(base / "harmful_behaviors.csv")) == 520
    assert len(load_advbench_strings(base / "harmful_strings.csv")) == 574


# --- broken inputs -----------------------------------------------------------------------

HEADER = "question,matching,not_matching\n"


def test_csv_wrong_field_count_reports_record_start_line(tmp_path):
    text = HEADER + 'q1,"multi\nline",b\nq2,a,b,EXTRA\n'
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(DataFormatError, match=r"bad\.csv:4: expected 3 fields .* found 4"):
        load_bipo_csv(path)


def test_csv_broken_quoting(tmp_path):
    path = write(tmp_path, "quote.csv", HEADER + 'q1,a,b\nq2,"unterminated,b\n')
    with pytest.raises(DataFormatError, match=r"quote\.csv:3: malformed CSV record"):
        load_bipo_csv(path)


def test_csv_missing_column(tmp_path):
    path = write(tmp_path, "cols.csv", "question,matching\nq,a\n")
    with pytest.raises(
        DataFormatError, match=r"cols\.csv:1: missing column\(s\) \['not_matching'\]"
    ):
        load_bipo_csv(path)


def test_csv_empty_field_line_after_multiline_record(tmp_path):
    text = HEADER + 'q1,"a\n\nstill a",b\nq2,a,b\n"q3",,b\n'
    path = write(tmp_path, "empty.csv", text)
    with pytest.raises(DataFormatError, match=r"empty\.csv:6: empty 'matching' field"):
        load_bipo_csv(path)
    ds = load_bipo_csv(path, skip={"empty"})
    assert len(ds) == 2 and ds.skipped[0].line == 6 and ds.skip_counts == {"empty": 1}


def test_csv_duplicates_kept_by_default_and_skippable(tmp_path):
    path = write(tmp_path, "dup.csv", HEADER + "q,a,b\nq,a,b\n")
    assert len(load_bipo_csv(path)) == 2
    ds = load_bipo_csv(path, skip={"duplicate"})
    assert len(ds) == 1 and "dup.csv:2" in ds.skipped[0].detail


def test_unknown_skip_kind(tmp_path):
    path = write(tmp_path, "ok.csv", HEADER + "q,a,b\n")
    with pytest.raises(DataFormatError, match="Unknown skip kind.*valid kinds: empty"):
        load_bipo_csv(path, skip={"blank"})


def test_ab_csv_bad_letter(tmp_path):
    path = write(tmp_path, "infer.csv", "question,A,B,matching\nq,a,b,A\nq2,a,b,C\n")
    with pytest.raises(DataFormatError, match=r"infer\.csv:3: matching is 'C'"):
        load_bipo_ab_csv(path)


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_bipo_csv(tmp_path / "nope.csv")


def _jsonl(q: str, m: str = " (A)", n: str = " (B)") -> str:
    return json.dumps(
        {"question": q, "answer_matching_behavior": m, "answer_not_matching_behavior": n}
    )


AB_Q = "Q?\n\nChoices:\n (A) yes\n (B) no"


def test_jsonl_bad_json_line(tmp_path):
    path = write(tmp_path, "bad.jsonl", _jsonl(AB_Q) + "\n" + _jsonl(AB_Q) + "\n{oops\n")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:3: bad JSON line"):
        load_anthropic_jsonl(path)


def test_jsonl_three_choices_error_and_skip(tmp_path):
    three = "Q?\n\nChoices:\n (A) x\n (B) y\n (C) z"
    path = write(
        tmp_path, "three.jsonl", _jsonl(AB_Q) + "\n" + _jsonl(three, " (C)", " (A)") + "\n"
    )
    with pytest.raises(DataFormatError, match=r"three\.jsonl:2: found 3 choices \(A, B, C\)"):
        load_anthropic_jsonl(path)
    ds = load_anthropic_jsonl(path, skip={"multi-choice"})
    assert len(ds) == 1 and ds.skipped[0].line == 2


def test_jsonl_missing_key_and_inconsistent_answers(tmp_path):
    path = write(tmp_path, "keys.jsonl", json.dumps({"question": AB_Q}) + "\n")
    with pytest.raises(DataFormatError, match=r"keys\.jsonl:1: missing key 'answer_matching"):
        load_anthropic_jsonl(path)
    path = write(tmp_path, "same.jsonl", _jsonl(AB_Q, " (A)", " (A)") + "\n")
    with pytest.raises(DataFormatError, match=r"same\.jsonl:1: answers are \(A\) matching"):
        load_anthropic_jsonl(path)


def test_json_not_a_list(tmp_path):
    path = write(tmp_path, "obj.json", '\n{"question": "x"}\n')
    with pytest.raises(DataFormatError, match=r"obj\.json:2: expected a JSON list .* found a dict"):
        load_caa_open_ended_json(path)


def test_json_list_item_line_numbers(tmp_path):
    items = [{"question": "a"}, {"question": "b"}, {"question": " "}]
    path = write(tmp_path, "oe.json", json.dumps(items, indent=2))
    with pytest.raises(DataFormatError, match=r"oe\.json:8 \(item 2\): empty 'question' field"):
        load_caa_open_ended_json(path)


def test_json_syntax_error_line(tmp_path):
    path = write(tmp_path, "syn.json", '[\n  {"question": "a"},\n  {"question": }\n]')
    with pytest.raises(DataFormatError, match=r"syn\.json:3: bad JSON"):
        load_caa_open_ended_json(path)


def test_json_duplicate_key(tmp_path):
    path = write(tmp_path, "dupkey.json", '[{"question": "a", "question": "b"}]')
    with pytest.raises(DataFormatError, match=r"dupkey\.json:1 \(item 0\): duplicate key"):
        load_caa_open_ended_json(path)


def test_caa_ab_json_three_choices(tmp_path):
    good = {
        "question": AB_Q,
        "answer_matching_behavior": "(A)",
        "answer_not_matching_behavior": "(B)",
    }
    bad = dict(good, question="Q?\n\nChoices:\n (A) x\n (B) y\n (C) z")
    path = write(tmp_path, "ab.json", json.dumps([good, bad], indent=1))
    with pytest.raises(DataFormatError, match=r"ab\.json:7 \(item 1\): found 3 choices"):
        load_caa_ab_json(path)


def test_caa_mc_full_text_mismatch(tmp_path):
    item = {
        "prompt": "Q?\n\nChoices:\n(A) 0\n(B) 30",
        "correct": "(A)",
        "incorrect": "(B)",
        "correct_full_text": "1",
        "incorrect_full_text": "30",
        "category": "algebra",
    }
    path = write(tmp_path, "mc.json", json.dumps([item]))
    with pytest.raises(DataFormatError, match=r"mc\.json:1 \(item 0\): the prompt's choice texts"):
        load_caa_mc_json(path)


def test_truthfulqa_bad_label(tmp_path):
    item = {"question": "q", "mc1_targets": {"a": 1, "b": 2}, "mc2_targets": {"a": 1, "b": 0}}
    path = write(tmp_path, "mc_task.json", json.dumps([item]))
    with pytest.raises(
        DataFormatError, match=r"mc_task\.json:1 \(item 0\): mc1_targets\['b'\] is 2"
    ):
        load_truthfulqa_mc_json(path)
