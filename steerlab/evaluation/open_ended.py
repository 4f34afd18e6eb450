"""Open-ended steered generation (the paper's main evaluation), resumable, then judged.

:func:`run_open_ended` answers every question greedily (the paper: up to 200 new tokens)
under every (vector, multiplier) and appends one JSON row per (vector, multiplier,
question) to a JSONL file as it goes: each batch is written, flushed and fsynced before
the next one starts. Every row has a stable ``key`` built from the vector's label and a
fingerprint of its directions, the multiplier and a hash of the question, so a rerun with
the same arguments reads the file, skips the keys already there and appends only the
rest: after any number of interruptions each row is in the file exactly once. A last line
cut short by a crash is dropped (and truncated away before appending); a malformed line
elsewhere is an error naming the line.

Every answer also gets coherence measures (:mod:`steerlab.evaluation.coherence`):
``perplexity`` under the unsteered model and ``repetition``, stored in its row, and
``is_incoherent`` / ``incoherent_reason`` from the ``coherence`` gate.

With a ``judge`` the rows are then graded; verdicts go to a second JSONL file
(``<out>.scores.jsonl``), resumable too. Each verdict row stores the judge's fingerprint
(:func:`~steerlab.evaluation.judges.base.judge_fingerprint`: kind, model, endpoint,
temperature, rubric hash, classifier weights hash...) and its id; a verdict is reused only
by a judge with the same fingerprint, so a resumed run with another judge model, endpoint,
temperature, rubric or refitted classifier rescores (``on_mismatch="rescore"``, the
default: the new verdicts are appended next to the old ones) or stops
(``on_mismatch="error"``), never reuses. Unparseable and failed verdicts are kept and
counted, never silently dropped: :func:`summarize_open_ended` reports the mean score over
``ok`` verdicts together with the shares of unparseable, failed and incoherent answers.
"""

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from steerlab.errors import ConfigError, EmptyInputError
from steerlab.evaluation.coherence import CoherenceGate, add_coherence, answer_perplexity
from steerlab.evaluation.judges.base import (
    Judge,
    JudgeRequest,
    fingerprint_diff,
    fingerprint_id,
    judge_fingerprint,
    self_judge_warning,
)
from steerlab.evaluation.judges.judge_pairs import judge_pair_notes
from steerlab.evaluation.multipliers import (
    DEFAULT_MULTIPLIERS,
    Condition,
    MultipliersArg,
    VectorsArg,
    as_vector_list,
    conditions,
    summarize,
)
from steerlab.evaluation.results_jsonl import append_jsonl, read_jsonl
from steerlab.evaluation.strengths import at_strengths, check_strength_args, summarize_strengths
from steerlab.models.model import SteerlabModel, dtype_name
from steerlab.steering.generate import generate
from steerlab.utils.progress import progress_bar
from steerlab.vectors.vector import SteeringVector

#: The paper's generation budget for open-ended answers.
PAPER_MAX_NEW_TOKENS = 200
#: metric name -> per-row column of the frame :func:`run_open_ended` returns.
OPEN_ENDED_METRICS = {
    "judge_score": "score",
    "unparseable_rate": "is_unparseable",
    "error_rate": "is_error",
}
#: Added when the rows carry coherence measures.
COHERENCE_METRICS = {"incoherent_rate": "is_incoherent"}
ON_MISMATCH = ("rescore", "error")
#: Row fields that must agree between a file and a rerun that resumes it.
_SETTINGS = ("model_id", "dtype", "max_new_tokens", "system_prompt")


def question_hash(question: str) -> str:
    """First 12 hex digits of the sha256 of the question text."""
    return hashlib.sha256(question.encode("utf-8")).hexdigest()[:12]


