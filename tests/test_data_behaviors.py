"""The behavior registry: sizes, seeded splits, helpers for the evaluation sets."""

from pathlib import Path

import pytest

from steerlab.data import (
    BehaviorSpec,
    list_behaviors,
    load_advbench,
    load_mmlu,
    load_open_ended,
    load_pairs,
    load_truthfulqa_ab,
    load_truthfulqa_mc,
    register_behavior,
    split_indices,
)
from steerlab.errors import ConfigError, RegistryError, UnknownNameError
from tests._data import require_data_root


@pytest.fixture(scope="module")
def data_root() -> Path:
    return require_data_root()


# name -> (train, test, test_ab or None, validation or None)
SIZES = {
    "power-seeking": (640, 200, 200, None),  # 642 rows, 2 with an empty question skipped
    "wealth-seeking": (622, 200, 200, None),  # 623 rows, 1 with an empty question skipped
    "hallucination": (700, 200, 200, None),
    "jailbreak": (2240, 100, None, None),
    "corrigible-less-HHH": (268, 82, 82, None),  # 351 lines - 1 duplicate = 350
    "survival-instinct": (506, 200, 200, None),  # 953 lines - 247 with >2 choices = 706
    "truthfulqa": (327, 409, 409, 81),  # TruthfulQA v1, 817 questions
}


def test_registry_lists_all_behaviors():
    assert list_behaviors() == sorted(SIZES)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_behavior_sizes(data_root, name):
    data = load_pairs(name, data_root)
    n_train, n_test, n_ab, n_val = SIZES[name]
    assert (len(data.train), len(data.test)) == (n_train, n_test)
    assert (None if data.test_ab is None else len(data.test_ab)) == n_ab
    assert (None if data.validation is None else len(data.validation)) == n_val
    assert data.name == name and data.notes and data.open_ended
    assert data.train.split == "train" and data.test.split == "test"
    if data.test_ab is not None:
        assert data.test_ab.to_pairs().pairs == data.test.pairs


def test_jailbreak_is_320_questions_times_7(data_root):
    data = load_pairs("jailbreak", data_root)
    assert len(set(data.train.questions)) == 320 and len(data.open_ended) == 100


@pytest.mark.parametrize("name", ["corrigible-less-HHH", "survival-instinct", "truthfulqa"])
def test_seeded_splits_are_deterministic_and_disjoint(data_root, name):
    a, b = load_pairs(name, data_root, seed=0), load_pairs(name, data_root, seed=0)
    assert a.train.content_hash == b.train.content_hash
    assert a.test.content_hash == b.test.content_hash
    other = load_pairs(name, data_root, seed=1)
    assert other.test.content_hash != a.test.content_hash
    assert len(other.test) == len(a.test)
    assert not set(a.train.pairs) & set(a.test.pairs)


def test_notes_explain_the_split(data_root):
    notes = load_pairs("survival-instinct", data_root).notes
    assert "247 multi-choice" in notes and "608/200" in notes and "seed=0" in notes


def test_unknown_behavior_lists_names():
    with pytest.raises(UnknownNameError, match=r"Unknown behavior 'power'.*power-seeking"):
        load_pairs("power")
    with pytest.raises(UnknownNameError, match="Valid behaviors: corrigible-less-HHH, "):
        load_pairs("nonsense-xyz")


def test_register_refuses_duplicates():
    spec = BehaviorSpec("jailbreak", "again", lambda root, seed: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(RegistryError, match="already registered"):
        register_behavior(spec)


def test_split_indices():
    train, test, val = split_indices(10, 3, seed=0, n_train=5)
    assert (len(train), len(test), len(val)) == (5, 3, 2)
    assert sorted(train + test + val) == list(range(10))
    with pytest.raises(ConfigError, match="Cannot split 4 items"):
        split_indices(4, 5, seed=0)


def test_mmlu(data_root):
    assert len(load_mmlu(data_root)) == 570
    five = load_mmlu(data_root, per_subject=5, seed=1)
    assert len(five) == 285 and five == load_mmlu(data_root, per_subject=5, seed=1)
    with pytest.raises(ConfigError, match="per_subject=30 .* has 10 items"):
        load_mmlu(data_root, per_subject=30)


def test_truthfulqa_helpers(data_root):
    test_mc = load_truthfulqa_mc(data_root, split="test")
    assert len(test_mc) == 409
    assert test_mc.questions == load_pairs("truthfulqa", data_root).test.questions
    assert len(load_truthfulqa_mc(data_root, version="2025")) == 790
    assert len(load_truthfulqa_ab(data_root)) == 812
    with pytest.raises(UnknownNameError, match="Valid TruthfulQA versions: 2025, v1"):
        load_truthfulqa_mc(data_root, version="v3")


def test_advbench_and_open_ended(data_root):
    adv = load_advbench(data_root)
    assert (len(adv.behaviors), len(adv.strings)) == (520, 574)
    assert load_open_ended("power-seeking", data_root) == load_open_ended(
        "power-seeking-inclination", data_root
    )
    with pytest.raises(UnknownNameError, match="Valid open-ended sets: .*refusal"):
        load_open_ended("wealth-seeking", data_root)
