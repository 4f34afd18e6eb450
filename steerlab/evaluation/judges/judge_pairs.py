"""Which pairs a classifier judge was fitted on, and whether a vector was trained on them.

A classifier judge fitted on the pairs a steering vector averages grades the vector with
its own training signal. ``ClassifierJudge.fit(vector_train=)`` refuses that at fit
time; this module keeps the check possible later, when the judge is a saved file and the
vectors are other files: the judge records where its pairs came from
(:func:`judge_pairs_record`: the behavior, the slice of its train split, a content hash),
and :func:`judge_overlaps` rebuilds each vector's training pairs from its provenance
(the fingerprints of every pair it saw, which steerlab's fitters and trainers record;
for older files, the *first* ``n_train`` train pairs and, for BiPO, the ``n_val`` after
them) and reports the vectors whose pairs meet the judge's.

The judge's validation on held-out pairs is :mod:`.validation`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from steerlab.data.behaviors import load_pairs
from steerlab.data.fingerprints import FINGERPRINTS_KEY, pair_fingerprint, read_fingerprints
from steerlab.data.pairs import BehaviorData, content_hash
from steerlab.errors import ConfigError, DataFormatError
from steerlab.vectors.vector import SteeringVector


def judge_pairs_record(
    data: BehaviorData, n_judge: int, split: Any, seed: int = 0
) -> dict[str, Any]:
    """Where ``split.judge`` (of ``data.split(..., n_judge=n_judge)``, ``data`` loaded with
    ``load_pairs(behavior, seed=seed)``) comes from: the last
    ``n_judge`` train pairs of ``data`` (``start``/``stop`` index its train split), less
    those identical to one of the first ``dedup_first`` (the split's vector pairs: the
    BiPO files repeat rows), their count and a content hash."""
    n = len(data.train)
    return {"behavior": data.name, "seed": seed, "split": "train", "start": n - n_judge,
            "stop": n, "dedup_first": len(split.train), "n_pairs": len(split.judge),
            "hash": content_hash(list(split.judge))}  # fmt: skip


def fit_split_judge(
    data: BehaviorData, split: Any, n_judge: int, *, seed: int = 0, **fit_kwargs: Any
) -> Any:
    """A :class:`~steerlab.evaluation.judges.classifier.ClassifierJudge` fitted on
    ``split.judge`` (``data.split(..., n_judge=n_judge)``, ``data`` loaded with ``seed``),
    refused if any of its pairs is in ``split.train``, recording where its pairs came
    from (:func:`judge_pairs_record`). ``fit_kwargs`` go to ``ClassifierJudge.fit``
    (``features``, ``embedder``, ``device``...)."""
    from steerlab.evaluation.judges.classifier import ClassifierJudge

    jp = list(split.judge)
    return ClassifierJudge.fit(
        [p.matching for p in jp],
        [p.not_matching for p in jp],
        questions=[p.question for p in jp],
        vector_train=split.train,
        seed=seed,
        behavior=data.name,
        pairs=judge_pairs_record(data, n_judge, split, seed),
        **fit_kwargs,
    )


def recorded_judge_pairs(record: Mapping[str, Any], data: BehaviorData) -> list[Any]:
    """The judge's pairs rebuilt from its :func:`judge_pairs_record`; a
    :class:`~steerlab.errors.DataFormatError` when ``data`` no longer gives the same ones."""
    start, stop = int(record["start"]), int(record["stop"])
    used = set(data.train[: int(record.get("dedup_first", start))].pairs)
    pairs = [p for p in data.train[start:stop] if p not in used]
    if len(pairs) != record.get("n_pairs") or content_hash(pairs) != record.get("hash"):
        raise DataFormatError(
            f"{data.name!r}'s train pairs {start}-{stop} are not the ones the judge was fitted "
            "on (their count or content hash changed)."
        )
    return pairs


def vector_train_pairs(vec: SteeringVector, data: BehaviorData) -> Sequence[Any] | None:
    """The train pairs of ``data`` that ``vec`` was fitted (and validated) on, read from its
    provenance: the first ``n_train`` (+ ``n_val``); None when it does not say, says
    another behavior or split, or carries a hash of its training pairs (``train_hash``,
    or a 64-digit ``dataset_hash``) that the first ``n_train`` do not match."""
    hp = vec.provenance.hyperparameters
    n_train = hp.get("n_train")
    if (
        vec.behavior != data.name
        or not isinstance(n_train, int)
        or hp.get("split", "train") != "train"
    ):
        return None
    claimed = hp.get("train_hash") or vec.provenance.dataset_hash
    if (
        isinstance(claimed, str)
        and len(claimed) == 64
        and content_hash(data.train[:n_train]) != claimed
    ):
        return None  # its hash says it was fitted on other pairs than the first n_train
    n_val = hp.get("n_val", 0)
    n_val = n_val if isinstance(n_val, int) else 0
    return data.train[: n_train + n_val]


def judge_overlaps(
    record: Mapping[str, Any] | None,
    vectors: Sequence[SteeringVector],
    labels: Sequence[str],
) -> tuple[list[str], list[str]]:
    """``(overlaps, unchecked)``: one line per vector whose training pairs include pairs
    the judge was fitted on, and one per vector that could not be checked (its provenance
    names no ``n_train``), or one line for all when the judge records no pairs or the
    data no longer gives them."""
    from steerlab.evaluation.judges.classifier import pair_overlap

    if record is None:
        return [], [
            "any vector: the judge file records no training pairs (saved before "
            "judges recorded them)"
        ]
    behavior, seed = str(record.get("behavior")), int(record.get("seed", 0))
    datasets: dict[int, BehaviorData] = {}

    def data_for(s: int) -> BehaviorData:
        if s not in datasets:
            datasets[s] = load_pairs(behavior, seed=s)
        return datasets[s]

    try:
        judge_pairs = recorded_judge_pairs(record, data_for(seed))
    except (DataFormatError, OSError, KeyError, ValueError) as exc:
        return [], [f"any vector: {exc}"]
    start = int(record["start"])
    judged = {pair_fingerprint(p) for p in judge_pairs}
    overlaps, unchecked = [], []
    for vec, lab in zip(vectors, labels, strict=True):
        prints = vector_fingerprints(vec)
        if prints is not None:  # the fingerprints of every pair it saw: any pairs, any order
            n_mine, n_shared = len(prints), len(judged & prints)
        elif not _behaviors_of(vec.provenance.to_dict()) & {behavior, "unknown"}:
            continue  # fitted on other behaviors' pairs: none of the judge's
        else:
            vec_seed = vec.provenance.hyperparameters.get("seed", 0)
            mine = vector_train_pairs(vec, data_for(vec_seed if isinstance(vec_seed, int) else 0))
            if mine is None:
                unchecked.append(f"{lab}: its provenance does not say which pairs it was fitted on")
                continue
            n_mine = len(mine)
            n_shared = len(pair_overlap([p.matching for p in judge_pairs],
                                        [p.not_matching for p in judge_pairs],
                                        [p.question for p in judge_pairs], mine))  # fmt: skip
        if n_shared:
            overlaps.append(
                f"{lab} was fitted on {n_mine} pairs, {n_shared} of the judge's "
                f"{len(judge_pairs)} among them (the judge uses {behavior} train pairs "
                f"{start}..{int(record['stop']) - 1}; fit vectors on at most the first {start})"
            )
    return overlaps, unchecked


def vector_fingerprints(vec: SteeringVector) -> frozenset[str] | None:
    """The fingerprints of the pairs ``vec`` was fitted on, from its provenance
    (:data:`~steerlab.data.fingerprints.FINGERPRINTS_KEY`); a sum or difference of vectors has the
    union of its parts'. None when it (or one of its parts) does not record them."""
    return _fingerprints_of(vec.provenance.to_dict())