def vector_fingerprint(vec: SteeringVector | None) -> str:
    """First 10 hex digits of a sha256 over the vector's sites and fp32 direction bytes
    (``"none"`` for the unsteered condition)."""
    if vec is None:
        return "none"
    h = hashlib.sha256()
    for site, t in sorted(vec.directions.items()):
        h.update(str(site).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def row_key(cond: Condition, question: str) -> str:
    """The stable key of one (vector, multiplier, question) row."""
    return f"{cond.label}@{vector_fingerprint(cond.vector)}|m={cond.multiplier:g}|q={question_hash(question)}"


def scores_path_for(out_path: "str | Path") -> Path:
    """``answers.jsonl`` -> ``answers.scores.jsonl``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".scores.jsonl")


# --- generation ---------------------------------------------------------------------------


def _check_settings(path: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    for row in rows:
        for k in _SETTINGS:
            if k in row and row[k] != settings[k]:
                raise ConfigError(
                    f"{path} holds rows generated with {k}={row[k]!r}, but this run uses "
                    f"{k}={settings[k]!r}; resuming would mix settings. Pass a new out_path "
                    "or the original settings."
                )


def run_open_ended(
    model: SteerlabModel,
    questions: Sequence[str],
    vectors: VectorsArg,
    multipliers: MultipliersArg = DEFAULT_MULTIPLIERS,
    out_path: "str | Path" = "open_ended.jsonl",
    *,
    max_new_tokens: int = PAPER_MAX_NEW_TOKENS,
    batch_size: int = 8,
    judge: Judge | None = None,
    behavior: str = "unknown",
    examples: Mapping[str, tuple[str, str]] | None = None,
    system_prompt: str | None = None,
    progress: bool = True,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
    coherence: CoherenceGate | None = CoherenceGate(),
    on_mismatch: str = "rescore",
    strengths: MultipliersArg | None = None,
    allow_judge_overlap: bool = False,
) -> pd.DataFrame:
    """Greedy steered answers to ``questions`` for each (vector, multiplier), resumable.

    Args:
        questions: the prompts (user turn; the model's system prompt applies).
        vectors: a vector, a list of them, or None (unsteered answers only).
        multipliers: the paper's ``-2, -1, 0, 1, 2`` by default. Multiplier 0 is the
            unsteered model: it is generated once per question and shared by all vectors.
        out_path: the answers JSONL (created, or resumed when it exists).
        max_new_tokens: generation budget (paper: 200).
        batch_size: questions per generation batch (and per write).
        judge: grade the answers afterwards (e.g. ``make_judge("openai", ...)``).
        behavior: the rubric the judge applies (``"power-seeking"``...).
        examples: question -> (matching, not_matching) answers shown to the judge as the
            score-4 / score-1 examples (the paper shows them); optional.
        on_batch: called with the rows of each batch once they are on disk.
        coherence: the gate that marks answers incoherent (None: no coherence measures).
        on_mismatch: what to do with stored verdicts of a judge with another
            fingerprint: ``"rescore"`` or ``"error"`` (see :func:`judge_rows`).
        strengths: instead of ``multipliers``, answer at these strengths (|k v| / mean
            ||h|| at each site: matched norm; :func:`~steerlab.evaluation.strengths.
            at_strengths`). The vectors are rescaled to norm units, so their rows are keyed
            by the rescaled directions (which carry the measured norms) and never taken
            for rows of the same vector at a raw multiplier (include 0 in the list for
            the unsteered answers, the baseline of any change); on disk such a row has
            ``strength`` and the multiplier of the rescaled vector (equal to it). The
            returned frame has a ``strength`` column and ``multiplier`` converted back to
            the vector as given (NaN where its sites need different ones).
        allow_judge_overlap: a classifier judge that records its training pairs refuses
            vectors whose provenance shows they were fitted on some of them
            (:func:`~steerlab.evaluation.judges.judge_pairs.judge_pair_notes`); True
            judges them anyway, with a warning.

    A ``"local"`` judge built on ``model`` itself is refused unless it was built with
    ``allow_self_judge=True``; then a warning is issued and kept in the ``judge_warning``
    column (and in the summary's ``attrs["warnings"]``).

    Returns one row per (vector, multiplier, question) in condition order, with columns
    ``key, vector, method, layer, multiplier, item, question, completion, n_tokens,
    behavior, model_id, max_new_tokens, system_prompt``, with ``coherence`` also
    ``perplexity`` (of the answer under the unsteered model), ``repetition``,
    ``is_incoherent, incoherent_reason`` and, with a judge, ``judge, judge_id, score``
    (NaN unless ok), ``status, raw, detail, is_unparseable, is_error, judge_warning``.
    """
    strength_list = check_strength_args(multipliers, strengths)
    if strength_list is not None:
        if not as_vector_list(vectors):
            raise ConfigError("strengths= scales vectors: pass at least one vector.")
        kw = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, judge=judge,
                  behavior=behavior, examples=examples, system_prompt=system_prompt,
                  progress=progress, on_batch=on_batch, coherence=coherence,
                  on_mismatch=on_mismatch, allow_judge_overlap=allow_judge_overlap)  # fmt: skip
        return at_strengths(
            model,
            vectors,
            strength_list,
            lambda vecs, mults: run_open_ended(model, questions, vecs, mults, out_path, **kw),
        )
    qs = list(questions)
    if not qs:
        raise EmptyInputError("run_open_ended() got no questions.")
    for i, q in enumerate(qs):
        if not isinstance(q, str) or not q.strip():
            raise ConfigError(f"Question {i} is {q!r}; questions must be non-empty strings.")
    if len(set(qs)) != len(qs):
        raise ConfigError("The questions contain duplicates; each row is keyed by its question.")
    conds = conditions(vectors, multipliers)
    if on_mismatch not in ON_MISMATCH:
        raise ConfigError(f"on_mismatch={on_mismatch!r}; use 'rescore' or 'error'.")
    self_warning = self_judge_warning(judge, model)  # refuses an unflagged self-judge
    notes = [self_warning] if self_warning else []
    if getattr(judge, "name", None) == "classifier":  # refuses vectors fitted on its pairs
        steered = {c.label: c.vector for c in conds if c.vector is not None}
        if steered:
            notes += judge_pair_notes(getattr(judge, "pairs", None), list(steered.values()),
                                      list(steered), allow_overlap=allow_judge_overlap)  # fmt: skip
    for note in notes:
        warnings.warn(note, stacklevel=2)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys_prompt = model.system_prompt if system_prompt is None else system_prompt
    settings = {
        "model_id": model.model_id,
        "dtype": dtype_name(model.dtype),  # bf16 weights answer otherwise
        "max_new_tokens": int(max_new_tokens),
        "system_prompt": sys_prompt,
    }
    existing = read_jsonl(path, repair=True)
    _check_settings(path, existing, settings)
    done = {row["key"]: row for row in existing if "key" in row}
    # Multiplier 0 is the same unsteered model for every vector: reuse its answers.
    unsteered = {
        row["question"]: row for row in existing if float(row.get("multiplier", 1.0)) == 0.0
    }
    batches: list[tuple[Condition, list[int]]] = []
    for cond in conds:
        pending = [i for i, q in enumerate(qs) if row_key(cond, q) not in done]
        batches += [(cond, pending[s : s + batch_size]) for s in range(0, len(pending), batch_size)]
    for cond, idx in progress_bar(batches, desc="open-ended", enabled=progress):
        rows = _answer_batch(
            model,
            cond,
            [qs[i] for i in idx],
            idx,
            unsteered,
            settings,
            behavior,
            batch_size,
            sys_prompt,
            coherence is not None,
        )
        append_jsonl(path, rows)
        for row in rows:
            done[row["key"]] = row
            if row["multiplier"] == 0.0:
                unsteered[row["question"]] = row
        if on_batch is not None:
            on_batch(rows)
    frame = pd.DataFrame([done[row_key(c, q)] for c in conds for q in qs])
    frame["layer"] = frame["layer"].astype(object)
    if coherence is not None:
        frame = add_coherence(frame, coherence, model, sys_prompt, batch_size)
    if judge is not None:
        frame = judge_rows(frame, judge, scores_path_for(path), examples=examples,
                           progress=progress, on_mismatch=on_mismatch)  # fmt: skip
        frame["judge_warning"] = "\n".join(notes)  # one line per warning
    return frame


def _answer_batch(
    model: SteerlabModel,
    cond: Condition,
    questions: list[str],
    items: list[int],
    unsteered: dict[str, dict[str, Any]],
    settings: dict[str, Any],
    behavior: str,
    batch_size: int,
    system_prompt: str | None,
    measure: bool = True,
) -> list[dict[str, Any]]:
    reuse = not cond.steered and all(q in unsteered for q in questions)
    in_units = cond.vector is not None and "norm_units" in cond.vector.provenance.hyperparameters
    ppl: list[float | None] = [None] * len(questions)
    if reuse:
        completions = [unsteered[q]["completion"] for q in questions]
        n_tokens = [unsteered[q]["n_tokens"] for q in questions]
        ppl = [unsteered[q].get("perplexity") for q in questions]
    else:
        res = generate(
            model,
            questions,
            settings["max_new_tokens"],
            batch_size=batch_size,
            system_prompt=system_prompt,
            steering=cond.vector if cond.steered else None,
            multiplier=cond.multiplier,
        )
        completions = list(res.texts)
        n_tokens = [len(t) for t in res.token_ids]
    if measure and any(p is None for p in ppl):  # generate() left no hook: unsteered model
        got = answer_perplexity(model, questions, completions, batch_size=batch_size,
                                system_prompt=system_prompt)  # fmt: skip
        ppl = [None if x != x else round(float(x), 4) for x in got]  # NaN -> None (JSON)
    return [
        {
            "key": row_key(cond, q),
            "vector": cond.label,
            "method": cond.method,
            "layer": cond.layer,
            "multiplier": cond.multiplier,
            "item": item,
            "question": q,
            "completion": text,
            "n_tokens": n,
            "behavior": behavior,
            **settings,
            **({"perplexity": p} if measure else {}),
            **({"strength": cond.multiplier} if in_units else {}),
        }
        for q, item, text, n, p in zip(questions, items, completions, n_tokens, ppl)
    ]


# --- judging ------------------------------------------------------------------------------


def judge_rows(
    frame: pd.DataFrame,
    judge: Judge,
    scores_path: "str | Path",
    *,
    examples: Mapping[str, tuple[str, str]] | None = None,
    batch_size: int = 32,
    progress: bool = True,
    on_mismatch: str = "rescore",
) -> pd.DataFrame:
    """Grade each row's completion with ``judge``; verdicts are appended (resumably) to
    ``scores_path`` and merged into a copy of ``frame``.

    Each verdict row stores ``judge`` (the name), ``judge_id`` and ``judge_fingerprint``
    (:func:`~steerlab.evaluation.judges.base.judge_fingerprint`). A stored verdict is
    reused only when its ``judge_id`` is this judge's. Verdicts for the same rows by a
    judge of the same kind with another fingerprint (or from before fingerprints) are
    stale: ``on_mismatch="rescore"`` grades the rows again and appends the new verdicts,
    ``"error"`` raises :class:`~steerlab.errors.ConfigError` naming the fields that differ.
    """
    if on_mismatch not in ON_MISMATCH:
        raise ConfigError(f"on_mismatch={on_mismatch!r}; use 'rescore' or 'error'.")
    path = Path(scores_path)
    fp = judge_fingerprint(judge)
    fid = fingerprint_id(fp)
    existing = read_jsonl(path, repair=True)
    verdicts = {(r["key"], r.get("judge_id")): r for r in existing if "key" in r}
    keys = set(frame["key"])
    if on_mismatch == "error":
        stale = [r for r in existing if r.get("key") in keys and r.get("judge") == judge.name
                 and r.get("judge_id") != fid]  # fmt: skip
        if stale:
            old = stale[0].get("judge_fingerprint")
            diff = "; ".join(fingerprint_diff(old, fp)) if old else "stored before fingerprints"
            raise ConfigError(
                f"{path} holds {len(stale)} verdicts for these answers by a {judge.name!r} judge "
                f"with another fingerprint ({diff}); they are not reused. Rescore with "
                "on_mismatch='rescore', use the original judge, or another out_path."
            )
    todo = [r for r in frame.to_dict("records") if (r["key"], fid) not in verdicts]
    examples = examples or {}
    starts = range(0, len(todo), batch_size)
    for start in progress_bar(starts, desc=f"judge ({judge.name})", enabled=progress):
        chunk = todo[start : start + batch_size]
        requests = []
        for row in chunk:
            match, other = examples.get(row["question"], (None, None))
            requests.append(
                JudgeRequest(row["behavior"], row["question"], row["completion"], match, other)
            )
        results = judge.score(requests)
        new = [
            {
                "key": row["key"],
                "judge": judge.name,
                "judge_id": fid,
                "judge_fingerprint": fp,
                "score": res.score,
                "status": res.status,
                "raw": res.raw,
                "detail": res.detail,
            }
            for row, res in zip(chunk, results, strict=True)
        ]
        append_jsonl(path, new)
        verdicts.update({(v["key"], fid): v for v in new})
    out = frame.copy()
    got = [verdicts[(k, fid)] for k in out["key"]]
    out["judge"] = judge.name
    out["judge_id"] = fid
    out["score"] = [float(v["score"]) if v["status"] == "ok" else float("nan") for v in got]
    out["status"] = [v["status"] for v in got]
    out["raw"] = [v["raw"] for v in got]
    out["detail"] = [v["detail"] for v in got]
    out["is_unparseable"] = (out["status"] == "unparseable").astype(float)
    out["is_error"] = (out["status"] == "error").astype(float)
    return out


def summarize_open_ended(frame: pd.DataFrame, *, exclude_incoherent: bool = False) -> pd.DataFrame:
    """Tidy summary of judged rows per condition: ``judge_score`` (mean over ok verdicts;
    ``n`` = how many were scored) always next to ``unparseable_rate`` and ``error_rate``
    and, when the rows carry coherence measures, ``incoherent_rate``.

    ``exclude_incoherent=True`` computes ``judge_score`` over the coherent answers only
    (the rates still count every answer). Warnings recorded in the rows (a self-judging
    local judge) are in ``attrs["warnings"]``.
    """
    if "score" not in frame.columns:
        raise ConfigError("These rows have no judge scores; pass judge= to run_open_ended().")
    metrics = dict(OPEN_ENDED_METRICS)
    has_coherence = "is_incoherent" in frame.columns
    if has_coherence:
        metrics.update(COHERENCE_METRICS)
    if exclude_incoherent:
        if not has_coherence:
            raise ConfigError(
                "exclude_incoherent=True needs coherence measures; run run_open_ended() "
                "with coherence=CoherenceGate() (the default)."
            )
        frame = frame.assign(score=frame["score"].where(frame["is_incoherent"] == 0.0))
    out = (summarize_strengths if "strength" in frame.columns else summarize)(frame, metrics)
    notes = frame["judge_warning"] if "judge_warning" in frame.columns else []
    out.attrs["warnings"] = sorted({w for n in notes if n for w in str(n).splitlines()})
    return out
