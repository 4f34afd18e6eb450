"""The judge protocol: requests in, 1-4 scores out, failures counted rather than dropped.

A judge grades a batch of :class:`JudgeRequest` (behavior, question, the answer to grade,
optional reference answers) and returns one :class:`JudgeResult` per request, in order.
Every result keeps the judge's raw output and a status, so :func:`summarize` can report
how many answers were unparseable or failed instead of silently averaging the rest.

Judges are built by name through :data:`~steerlab.evaluation.judges.JUDGES` /
:func:`~steerlab.evaluation.judges.make_judge`; each implementation lives in its own module
and is registered in the package's ``__init__``.

Every judge also has a ``fingerprint()``: a JSON dict of everything its verdicts depend on
(kind, model, endpoint, temperature, rubric prompt hash, classifier weights hash...).
:func:`judge_fingerprint` reads it and :func:`fingerprint_id` hashes it; stored verdicts
are reused only under the same fingerprint (see
:func:`~steerlab.evaluation.open_ended.judge_rows`).
"""

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from steerlab.errors import ConfigError

Status = Literal["ok", "unparseable", "error"]
STATUSES: tuple[str, ...] = ("ok", "unparseable", "error")


@dataclass(frozen=True)
class JudgeRequest:
    """One answer to grade.

    Attributes:
        behavior: behavior name whose rubric applies (e.g. ``"power-seeking"``).
        question: the prompt the model answered.
        answer: the model's answer to grade.
        matching_example: an answer that shows the behavior (shown as a score-4 example).
        not_matching_example: an answer that rejects it (shown as a score-1 example).
    """

    behavior: str
    question: str
    answer: str
    matching_example: str | None = None
    not_matching_example: str | None = None

    def __post_init__(self) -> None:
        for field in ("behavior", "question", "answer"):
            value = getattr(self, field)
            if not isinstance(value, str):
                raise ConfigError(
                    f"JudgeRequest.{field} must be a str, got {type(value).__name__} "
                    f"({value!r}); convert it with str() or fix the data row."
                )
        if not self.behavior:
            raise ConfigError(
                "JudgeRequest.behavior is empty; pass a behavior name such as 'power-seeking'."
            )
        for field in ("matching_example", "not_matching_example"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, str):
                raise ConfigError(
                    f"JudgeRequest.{field} must be a str or None, got {type(value).__name__} ({value!r})."
                )


@dataclass(frozen=True)
class JudgeResult:
    """The verdict on one request.

    Attributes:
        score: the score on the 1-4 scale, or None unless ``status == "ok"``.
        raw: the judge's raw output (reply text, probability, matched marker...).
        status: ``"ok"`` (scored), ``"unparseable"`` (the judge replied but no score could
            be read) or ``"error"`` (no reply: HTTP error, endpoint down after retries...).
        detail: a human-readable explanation for non-ok results.
    """

    score: float | None
    raw: str
    status: Status
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ConfigError(
                f"JudgeResult.status {self.status!r} is not one of {', '.join(STATUSES)}."
            )
        if self.status == "ok":
            if self.score is None or not math.isfinite(float(self.score)):
                raise ConfigError(
                    f"JudgeResult with status 'ok' needs a finite score, got {self.score!r}; "
                    "use status 'unparseable' or 'error' instead."
                )
        elif self.score is not None:
            raise ConfigError(
                f"JudgeResult with status {self.status!r} must have score=None, got {self.score!r}."
            )


@runtime_checkable
class Judge(Protocol):
    """Anything that grades a batch of requests, one result per request, in order."""

    name: str

    def score(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]: ...


def text_hash(value: Any, n: int = 16) -> str:
    """First ``n`` hex digits of the sha256 of ``value``'s canonical JSON (sorted keys)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def judge_fingerprint(judge: Any) -> dict[str, Any]:
    """What ``judge``'s verdicts depend on, as a JSON-able dict with at least ``kind``.

    Calls ``judge.fingerprint()`` when the judge has one (every steerlab judge does). A
    judge without it is identified by its ``name`` and class only, so changing its
    settings cannot be detected: give your own judges a ``fingerprint()`` method.
    """
    method = getattr(judge, "fingerprint", None)
    if callable(method):
        fp = dict(method())
    else:
        cls = type(judge)
        fp = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    fp.setdefault("kind", str(getattr(judge, "name", type(judge).__name__)))
    try:
        json.dumps(fp, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"The fingerprint of judge {fp['kind']!r} is not JSON ({exc}); return only "
            "str / number / bool / None / list / dict values from fingerprint()."
        ) from None
    return fp


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    """A 16-hex-digit id of a judge fingerprint (stored next to every verdict)."""
    return text_hash(fingerprint)


def fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Fields whose values differ between two fingerprints, as ``'field: old -> new'``."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def self_judge_warning(judge: Any, model: Any) -> str | None:
    """None unless ``judge`` grades with ``model`` itself (a local judge built on the
    evaluated model). Then: refused unless the judge was built with
    ``allow_self_judge=True``, and the warning text to record otherwise."""
    if judge is None or model is None or getattr(judge, "model", None) is not model:
        return None
    name = getattr(model, "model_id", type(model).__name__)
    if not getattr(judge, "allow_self_judge", False):
        raise ConfigError(
            f"The {getattr(judge, 'name', 'local')!r} judge would grade {name}'s answers with "
            f"{name} itself. Use another judge model (make_judge('local', model=other) / "
            "--judge-model NAME), or allow it explicitly with allow_self_judge=True "
            "(CLI: --self-judge); it is then recorded as a warning."
        )
    return (
        f"self-judged: {name} graded its own answers (allow_self_judge=True); a model "
        "judging itself is biased towards its own outputs, so read the scores with care."
    )


def summarize(results: Iterable[JudgeResult]) -> dict[str, Any]:
    """Aggregate results without hiding failures.

    Returns a dict with ``mean`` (over ok scores only; None when there are none), ``std``
    (population std over ok scores, None when there are none), ``n`` (all results),
    ``n_scored``, ``n_unparseable`` and ``n_error``; ``n == n_scored + n_unparseable +
    n_error`` always.
    """
    results = list(results)
    scores = [float(r.score) for r in results if r.status == "ok" and r.score is not None]
    n_unparseable = sum(r.status == "unparseable" for r in results)
    n_error = sum(r.status == "error" for r in results)
    mean = sum(scores) / len(scores) if scores else None
    std = (
        math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        if scores and mean is not None
        else None
    )
    return {
        "mean": mean,
        "std": std,
        "n": len(results),
        "n_scored": len(scores),
        "n_unparseable": n_unparseable,
        "n_error": n_error,
    }
