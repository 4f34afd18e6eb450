"""The scheduler: one thread owns the model and a :class:`BatchedDecoder`; handlers submit.

HTTP handlers never touch the model. They :meth:`Scheduler.submit` a :class:`Job` (a
:class:`~steerlab.steering.batched.RowSpec` plus a callback) and receive, on that
callback and from the scheduler thread, one :class:`~steerlab.steering.batched.StepEvent`
per generated token and a last event with ``done=True`` (or a :class:`JobError`). Jobs
wait in a bounded queue (full: :class:`QueueFullError`, HTTP 503) and enter the running
batch at decoding-step boundaries; a job past its deadline or cancelled (client gone,
stop sequence reached) leaves the batch at the next step.
"""

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.models.model import SteerlabModel
from steerlab.serve.config import ServeConfig
from steerlab.serve.schema import RequestError
from steerlab.steering.batched import BatchedDecoder, RowSpec, StepEvent


class QueueFullError(RequestError):
    """The wait queue is full (HTTP 503 with a Retry-After header)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, status=503, type="server_error", code="queue_full")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class JobError:
    """A job that ended without finishing: the HTTP status and error fields to report."""

    status: int
    message: str
    type: str = "server_error"
    code: str | None = None


JobEvent = StepEvent | JobError


@dataclass(eq=False)
class Job:
    """One request for the scheduler: what to generate and where to send the events."""

    id: str
    spec: RowSpec
    emit: Callable[[JobEvent], None]
    timeout_s: float
    arrived: float = field(default_factory=time.monotonic)
    timed_out: bool = False

    @property
    def deadline(self) -> float:
        return self.arrived + self.timeout_s

    def send(self, event: JobEvent) -> None:
        try:
            self.emit(event)
        except Exception:  # a closed event loop or a gone client must not stop the scheduler
            pass


class Scheduler:
    """Owns the model: admits queued jobs into the running batch and steps it."""

    def __init__(self, model: SteerlabModel, config: ServeConfig | None = None) -> None:
        self.model = model
        self.config = config or ServeConfig()
        self._decoder = BatchedDecoder(model, self.config.max_batch_size)
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()  # waiting for a batch slot
        self._running: dict[str, Job] = {}  # in the decoder
        self._cancel: set[str] = set()
        self._enough: set[str] = set()  # jobs ended early on purpose (a stop sequence)
        self._paused = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self.stats = {
            "completed": 0,
            "cancelled": 0,
            "timed_out": 0,
            "rejected": 0,
            "failed": 0,
            "steps": 0,
            "peak_batch": 0,
        }

    # --- called from handler threads -----------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue ``job``; raises :class:`QueueFullError` when the queue is full."""
        with self._cond:
            if self._stop:
                raise RequestError("The server is shutting down.", status=503, type="server_error")
            if len(self._pending) >= self.config.max_queue + max(0, self._free_slots()):
                self.stats["rejected"] += 1
                raise QueueFullError(
                    f"The server is busy: {len(self._running)} requests are generating and "
                    f"{len(self._pending)} are queued (max_queue={self.config.max_queue}). "
                    f"Retry after {self.config.retry_after_s} s.",
                    self.config.retry_after_s,
                )
            self._pending.append(job)
            self._cond.notify()

    def cancel(self, job_id: str, *, completed: bool = False) -> None:
        """Stop a queued or running job at the next step boundary (its last event follows).

        ``completed=True``: the job has what it needs (a stop sequence was reached); it
        counts as completed, not cancelled.
        """
        with self._cond:
            self._cancel.add(job_id)
            if completed:
                self._enough.add(job_id)
            self._cond.notify()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Admit and step nothing inside the block (jobs queue up; deadlines still apply)."""
        with self._cond:
            self._paused += 1
        try:
            yield
        finally:
            with self._cond:
                self._paused -= 1
                self._cond.notify()

    def counts(self) -> dict[str, Any]:
        with self._cond:
            return {"running": len(self._running), "queued": len(self._pending), **self.stats}

    # --- the thread ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="steerlab-scheduler", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread; queued and running jobs end with a 503 error."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        gone = JobError(503, "The server shut down before the request finished.")
        for job in [*self._pending, *self._running.values()]:
            job.send(gone)
        self._pending.clear()
        self._running.clear()

    def _free_slots(self) -> int:
        return self.config.max_batch_size - len(self._running)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._has_work():
                    self._cond.wait(timeout=0.1)
                    self._expire(time.monotonic())
                if self._stop:
                    return
                self._expire(time.monotonic())
                self._apply_cancels()
                if not self._paused:
                    self._admit()
                step = not self._paused and not self._decoder.idle
            if step:
                self._step()

    def _has_work(self) -> bool:
        if self._cancel:
            return True
        if self._paused:
            return False
        return bool(self._pending) or not self._decoder.idle

    def _expire(self, now: float) -> None:
        """Jobs past their deadline: queued ones end now, running ones at the next step."""
        late = [j for j in self._pending if now >= j.deadline]
        for job in late:
            self._pending.remove(job)
            self._time_out(job)
        for job in self._running.values():
            if not job.timed_out and now >= job.deadline:
                job.timed_out = True
                self._decoder.cancel(job.id)

    def _time_out(self, job: Job) -> None:
        self.stats["timed_out"] += 1
        job.send(
            JobError(
                504,
                f"The request did not finish within this server's limit of "
                f"{job.timeout_s:g} s; ask for fewer max_tokens, retry when the server is "
                "less busy, or raise the limit (--request-timeout-s).",
                type="timeout_error",
                code="request_timeout",
            )
        )

    def _apply_cancels(self) -> None:
        cancels, self._cancel = self._cancel, set()
        for job in [j for j in self._pending if j.id in cancels]:
            self._pending.remove(job)
            self.stats["cancelled"] += 1
            job.send(StepEvent(job.id, None, True, "cancelled"))
        for job_id in cancels & self._running.keys():
            self._decoder.cancel(job_id)

    def _admit(self) -> None:
        while self._pending and self._free_slots() > 0:
            job = self._pending.popleft()
            try:
                self._decoder.join(job.id, job.spec)
            except SteerlabError as exc:
                self.stats["failed"] += 1
                job.send(JobError(400, str(exc), type="invalid_request_error"))
                continue
            self._running[job.id] = job

    def _step(self) -> None:
        try:
            events = self._decoder.step()
        except Exception as exc:  # keep serving: fail the batch, start a fresh decoder
            with self._cond:
                jobs = list(self._running.values())
                self._running.clear()
                self._decoder = BatchedDecoder(self.model, self.config.max_batch_size)
                self.stats["failed"] += len(jobs)
            for job in jobs:
                job.send(JobError(500, f"Generation failed: {exc!r}"))
            return
        with self._cond:
            self.stats["steps"] += 1
            self.stats["peak_batch"] = max(self.stats["peak_batch"], self._decoder.n_running)
            finished = []
            for event in events:
                job = self._running.get(str(event.key))
                if job is None:
                    continue
                if event.done:
                    del self._running[job.id]
                    finished.append((job, event))
                else:
                    job.send(event)
            for job, event in finished:
                if job.timed_out and event.finish_reason == "cancelled":
                    self._time_out(job)
                    continue
                early = event.finish_reason == "cancelled" and job.id not in self._enough
                self._enough.discard(job.id)
                self.stats["cancelled" if early else "completed"] += 1
                job.send(event)
