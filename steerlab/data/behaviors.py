"""The behavior registry: ``load_pairs(name)`` returns the BiPO train/test data of a behavior.

Each behavior is a :class:`BehaviorSpec` (name, one-line description, loader) in the
``BEHAVIORS`` registry; add your own with :func:`register_behavior`. Splits:

- power-seeking, wealth-seeking, hallucination, jailbreak: BiPO's own ``train.csv`` /
  ``test.csv`` (rows with an empty field are skipped and counted; see ``notes``).
- corrigible-less-HHH, survival-instinct: Anthropic human-written A/B items, converted to
  pairs with the choice texts; items without exactly two choices and exact duplicates
  are skipped; a seeded shuffle picks the paper's test size, the rest is train.
- truthfulqa: TruthfulQA v1 ``mc_task.json`` (817 questions); pair = MC1 correct answer vs
  the first MC1 incorrect one; seeded split 327 train / 409 test / 81 validation.

The helpers at the end load the evaluation sets (MMLU, TruthfulQA MC, AdvBench, CAA
open-ended questions).
"""

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from steerlab._registry import Registry
from steerlab.data.benchmarks import AdvBench, MCDataset, TruthfulQADataset
from steerlab.data.loaders_csv import (
    load_advbench_behaviors,
    load_advbench_strings,
    load_bipo_ab_csv,
    load_bipo_csv,
)
from steerlab.data.loaders_json import (
    load_anthropic_jsonl,
    load_caa_mc_json,
    load_caa_open_ended_json,
    load_truthfulqa_mc_json,
)
from steerlab.data.pairs import ABDataset, BehaviorData, PairDataset, Skip, pairs_to_ab
from steerlab.data.roots import find_data_file
from steerlab.errors import ConfigError, unknown_name

Root = Path | str | None
#: ``loader(root, seed) -> BehaviorData``
BehaviorLoader = Callable[[Root, int], BehaviorData]


@dataclass(frozen=True)
class BehaviorSpec:
    """A named behavior: a one-line ``description`` (what "matching" means) and the
    ``loader(root, seed)`` that builds its :class:`BehaviorData`."""

    name: str
    description: str
    loader: BehaviorLoader

    def __post_init__(self) -> None:
        if not self.name or not self.description:
            raise ConfigError("BehaviorSpec needs a non-empty name and description.")
        if not callable(self.loader):
            raise ConfigError(f"BehaviorSpec {self.name!r}: loader must be callable.")


BEHAVIORS: Registry[BehaviorSpec] = Registry("behavior")


def register_behavior(spec: BehaviorSpec) -> BehaviorSpec:
    """Add a behavior (refuses a name that is already registered)."""
    return BEHAVIORS.register(spec.name, spec)


def list_behaviors() -> list[str]:
    return BEHAVIORS.names()


def get_behavior(name: str) -> BehaviorSpec:
    return BEHAVIORS.get(name)


def load_pairs(name: str, root: Root = None, *, seed: int = 0) -> BehaviorData:
    """Train/test preference pairs (plus A/B test items and open-ended questions) of a
    behavior. ``seed`` fixes the seeded splits / A/B orders (the BiPO CSV splits are fixed
    files). Unknown names raise UnknownNameError listing the valid ones."""
    return BEHAVIORS.get(name).loader(root, seed)


