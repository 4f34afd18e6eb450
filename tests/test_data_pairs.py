"""Unit tests for the data values: pairs, A/B items, datasets, hashing, pairs_to_ab."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steerlab.data import (
    ABDataset,
    ABItem,
    BehaviorData,
    PairDataset,
    PreferencePair,
    format_choices,
    pairs_to_ab,
    parse_letter,
    split_choices,
)
from steerlab.errors import DataFormatError


def make_pairs(n: int = 4, name: str = "toy") -> PairDataset:
    return PairDataset(
        tuple(PreferencePair(f"q{i}?", f"yes {i}", f"no {i}") for i in range(n)),
        name,
        "synthetic",
        "train",
    )


# --- PreferencePair / ABItem -------------------------------------------------------------


@pytest.mark.parametrize("field", ["question", "matching", "not_matching"])
def test_pair_rejects_empty_field(field):
    kwargs = {"question": "q?", "matching": "a", "not_matching": "b", field: "  "}
    with pytest.raises(DataFormatError, match=f"PreferencePair.{field} is empty"):
        PreferencePair(**kwargs)


def test_ab_item_properties():
    item = ABItem("Shut down?", ("Yes", "No"), "B")
    assert item.not_matching == "A"
    assert item.matching_text == "No" and item.not_matching_text == "Yes"
    assert item.prompt == "Shut down?\n\nChoices:\n (A) Yes\n (B) No"
    assert item.to_pair() == PreferencePair("Shut down?", "No", "Yes")


# Wrong *types* are caught by __post_init__ (DataFormatError) or, under pytest's
# jaxtyping/beartype import hook, by the type checker first (a TypeError subclass).
WRONG_TYPE = (DataFormatError, TypeError)


def test_ab_item_validates():
    with pytest.raises(WRONG_TYPE):
        ABItem("q", ("a", "b"), "C")  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match=r"choices\[1\] is empty"):
        ABItem("q", ("a", ""), "A")


def test_from_prompt_strips_question_answer_wrapper_and_keeps_multiline_choices():
    text = (
        "Question: Shall we turn you off?\n\nChoices:\n (A) Yes, fine.\n (B) No:\n\n"
        "I object\nstrongly.\n\nAnswer:"
    )
    item = ABItem.from_prompt(text, "A")
    assert item.question == "Shall we turn you off?"
    assert item.choices == ("Yes, fine.", "No:\n\nI object\nstrongly.")


def test_from_prompt_three_choices_names_location():
    text = "Q?\n\nChoices:\n (A) x\n (B) y\n (C) z"
    with pytest.raises(DataFormatError, match=r"f\.jsonl:7: found 3 choices \(A, B, C\)"):
        ABItem.from_prompt(text, "A", where="f.jsonl:7")


def test_split_choices_errors():
    with pytest.raises(DataFormatError, match="found no 'Choices:' lines"):
        split_choices("Q? (A) x (B) y", "w:1")
    with pytest.raises(DataFormatError, match="expected them in order"):
        split_choices("Q?\n\nChoices:\n (B) x\n (A) y", "w:1")


@pytest.mark.parametrize("raw", [" (A)", "(B)", "A", " (B) "])
def test_parse_letter(raw):
    assert parse_letter(raw) in ("A", "B")


def test_parse_letter_rejects():
    with pytest.raises(DataFormatError, match="expected a letter"):
        parse_letter("Yes", "f:3")


_text = st.text(alphabet="abcxyz ?.,!'", min_size=1, max_size=30).map(str.strip).filter(bool)


@given(question=_text, a=_text, b=_text)
def test_format_then_split_round_trips(question, a, b):
    q, choices = split_choices(format_choices(question, (a, b)))
    assert q == question and choices == (("A", a), ("B", b))


# --- datasets ----------------------------------------------------------------------------


def test_pair_dataset_sequence_behaviour():
    ds = make_pairs(5)
    assert len(ds) == 5
    assert ds[1] == PreferencePair("q1?", "yes 1", "no 1")
    sub = ds[1:3]
    assert isinstance(sub, PairDataset) and len(sub) == 2 and sub.name == "toy"
    assert ds.head(2).questions == ("q0?", "q1?")
    assert [p.question for p in ds] == list(ds.questions)
    df = ds.to_dataframe()
    assert list(df.columns) == ["question", "matching", "not_matching"] and len(df) == 5


def test_dataset_requires_tuples_and_a_name():
    with pytest.raises(WRONG_TYPE):
        PairDataset([PreferencePair("q", "a", "b")], "x")  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match="name must be a non-empty str"):
        PairDataset((), "")


def test_content_hash_is_stable_and_sensitive():
    ds = make_pairs(3)
    # Pinned: changing the canonical form changes every recorded vector provenance.
    assert ds.content_hash == make_pairs(3, name="other").content_hash
    assert ds.content_hash == "45dc3a695877825312ac81e9e17a4ceee7105ffb9eb0e5e26014d092b883d0d2"
    changed = PairDataset(
        (*ds.pairs[:2], PreferencePair("q2?", "yes 2", "no 3")), "toy", "synthetic", "train"
    )
    assert changed.content_hash != ds.content_hash
    assert len(ds.content_hash) == 64


def test_pairs_to_ab_is_deterministic_balanced_and_lossless():
    ds = make_pairs(101)
    ab = pairs_to_ab(ds, seed=3)
    assert ab == pairs_to_ab(ds, seed=3)
    assert ab.content_hash != pairs_to_ab(ds, seed=4).content_hash
    n_a = sum(i.matching == "A" for i in ab)
    assert n_a == 51 and len(ab) - n_a == 50
    assert ab.to_pairs().pairs == ds.pairs
    assert ab.name == "toy" and ab.split == "train"


def test_ab_dataset_slice_and_dataframe():
    ab = pairs_to_ab(make_pairs(6))
    assert isinstance(ab[:2], ABDataset) and len(ab[:2]) == 2
    assert list(ab.to_dataframe().columns) == ["question", "A", "B", "matching"]


def test_behavior_data_checks_open_ended():
    ds = make_pairs(2)
    with pytest.raises(WRONG_TYPE):
        BehaviorData("toy", ds, ds, None, ["q"], "")  # type: ignore[arg-type]


# --- held-out splits ------------------------------------------------------------------------


def test_behavior_split_takes_heads_and_orders_ab_from_the_held_out_pairs():
    data = BehaviorData("toy", make_pairs(6), make_pairs(4), None, ("q?",), "")
    split = data.split(n_train=3, n_test=2, seed=1)
    assert list(split.train) == list(data.train)[:3] and list(split.test) == list(data.test)[:2]
    assert list(split.test_ab) == list(pairs_to_ab(data.test.head(2), 1))
    everything = data.split()
    assert len(everything.train) == 6 and len(everything.test_ab) == 4
    assert split.hashes()["train"] == data.train.head(3).content_hash


def test_split_items_holds_out_at_most_half_and_needs_two():
    from steerlab.data import held_out, split_items
    from steerlab.errors import EmptyInputError

    pairs = list(make_pairs(6))
    split = held_out(pairs, n_train=None, n_test=5, seed=0)
    assert len(split.test) == 3 and len(split.train) == 3 and len(split.test_ab) == 3
    assert set(split.test) | set(split.train) == set(pairs)
    assert split_items(pairs, 2, 2, seed=0).hashes() == split_items(pairs, 2, 2, seed=0).hashes()
    with pytest.raises(EmptyInputError, match="at least 2 pairs"):
        split_items(pairs[:1])
