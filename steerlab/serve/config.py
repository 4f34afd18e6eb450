"""The server's capacity and back-pressure settings (:class:`ServeConfig`).

:class:`~steerlab.serve.schema.ServeLimits` says what one request may ask for; this says
how much work the server takes on at once and how long it waits. Defaults suit the
embedded model on a CPU: a burst of clients queues instead of being refused, and no
request holds the model for more than two minutes.
"""

import math
from dataclasses import dataclass

from steerlab.errors import ConfigError


@dataclass(frozen=True)
class ServeConfig:
    """How the server batches, queues and times out requests.

    max_batch_size: requests decoded together in one forward per step.
    max_queue: requests waiting for a batch slot; one more gets 503 with Retry-After.
    request_timeout_s: a request's time limit from arrival to its last token (queue wait included).
    body_timeout_s: time a client has to send its request body (slow or short bodies get 408).
    retry_after_s: the Retry-After header (seconds) of a 503 when the queue is full.
    backlog: TCP listen backlog (simultaneous connections not yet accepted).
    vector_dir: directory that POST /v1/steering/vectors may load files from (None: the --vectors dir).
    allow_vector_updates: accept POST / DELETE /v1/steering/vectors (add and remove vectors).
    max_vectors: most vectors the server holds.
    max_vector_bytes: largest vector (float32 bytes over all its sites) that may be added.
    force_other_model: accept vectors whose provenance names another model (same hidden size).
    """

    max_batch_size: int = 16
    max_queue: int = 64
    request_timeout_s: float = 120.0
    body_timeout_s: float = 10.0
    retry_after_s: int = 2
    backlog: int = 1024
    vector_dir: str | None = None
    allow_vector_updates: bool = True
    max_vectors: int = 256
    max_vector_bytes: int = 4_000_000
    force_other_model: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "retry_after_s", "backlog", "max_vectors"):
            _check_int(name, getattr(self, name), 1)
        _check_int("max_queue", self.max_queue, 0)
        _check_int("max_vector_bytes", self.max_vector_bytes, 4)
        for name in ("request_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value <= 0:
                raise ConfigError(
                    f"ServeConfig.{name}={value!r}; it must be a number of seconds > 0."
                )
        if self.vector_dir is not None and not isinstance(self.vector_dir, str):
            object.__setattr__(self, "vector_dir", str(self.vector_dir))


def _check_int(name: str, value: object, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"ServeConfig.{name}={value!r}; it must be an int >= {lo}.")