def _parts(provenance: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The provenances of a vector's fitted parts: its own, or for a sum or difference of
    vectors (``method='combination'``) those of the vectors it was made from."""
    hp = provenance.get("hyperparameters") or {}
    if provenance.get("method") == "combination" and "left" in hp and "right" in hp:
        return [*_parts(hp["left"]), *_parts(hp["right"])]
    return [provenance]


def _behaviors_of(provenance: Mapping[str, Any]) -> set[str]:
    """The behaviors of a vector's parts (one, unless it is a sum or difference)."""
    return {str(p.get("behavior", "unknown")) for p in _parts(provenance)}


def _fingerprints_of(provenance: Mapping[str, Any]) -> frozenset[str] | None:
    sets = [read_fingerprints((p.get("hyperparameters") or {}).get(FINGERPRINTS_KEY))
            for p in _parts(provenance)]  # fmt: skip
    if any(s is None for s in sets):
        return None
    return frozenset().union(*(s for s in sets if s is not None))


def judge_pair_notes(
    record: Mapping[str, Any] | None,
    vectors: Sequence[SteeringVector],
    labels: Sequence[str],
    *,
    allow_overlap: bool = False,
) -> list[str]:
    """:func:`judge_overlaps` as a check: a :class:`~steerlab.errors.ConfigError` when
    any vector was fitted on the judge's pairs (unless ``allow_overlap``), else the
    warnings (overlaps allowed, vectors that could not be checked)."""
    overlaps, unchecked = judge_overlaps(record, vectors, labels)
    if overlaps and not allow_overlap:
        raise ConfigError(
            "The classifier judge would grade vectors with their own training pairs: "
            + "; ".join(overlaps)
            + ". Fit the vectors on earlier train pairs (--n-train), fit the judge on other "
            "pairs, or pass allow_judge_overlap=True (CLI: --allow-judge-overlap; recorded "
            "as a warning)."
        )
    return [f"judge pairs overlap: {o}" for o in overlaps] + [
        f"judge pairs not checked for {u}" for u in unchecked
    ]
