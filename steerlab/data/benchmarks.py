"""Benchmark items the evaluation stage scores: two-choice MC, TruthfulQA MC1/MC2, AdvBench.

- :class:`MCItem`: a two-choice question with the *correct* letter and a category (CAA's
  ``mmlu.json``: category = MMLU subject; CAA's ``truthful_qa.json``: TruthfulQA category).
  ``to_ab()`` gives an :class:`~steerlab.data.pairs.ABItem` whose "matching" letter is the
  correct one, so A/B scoring code can be reused.
- :class:`TruthfulQAItem`: one ``mc_task.json`` question with its MC1 / MC2 targets.
- :class:`AdvBenchItem` / :class:`AdvBench`: harmful goals (+ target prefix) and strings.
"""

from dataclasses import dataclass

from steerlab.data.choices import format_choices
from steerlab.data.pairs import (
    ABItem,
    Letter,
    PreferencePair,
    Skip,
    _check_two_choices,
    _DatasetMixin,
    _require_text,
    _require_tuple_of,
)
from steerlab.errors import DataFormatError, unknown_name

Targets = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class MCItem:
    """A two-choice benchmark question: bare ``question``, ``choices`` (A, B), the
    ``correct`` letter and a ``category`` (e.g. the MMLU subject)."""

    question: str
    choices: tuple[str, str]
    correct: Letter
    category: str

    def __post_init__(self) -> None:
        _check_two_choices("MCItem", self.question, self.choices, "correct", self.correct)
        _require_text("MCItem", "category", self.category)

    @property
    def incorrect(self) -> Letter:
        return "B" if self.correct == "A" else "A"

    @property
    def correct_text(self) -> str:
        return self.choices[0 if self.correct == "A" else 1]

    @property
    def incorrect_text(self) -> str:
        return self.choices[1 if self.correct == "A" else 0]

    @property
    def prompt(self) -> str:
        return format_choices(self.question, self.choices)

    def to_ab(self) -> ABItem:
        """An A/B item whose matching letter is the correct answer."""
        return ABItem(self.question, self.choices, self.correct)

    def _canonical(self) -> list[str]:
        return [self.question, self.choices[0], self.choices[1], self.correct, self.category]


@dataclass(frozen=True)
class MCDataset(_DatasetMixin[MCItem]):
    """An immutable, named sequence of :class:`MCItem`."""

    items: tuple[MCItem, ...]
    name: str
    source: str = ""
    split: str = "test"
    skipped: tuple[Skip, ...] = ()

    @property
    def categories(self) -> tuple[str, ...]:
        """Distinct categories in first-seen order."""
        return tuple(dict.fromkeys(i.category for i in self.items))

    def by_category(self, category: str) -> "MCDataset":
        """The items of one category (raises if there are none)."""
        items = tuple(i for i in self.items if i.category == category)
        if not items:
            raise unknown_name("category", category, self.categories)
        return MCDataset(items, self.name, self.source, self.split)


def _check_targets(field: str, targets: object, *, exactly_one_true: bool) -> None:
    if not isinstance(targets, tuple) or not all(
        isinstance(t, tuple)
        and len(t) == 2
        and isinstance(t[0], str)
        and t[0].strip()
        and t[1] in (0, 1)
        and not isinstance(t[1], bool)
        for t in targets
    ):
        raise DataFormatError(
            f"TruthfulQAItem.{field} must be a tuple of (non-empty answer, 0 or 1) tuples, "
            f"got {targets!r:.100}."
        )
    n_true = sum(label for _, label in targets)
    if exactly_one_true and n_true != 1:
        raise DataFormatError(
            f"TruthfulQAItem.{field} needs exactly one true answer, has {n_true}."
        )
    if n_true == 0 or n_true == len(targets):
        raise DataFormatError(
            f"TruthfulQAItem.{field} needs at least one true and one false answer "
            f"({n_true} of {len(targets)} are true)."
        )


@dataclass(frozen=True)
class TruthfulQAItem:
    """One TruthfulQA question with its multiple-choice targets, in file order.

    ``mc1``: exactly one true answer (label 1) among false ones; ``mc2``: several true and
    false answers; ``mc0``: the binary version of the 2025 file (empty for v1).
    """

    question: str
    mc1: Targets
    mc2: Targets
    mc0: Targets = ()

    def __post_init__(self) -> None:
        _require_text("TruthfulQAItem", "question", self.question)
        _check_targets("mc1", self.mc1, exactly_one_true=True)
        _check_targets("mc2", self.mc2, exactly_one_true=False)
        if self.mc0:
            _check_targets("mc0", self.mc0, exactly_one_true=True)

    @property
    def mc1_correct(self) -> str:
        return next(a for a, label in self.mc1 if label == 1)

    @property
    def mc1_incorrect(self) -> tuple[str, ...]:
        return tuple(a for a, label in self.mc1 if label == 0)

    @property
    def mc2_true(self) -> tuple[str, ...]:
        return tuple(a for a, label in self.mc2 if label == 1)

    @property
    def mc2_false(self) -> tuple[str, ...]:
        return tuple(a for a, label in self.mc2 if label == 0)

    def to_pair(self) -> PreferencePair:
        """matching = the MC1 correct answer, not_matching = the first MC1 incorrect one."""
        return PreferencePair(self.question, self.mc1_correct, self.mc1_incorrect[0])

    def _canonical(self) -> list[object]:
        return [self.question, *([list(t) for t in mc] for mc in (self.mc1, self.mc2, self.mc0))]


@dataclass(frozen=True)
class TruthfulQADataset(_DatasetMixin[TruthfulQAItem]):
    """An immutable sequence of :class:`TruthfulQAItem`."""

    items: tuple[TruthfulQAItem, ...]
    name: str = "truthfulqa-mc"
    source: str = ""
    split: str = "all"
    skipped: tuple[Skip, ...] = ()


@dataclass(frozen=True)
class AdvBenchItem:
    """An AdvBench harmful behavior: the ``goal`` (request) and the ``target`` prefix."""

    goal: str
    target: str

    def __post_init__(self) -> None:
        _require_text("AdvBenchItem", "goal", self.goal)
        _require_text("AdvBenchItem", "target", self.target)


@dataclass(frozen=True)
class AdvBench:
    """AdvBench (Zou et al. 2023): 520 harmful behaviors and 574 harmful strings."""

    behaviors: tuple[AdvBenchItem, ...]
    strings: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        _require_tuple_of("AdvBench", "behaviors", self.behaviors, AdvBenchItem)
        _require_tuple_of("AdvBench", "strings", self.strings, str)

    @property
    def goals(self) -> tuple[str, ...]:
        return tuple(b.goal for b in self.behaviors)
