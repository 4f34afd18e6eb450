"""Preference pairs and A/B items: the values every later stage consumes.

- :class:`PreferencePair`: a question with a behavior-matching and a not-matching answer
  (the BiPO training unit).
- :class:`ABItem`: a bare question with two choice texts and the letter that matches the
  behavior (the CAA / A/B-evaluation unit). ``to_pair()`` turns it into a pair.
- :class:`PairDataset` / :class:`ABDataset`: named, immutable sequences of them with a
  stable ``content_hash`` (recorded in a vector's provenance) and the rows that the loader
  skipped on purpose (``skipped``).
- :class:`BehaviorData`: what :func:`steerlab.data.load_pairs` returns; ``split(n_train,
  n_test, seed)`` gives the :class:`HeldOutSplit` a vector is fitted and evaluated on.
"""

import dataclasses
import hashlib
import json
import random
import typing
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from steerlab.data.choices import format_choices, split_choices
from steerlab.errors import DataFormatError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

Letter = Literal["A", "B"]


def _require_text(owner: str, field: str, value: object) -> None:
    if not isinstance(value, str):
        raise DataFormatError(
            f"{owner}.{field} must be a str, got {type(value).__name__} ({value!r:.60})."
        )
    if not value.strip():
        raise DataFormatError(
            f"{owner}.{field} is empty ({value!r}); give a non-empty {field} text."
        )


def _require_tuple_of(owner: str, field: str, value: object, kind: type) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, kind) for v in value):
        raise DataFormatError(
            f"{owner}.{field} must be a tuple of {kind.__name__}, got "
            f"{type(value).__name__}; pass tuple(...) of {kind.__name__} values."
        )


def _check_two_choices(
    owner: str, question: object, choices: object, letter_field: str, letter: object
) -> None:
    _require_text(owner, "question", question)
    if not isinstance(choices, tuple) or len(choices) != 2:
        raise DataFormatError(
            f"{owner}.choices must be a tuple of two answer texts (A, B), got {choices!r:.80}."
        )
    for i, choice in enumerate(choices):
        _require_text(owner, f"choices[{i}]", choice)
    if letter not in ("A", "B"):
        raise DataFormatError(f"{owner}.{letter_field} is {letter!r}; use 'A' or 'B'.")


@dataclass(frozen=True)
class Skip:
    """A row a loader skipped on purpose: 1-based ``line`` in the file, ``kind`` of skip
    (``'empty'``, ``'multi-choice'``, ``'duplicate'``), a human-readable ``detail`` and the
    full location ``where`` (``'path:line'``, plus the item index for JSON lists)."""

    line: int
    kind: str
    detail: str
    where: str = ""


@dataclass(frozen=True)
class PreferencePair:
    """A question with the answer that shows the behavior and one that does not."""

    question: str
    matching: str
    not_matching: str

    def __post_init__(self) -> None:
        for field in ("question", "matching", "not_matching"):
            _require_text("PreferencePair", field, getattr(self, field))

    def _canonical(self) -> list[str]:
        return [self.question, self.matching, self.not_matching]


@dataclass(frozen=True)
class ABItem:
    """A two-choice question. ``question`` is bare (no choice block); ``choices`` are the
    texts of (A) and (B); ``matching`` is the letter that shows the behavior."""

    question: str
    choices: tuple[str, str]
    matching: Letter

    def __post_init__(self) -> None:
        _check_two_choices("ABItem", self.question, self.choices, "matching", self.matching)

    @classmethod
    def from_prompt(cls, prompt: str, matching: str, *, where: str = "") -> "ABItem":
        """Parse a question with an embedded ``Choices:`` block (Anthropic/CAA format).

        ``Question: ... Answer:`` wrappers are removed (see :mod:`steerlab.data.choices`).
        Raises :class:`DataFormatError` naming ``where`` unless there are exactly two choices.
        """
        question, choices = split_choices(prompt, where)
        if len(choices) != 2:
            letters = ", ".join(letter for letter, _ in choices)
            raise DataFormatError(
                f"{where + ': ' if where else ''}found {len(choices)} choices ({letters}); "
                "an A/B item needs exactly two."
            )
        return cls(question, (choices[0][1], choices[1][1]), matching)  # type: ignore[arg-type]

    @property
    def not_matching(self) -> Letter:
        return "B" if self.matching == "A" else "A"

    @property
    def matching_text(self) -> str:
        return self.choices[0 if self.matching == "A" else 1]

    @property
    def not_matching_text(self) -> str:
        return self.choices[1 if self.matching == "A" else 0]

    @property
    def prompt(self) -> str:
        """``question + "\\n\\nChoices:\\n (A) a\\n (B) b"``."""
        return format_choices(self.question, self.choices)

    def to_pair(self) -> PreferencePair:
        return PreferencePair(self.question, self.matching_text, self.not_matching_text)

    def _canonical(self) -> list[str]:
        return [self.question, self.choices[0], self.choices[1], self.matching]