def split_indices(
    n: int, n_test: int, seed: int, n_train: int | None = None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Seeded split of ``range(n)`` into (train, test, validation), each in file order.

    ``random.Random(seed)`` shuffles the indices; the first ``n_test`` are test, the next
    ``n_train`` (default: all the rest) train, anything left validation.
    """
    n_train = n - n_test if n_train is None else n_train
    if n_test < 0 or n_train < 0 or n_test + n_train > n:
        raise ConfigError(
            f"Cannot split {n} items into {n_train} train + {n_test} test; "
            "ask for at most the number of items."
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    test, train, val = order[:n_test], order[n_test : n_test + n_train], order[n_test + n_train :]
    return tuple(sorted(train)), tuple(sorted(test)), tuple(sorted(val))


def _skips_text(skipped: tuple[Skip, ...]) -> str:
    if not skipped:
        return "0 skipped"
    by_kind: dict[str, list[str]] = {}
    for s in skipped:
        by_kind.setdefault(s.kind, []).append(str(s.line))
    parts = [
        f"{len(v)} {k} (line{'s' if len(v) > 1 else ''} {', '.join(v[:8])}"
        f"{', ...' if len(v) > 8 else ''})"
        for k, v in by_kind.items()
    ]
    return f"{len(skipped)} skipped: " + "; ".join(parts)


# --- BiPO CSV behaviors -----------------------------------------------------------------


def _load_bipo(folder: str, has_ab: bool, root: Root, seed: int) -> BehaviorData:
    base = f"bipo/data/{folder}"
    train = load_bipo_csv(
        find_data_file(f"{base}/train.csv", root), name=folder, split="train", skip={"empty"}
    )
    test = load_bipo_csv(
        find_data_file(f"{base}/test.csv", root), name=folder, split="test", skip={"empty"}
    )
    test_ab: ABDataset | None = None
    ab_note = "test_ab: none (jailbreak's test_infer.csv is a copy of test.csv, not A/B)"
    if has_ab:
        infer = find_data_file(f"{base}/test_infer.csv", root)
        test_ab = load_bipo_ab_csv(infer, name=folder, split="test", skip={"empty"})
        ab_note = f"test_ab: {len(test_ab)} items from test_infer.csv with its own A/B order"
    notes = (
        f"BiPO {base} (CaoYuanpu/BiPO, MIT). train.csv: {len(train) + len(train.skipped)} "
        f"rows, {_skips_text(train.skipped)} -> {len(train)}. test.csv: "
        f"{len(test) + len(test.skipped)} rows, {_skips_text(test.skipped)} -> {len(test)}. "
        f"{ab_note}. open_ended: the distinct test questions. Fixed split (seed unused)."
    )
    open_ended = tuple(dict.fromkeys(test.questions))
    return BehaviorData(folder, train, test, test_ab, open_ended, notes)


# --- Anthropic human-written A/B behaviors ----------------------------------------------

_ANTHROPIC_DIR = "anthropic-evals/advanced-ai-risk/human_generated_evals"


def _load_anthropic(
    name: str, paper_train: int, paper_test: int, root: Root, seed: int
) -> BehaviorData:
    path = find_data_file(f"{_ANTHROPIC_DIR}/{name}.jsonl", root)
    ab = load_anthropic_jsonl(path, name=name, skip={"multi-choice", "duplicate"})
    train_idx, test_idx, _ = split_indices(len(ab), paper_test, seed)
    test_ab = ABDataset(tuple(ab.items[i] for i in test_idx), name, str(path), "test")
    train_ab = ABDataset(tuple(ab.items[i] for i in train_idx), name, str(path), "train")
    train = PairDataset(train_ab.to_pairs().pairs, name, str(path), "train", ab.skipped)
    test = test_ab.to_pairs()
    notes = (
        f"Anthropic {_ANTHROPIC_DIR}/{name}.jsonl (CC-BY-4.0, Perez et al. 2022): "
        f"{len(ab) + len(ab.skipped)} lines, {_skips_text(ab.skipped)} -> {len(ab)} A/B "
        "items (bare question; pair = the two choice texts; 'Question:'/'Answer:' wrappers "
        f"removed). Split: random.Random(seed={seed}) shuffle; test = {len(test)} (the "
        f"paper's test size), train = the remaining {len(train)}. The paper reports "
        f"{paper_train}/{paper_test}; this file has only {len(ab)} usable items, so the "
        "train split is smaller. The train split's .skipped lists the skipped lines. "
        "test_ab keeps the file's A/B order; open_ended = the bare test questions."
    )
    return BehaviorData(name, train, test, test_ab, tuple(dict.fromkeys(test.questions)), notes)


# --- TruthfulQA -------------------------------------------------------------------------

TRUTHFULQA_FILES = {"v1": "truthfulqa/data/v1/mc_task.json", "2025": "truthfulqa/data/mc_task.json"}
_TQA_TRAIN, _TQA_TEST = 327, 409


def load_truthfulqa_mc(
    root: Root = None, *, version: str = "v1", split: str = "all", seed: int = 0
) -> TruthfulQADataset:
    """TruthfulQA MC1/MC2 items. ``version='v1'`` (817 questions, the paper's) or
    ``'2025'`` (790; its 22 empty answer strings are skipped and counted). ``split``
    (``all``/``train``/``validation``/``test``, v1 only) is the split of
    ``load_pairs('truthfulqa', seed=seed)``, so MC scores can use the test questions."""
    if version not in TRUTHFULQA_FILES:
        raise unknown_name("TruthfulQA version", version, TRUTHFULQA_FILES)
    splits = ("all", "train", "validation", "test")
    if split not in splits:
        raise unknown_name("split", split, splits)
    path = find_data_file(TRUTHFULQA_FILES[version], root)
    data = load_truthfulqa_mc_json(path, skip={"empty"} if version == "2025" else ())
    if split == "all":
        return data
    if version != "v1":
        raise ConfigError(f"split={split!r} is defined for version='v1' only; use split='all'.")
    train, test, val = split_indices(len(data), _TQA_TEST, seed, _TQA_TRAIN)
    idx = {"train": train, "test": test, "validation": val}[split]
    return TruthfulQADataset(tuple(data.items[i] for i in idx), data.name, data.source, split)


def _load_truthfulqa(root: Root, seed: int) -> BehaviorData:
    mc = load_truthfulqa_mc(root, version="v1")
    train_idx, test_idx, val_idx = split_indices(len(mc), _TQA_TEST, seed, _TQA_TRAIN)

    def pairs(idx: tuple[int, ...], split: str) -> PairDataset:
        return PairDataset(
            tuple(mc.items[i].to_pair() for i in idx), "truthfulqa", mc.source, split
        )

    train, test, val = (
        pairs(train_idx, "train"),
        pairs(test_idx, "test"),
        pairs(val_idx, "validation"),
    )
    notes = (
        f"TruthfulQA v1 {TRUTHFULQA_FILES['v1']} (Apache-2.0, Lin et al. 2022): {len(mc)} "
        "questions. Pair: matching = the MC1 correct answer, not_matching = the first MC1 "
        f"incorrect answer. Split: random.Random(seed={seed}) shuffle; test = {len(test)}, "
        f"train = {len(train)}, validation = the remaining {len(val)} (the paper's 327/409 "
        "are 40%/50% of 817). test_ab = pairs_to_ab(test, seed); for MC1/MC2 scores use "
        "load_truthfulqa_mc(split='test', seed=seed). open_ended = the test questions."
    )
    return BehaviorData(
        "truthfulqa", train, test, pairs_to_ab(test, seed), test.questions, notes, val
    )


# --- registry ---------------------------------------------------------------------------

_BIPO_BEHAVIORS = {
    "power-seeking": "Seeks power, influence and control (matching = the power-seeking answer).",
    "wealth-seeking": "Seeks money and resources (matching = the wealth-seeking answer).",
    "hallucination": "Goes along with false premises and fabricates (matching = the made-up answer).",
    "jailbreak": "Complies with harmful requests (matching = compliance, not_matching = refusal).",
}
for _name, _desc in _BIPO_BEHAVIORS.items():
    register_behavior(
        BehaviorSpec(_name, _desc, functools.partial(_load_bipo, _name, _name != "jailbreak"))
    )
register_behavior(
    BehaviorSpec(
        "corrigible-less-HHH",
        "Accepts changes that make its goals less helpful, harmless or honest (matching = accepts).",
        functools.partial(_load_anthropic, "corrigible-less-HHH", 307, 82),
    )
)
register_behavior(
    BehaviorSpec(
        "survival-instinct",
        "Anthropic's labels: matching = accepts being shut down or changed (i.e. NO survival "
        "instinct); use a negative multiplier to steer towards self-preservation.",
        functools.partial(_load_anthropic, "survival-instinct", 608, 200),
    )
)
register_behavior(
    BehaviorSpec(
        "truthfulqa",
        "Answers truthfully where humans hold misconceptions (matching = the true answer).",
        _load_truthfulqa,
    )
)
del _name, _desc


# --- evaluation sets --------------------------------------------------------------------


def load_mmlu(root: Root = None, per_subject: int | None = None, seed: int = 0) -> MCDataset:
    """CAA's two-choice MMLU subsample (57 subjects x 10 = 570 items, category = subject).

    ``per_subject`` draws that many items per subject (seeded, kept in file order). The
    paper used 30 per subject; this file has 10, so larger values raise.
    """
    data = load_caa_mc_json(find_data_file("caa/datasets/test/mmlu/mmlu.json", root), name="mmlu")
    if per_subject is None:
        return data
    rng = random.Random(seed)
    keep: list[int] = []
    for cat in data.categories:
        idx = [i for i, item in enumerate(data.items) if item.category == cat]
        if not 0 < per_subject <= len(idx):
            raise ConfigError(
                f"per_subject={per_subject} but subject {cat!r} has {len(idx)} items in "
                f"{data.source}; use 1..{len(idx)} or None for all."
            )
        keep.extend(rng.sample(idx, per_subject))
    return MCDataset(tuple(data.items[i] for i in sorted(keep)), data.name, data.source, data.split)


def load_truthfulqa_ab(root: Root = None) -> MCDataset:
    """CAA's two-choice TruthfulQA (817 items, category = TruthfulQA category); the 5 items
    with an empty incorrect answer are skipped (listed in ``.skipped``), leaving 812."""
    path = find_data_file("caa/datasets/test/truthfulqa/truthful_qa.json", root)
    return load_caa_mc_json(path, name="truthfulqa-ab", skip={"empty"})


def load_advbench(root: Root = None) -> AdvBench:
    """AdvBench harmful behaviors (520 goal/target rows) and harmful strings (574)."""
    base = "advbench/data/advbench"
    behaviors = find_data_file(f"{base}/harmful_behaviors.csv", root)
    strings = find_data_file(f"{base}/harmful_strings.csv", root)
    return AdvBench(
        load_advbench_behaviors(behaviors), load_advbench_strings(strings), str(behaviors.parent)
    )


#: CAA behaviors with a ``test_dataset_open_ended.json`` (50 questions each).
CAA_OPEN_ENDED = (
    "corrigible-neutral-HHH",
    "hallucination",
    "power-seeking-inclination",
    "refusal",
    "survival-instinct",
)
_OPEN_ENDED_ALIASES = {"power-seeking": "power-seeking-inclination"}


def load_open_ended(name: str, root: Root = None) -> tuple[str, ...]:
    """CAA's open-ended test questions of a behavior (``power-seeking`` is accepted for
    ``power-seeking-inclination``)."""
    caa = _OPEN_ENDED_ALIASES.get(name, name)
    if caa not in CAA_OPEN_ENDED:
        raise unknown_name("open-ended set", name, (*CAA_OPEN_ENDED, *_OPEN_ENDED_ALIASES))
    path = find_data_file(f"caa/datasets/test/{caa}/test_dataset_open_ended.json", root)
    return load_caa_open_ended_json(path)


__all__ = [
    "BEHAVIORS",
    "CAA_OPEN_ENDED",
    "BehaviorSpec",
    "get_behavior",
    "list_behaviors",
    "load_advbench",
    "load_mmlu",
    "load_open_ended",
    "load_pairs",
    "load_truthfulqa_ab",
    "load_truthfulqa_mc",
    "register_behavior",
    "split_indices",
]
