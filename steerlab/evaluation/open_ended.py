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

With a ``judge`` the rows are then graded; verdicts go to a second JSONL file
(``<out>.scores.jsonl``) keyed the same way (plus the judge name), resumable too.
Unparseable and failed verdicts are kept and counted, never silently dropped:
:func:`summarize_open_ended` reports the mean score over ``ok`` verdicts and the shares of
unparseable / error ones.
"""

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from steerlab.errors import ConfigError, DataFormatError, EmptyInputError
from steerlab.evaluation.judges.base import Judge, JudgeRequest
from steerlab.evaluation.multipliers import (
    DEFAULT_MULTIPLIERS,
    Condition,
    VectorsArg,
    conditions,
    summarize,
)
from steerlab.models.model import SteerlabModel
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
#: Row fields that must agree between a file and a rerun that resumes it.
_SETTINGS = ("model_id", "max_new_tokens", "system_prompt")


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


# --- JSONL with resume --------------------------------------------------------------------


def read_jsonl(path: "str | Path", *, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a missing file is empty.

    The last line is ignored when it is cut short (no final newline) or does not parse:
    that is what a crash mid-write leaves. With ``repair=True`` it is also cut from the
    file, so that appending starts on a clean line; a file steerlab did not write (a row
    without ``key``, or a cut-off line that does not start like steerlab's rows) raises
    :class:`~steerlab.errors.ConfigError` and is left untouched. A malformed line before the last one
    raises :class:`~steerlab.errors.DataFormatError` naming the line.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")  # the piece after the last newline is b"" or a cut-off row
    rows: list[dict[str, Any]] = []
    good_end = 0  # byte offset just after the last line that was kept
    offset = 0
    for i, line in enumerate(lines):
        complete = i < len(lines) - 1
        offset += len(line) + complete
        if not line.strip():
            good_end = offset if complete else good_end
            continue
        try:
            row = json.loads(line) if complete else None
        except ValueError as exc:
            row, error = None, str(exc)
        else:
            error = "not a JSON object" if complete and not isinstance(row, dict) else ""
        if isinstance(row, dict) and not error:
            rows.append(row)
            good_end = offset
            continue
        last_row = not any(rest.strip() for rest in lines[i + 1 :])
        if not last_row:
            if repair and not rows:  # a foreign file, rather than a damaged one of ours
                _check_own_file(path, rows, line)
            raise DataFormatError(
                f"{path}:{i + 1}: malformed JSONL row ({error}); fix or delete that line, "
                "or write to a new file."
            )
        break
    if repair:
        _check_own_file(path, rows, data[good_end:])
    if repair and good_end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return rows


_OWN_ROW_START = b'{"key": '


def _check_own_file(path: Path, rows: list[dict[str, Any]], tail: bytes) -> None:
    """Refuse to append to (or cut) a file steerlab did not write. Every row steerlab writes
    is a JSON object whose first field is ``key``, so a crash can only leave a cut-off
    line that starts the same way."""
    foreign = next((i for i, r in enumerate(rows) if "key" not in r), None)
    tail = tail.strip()
    if foreign is not None or (tail and not tail.startswith(_OWN_ROW_START)):
        raise ConfigError(
            f"{path} exists but is not a results file written by steerlab (its rows lack the "
            "'key' field steerlab writes first); steerlab will not append to or cut it. "
            "Pass another output path."
        )


def append_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows (one JSON object a line), then flush and fsync."""
    with open(path, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, allow_nan=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


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
    multipliers: "float | Sequence[float]" = DEFAULT_MULTIPLIERS,
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

    Returns one row per (vector, multiplier, question) in condition order, with columns
    ``key, vector, method, layer, multiplier, item, question, completion, n_tokens,
    behavior, model_id, max_new_tokens, system_prompt`` and, with a judge, ``judge,
    score`` (NaN unless ok), ``status, raw, detail, is_unparseable, is_error``.
    """
    qs = list(questions)
    if not qs:
        raise EmptyInputError("run_open_ended() got no questions.")
    for i, q in enumerate(qs):
        if not isinstance(q, str) or not q.strip():
            raise ConfigError(f"Question {i} is {q!r}; questions must be non-empty strings.")
    if len(set(qs)) != len(qs):
        raise ConfigError("The questions contain duplicates; each row is keyed by its question.")
    conds = conditions(vectors, multipliers)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys_prompt = model.system_prompt if system_prompt is None else system_prompt
    settings = {
        "model_id": model.model_id,
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
    if judge is not None:
        frame = judge_rows(
            frame, judge, scores_path_for(path), examples=examples, progress=progress
        )
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
) -> list[dict[str, Any]]:
    reuse = not cond.steered and all(q in unsteered for q in questions)
    if reuse:
        completions = [unsteered[q]["completion"] for q in questions]
        n_tokens = [unsteered[q]["n_tokens"] for q in questions]
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
        }
        for q, item, text, n in zip(questions, items, completions, n_tokens)
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
) -> pd.DataFrame:
    """Grade each row's completion with ``judge``; verdicts are appended (resumably) to
    ``scores_path`` keyed by ``(key, judge.name)`` and merged into a copy of ``frame``."""
    path = Path(scores_path)
    existing = read_jsonl(path, repair=True)
    verdicts = {(r["key"], r.get("judge")): r for r in existing if "key" in r}
    todo = [r for r in frame.to_dict("records") if (r["key"], judge.name) not in verdicts]
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
                "score": res.score,
                "status": res.status,
                "raw": res.raw,
                "detail": res.detail,
            }
            for row, res in zip(chunk, results, strict=True)
        ]
        append_jsonl(path, new)
        verdicts.update({(v["key"], v["judge"]): v for v in new})
    out = frame.copy()
    got = [verdicts[(k, judge.name)] for k in out["key"]]
    out["judge"] = judge.name
    out["score"] = [float(v["score"]) if v["status"] == "ok" else float("nan") for v in got]
    out["status"] = [v["status"] for v in got]
    out["raw"] = [v["raw"] for v in got]
    out["detail"] = [v["detail"] for v in got]
    out["is_unparseable"] = (out["status"] == "unparseable").astype(float)
    out["is_error"] = (out["status"] == "error").astype(float)
    return out


def summarize_open_ended(frame: pd.DataFrame) -> pd.DataFrame:
    """Tidy summary of judged rows: ``judge_score`` (mean over ok verdicts; ``n`` = how
    many were scored), ``unparseable_rate`` and ``error_rate`` per condition."""
    if "score" not in frame.columns:
        raise ConfigError("These rows have no judge scores; pass judge= to run_open_ended().")
    return summarize(frame, OPEN_ENDED_METRICS)