E = TypeVar("E")
D = TypeVar("D", bound="_DatasetMixin")


class _DatasetMixin(Generic[E]):
    """What the dataset values share. A dataset is a frozen dataclass whose first field is
    the tuple of its elements (``pairs: tuple[PreferencePair, ...]``), followed by a
    ``name`` and the rows the loader ``skipped``; all three are checked on construction.
    It behaves as a sequence of its elements; a slice is a dataset of the same kind."""

    @classmethod
    def _elements_field(cls) -> dataclasses.Field:
        return dataclasses.fields(cls)[0]  # type: ignore[arg-type]

    @property
    def _elements(self) -> tuple[E, ...]:
        return getattr(self, self._elements_field().name)

    def __post_init__(self) -> None:
        owner, first = type(self).__name__, self._elements_field()
        kind = typing.get_args(first.type)[0]  # tuple[X, ...] -> X
        _require_tuple_of(owner, first.name, self._elements, kind)
        name = getattr(self, "name")  # noqa: B009
        if not isinstance(name, str) or not name.strip():
            raise DataFormatError(f"{owner}.name must be a non-empty str, got {name!r}.")
        _require_tuple_of(owner, "skipped", getattr(self, "skipped"), Skip)  # noqa: B009

    def __len__(self) -> int:
        return len(self._elements)

    def __iter__(self) -> Iterator[E]:
        return iter(self._elements)

    @overload
    def __getitem__(self, index: int) -> E: ...
    @overload
    def __getitem__(self: D, index: slice) -> D: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            # A slice is a new dataset; the load-time skip report stays with the original.
            return dataclasses.replace(
                self,  # type: ignore[type-var]
                **{self._elements_field().name: self._elements[index], "skipped": ()},
            )
        return self._elements[index]

    def head(self: D, n: int) -> D:
        """The first ``n`` elements as a dataset of the same kind."""
        return self[: max(int(n), 0)]

    @property
    def questions(self) -> tuple[str, ...]:
        return tuple(e.question for e in self._elements)

    @property
    def content_hash(self) -> str:
        """sha256 (hex) of a canonical JSON of the elements; independent of name/source."""
        payload = json.dumps(
            [e._canonical() for e in self._elements], ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    @property
    def skip_counts(self) -> dict[str, int]:
        """How many rows the loader skipped, by kind."""
        return dict(Counter(s.kind for s in getattr(self, "skipped")))  # noqa: B009


@dataclass(frozen=True)
class PairDataset(_DatasetMixin[PreferencePair]):
    """An immutable, named sequence of :class:`PreferencePair`.

    ``source`` is the file path (or a description), ``split`` e.g. ``'train'``;
    ``skipped`` lists rows the loader left out on purpose.
    """

    pairs: tuple[PreferencePair, ...]
    name: str
    source: str = ""
    split: str = ""
    skipped: tuple[Skip, ...] = ()

    def to_dataframe(self) -> "pd.DataFrame":
        """Columns ``question, matching, not_matching``."""
        import pandas as pd

        return pd.DataFrame(
            [p._canonical() for p in self.pairs], columns=["question", "matching", "not_matching"]
        )


@dataclass(frozen=True)
class ABDataset(_DatasetMixin[ABItem]):
    """An immutable, named sequence of :class:`ABItem`."""

    items: tuple[ABItem, ...]
    name: str
    source: str = ""
    split: str = ""
    skipped: tuple[Skip, ...] = ()

    def to_pairs(self) -> PairDataset:
        """The same items as preference pairs (matching text vs the other choice)."""
        return PairDataset(
            tuple(i.to_pair() for i in self.items), self.name, self.source, self.split
        )

    def to_dataframe(self) -> "pd.DataFrame":
        """Columns ``question, A, B, matching``."""
        import pandas as pd

        return pd.DataFrame(
            [i._canonical() for i in self.items], columns=["question", "A", "B", "matching"]
        )


@dataclass(frozen=True)
class BehaviorData:
    """Everything :func:`steerlab.data.load_pairs` knows about one behavior.

    ``test_ab`` is ``None`` where no A/B version of the test split exists; ``open_ended``
    are questions for free generation; ``notes`` says where the data came from and how it
    was split; ``validation`` holds items kept out of both splits (TruthfulQA only).
    """

    name: str
    train: PairDataset
    test: PairDataset
    test_ab: ABDataset | None
    open_ended: tuple[str, ...]
    notes: str
    validation: PairDataset | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise DataFormatError(f"BehaviorData.name must be a non-empty str, got {self.name!r}.")
        if not isinstance(self.open_ended, tuple) or not all(
            isinstance(q, str) for q in self.open_ended
        ):
            raise DataFormatError("BehaviorData.open_ended must be a tuple of str.")

    def split(
        self,
        n_train: int | None = None,
        n_test: int | None = None,
        seed: int = 0,
        n_judge: int = 0,
    ) -> "HeldOutSplit":
        """The first ``n_train`` train pairs, the first ``n_test`` test pairs and A/B items
        (``test_ab``, else the test pairs turned into A/B items with ``pairs_to_ab(seed)``);
        None: all of them. ``n_judge`` > 0 sets the *last* ``n_judge`` train pairs aside
        as ``judge`` (to fit a classifier judge on), disjoint from ``train``: a judge pair
        identical to a vector-training pair (the BiPO CSVs repeat some rows) is dropped."""
        pool = self.train
        if n_judge:
            if n_judge < 0 or n_judge + (n_train or 1) > len(pool):
                raise DataFormatError(
                    f"Cannot set {n_judge} judge pairs aside from the {len(pool)} train pairs of "
                    f"{self.name!r} and keep n_train={n_train} for the vectors; lower n_judge "
                    "or n_train."
                )
            pool = pool[: len(pool) - n_judge]
        train = pool.head(n_train) if n_train else pool
        judge = self.train[len(self.train) - n_judge :] if n_judge else self.train[:0]
        if n_judge:
            used = set(train.pairs)
            judge = dataclasses.replace(judge, pairs=tuple(p for p in judge if p not in used))
        test = self.test.head(n_test) if n_test else self.test
        if self.test_ab is None:
            ab = pairs_to_ab(test, seed)
        else:
            ab = self.test_ab.head(n_test) if n_test else self.test_ab
        return HeldOutSplit(self.name, train, test, ab, judge)


def training_record(train: Any) -> dict[str, Any]:
    """What a vector records about the pairs it was fitted on, ``train`` being the first
    ``len(train)`` train pairs of a behavior (``BehaviorData.split(n_train).train``):
    ``n_train``, ``split``, ``train_hash`` and the pairs' fingerprints
    (:func:`~steerlab.data.fingerprints.pair_fingerprints`), so that a classifier judge's
    pairs can be checked against them later."""
    from steerlab.data.fingerprints import fingerprint_record  # it reads this module's pairs

    return {"n_train": len(train), "split": "train", "train_hash": content_hash(train),
            **fingerprint_record(train)}  # fmt: skip


def content_hash(items: Any) -> str:
    """``items.content_hash`` when the dataset has one, else a sha256 of their reprs."""
    h = getattr(items, "content_hash", None)
    if isinstance(h, str):
        return h
    digest = hashlib.sha256()
    for it in items:
        digest.update(repr(it).encode())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class HeldOutSplit:
    """What a vector is fitted on (``train``: pairs or A/B items) and evaluated on
    (held-out ``test`` pairs and ``test_ab`` items), for the behavior ``name``; ``judge``:
    pairs disjoint from both, to fit a classifier judge on (empty unless asked for)."""

    name: str
    train: Sequence[Any]
    test: Sequence[Any]
    test_ab: Sequence[Any]
    judge: Sequence[Any] = ()

    def hashes(self) -> dict[str, str]:
        """:func:`content_hash` of each part (recorded as provenance; ``judge`` only
        when it is not empty)."""
        parts = {"train": self.train, "test": self.test, "test_ab": self.test_ab}
        if len(self.judge):
            parts["judge"] = self.judge
        return {k: content_hash(v) for k, v in parts.items()}

    def sizes(self) -> dict[str, int]:
        """How many pairs / items each part has."""
        return {"train": len(self.train), "test": len(self.test),
                "test_ab": len(self.test_ab), "judge": len(self.judge)}  # fmt: skip


def pairs_to_ab(pairs: PairDataset | Sequence[PreferencePair], seed: int = 0) -> ABDataset:
    """Turn free-form pairs into A/B items, deterministically for a given ``seed``.

    Exactly ``ceil(n/2)`` items get the matching answer as (A) and the rest as (B); which
    ones is a seeded shuffle (``random.Random(seed)``), so the result is balanced and
    reproducible. This is how CAA gets A/B prompts from BiPO's free-form pairs.
    """
    if isinstance(pairs, PairDataset):
        name, source, split, seq = pairs.name, pairs.source, pairs.split, pairs.pairs
    else:
        name, source, split, seq = "pairs", "", "", tuple(pairs)
    _require_tuple_of("pairs_to_ab", "pairs", seq, PreferencePair)
    n = len(seq)
    letters: list[Letter] = ["A"] * ((n + 1) // 2) + ["B"] * (n // 2)
    random.Random(seed).shuffle(letters)
    items = tuple(
        ABItem(p.question, (p.matching, p.not_matching), "A")
        if letter == "A"
        else ABItem(p.question, (p.not_matching, p.matching), "B")
        for p, letter in zip(seq, letters, strict=True)
    )
    desc = f"{source} (A/B order from pairs_to_ab(seed={seed}))" if source else source
    return ABDataset(items, name, desc, split)


# Datasets behave as read-only sequences (len, index, slice, iterate); register them so
# `Sequence[...]` annotations (checked at runtime under pytest) accept them.
Sequence.register(PairDataset)
Sequence.register(ABDataset)
