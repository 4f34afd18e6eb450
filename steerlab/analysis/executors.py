"""Where the cells of a sweep (or of any per-cell computation) run: in this process, or
as tasks on Ray workers that each load the model once.

An executor maps ``fn(model, *args)`` over a list of argument tuples and yields the
results in the order of the list, so a caller's loop (progress, callbacks, the cell
store) stays the same whichever executor runs it:

    with RayExecutor(num_workers=4) as ex:               # local Ray; address= for a cluster
        result = sweep(model, data, config=cfg, executor=ex)

:class:`SerialExecutor` (the default) calls ``fn`` with the caller's model.
:class:`RayExecutor` starts ``num_workers`` Ray actors; each loads its own copy of the
model from ``model.spec`` (how :func:`steerlab.load_model` loaded it) when it starts and
runs calls as they come, so a worker loads the model once however many cells it runs
(and however many maps: the workers live until :meth:`RayExecutor.close`).
Results are the same numbers as the serial executor's: every cell is computed from its
arguments alone. Ray is an optional dependency (``pip install 'steerlab[ray]'``).
"""

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from steerlab.errors import ConfigError
from steerlab.models.model import ModelSpec, SteerlabModel

R = TypeVar("R")

#: Environment passed on to Ray workers (offline mode, data and cache roots, threads).
FORWARDED_ENV = (
    "STEERLAB_DATA",
    "STEERLAB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_HOME",
    "TOKENIZERS_PARALLELISM",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)
EXECUTORS = ("serial", "ray")


@runtime_checkable
class CellExecutor(Protocol):
    """Runs ``fn(model, *args)`` for each tuple of ``calls``; yields results in order."""

    name: str

    def map(
        self, model: SteerlabModel, fn: Callable[..., R], calls: Sequence[tuple[Any, ...]]
    ) -> Iterator[R]: ...


@dataclass(frozen=True)
class SerialExecutor:
    """Each call in this process, with the caller's model, one after the other."""

    name: str = "serial"

    def map(
        self, model: SteerlabModel, fn: Callable[..., R], calls: Sequence[tuple[Any, ...]]
    ) -> Iterator[R]:
        for args in calls:
            yield fn(model, *args)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> "SerialExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ModelWorker:
    """The body of a Ray actor: loads the model once, then runs calls with it."""

    def __init__(self, spec: ModelSpec, threads: int | None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = spec.load()

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return fn(self.model, *args)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "executor='ray' needs Ray, which is not installed. Fix: pip install "
            "'steerlab[ray]' (or pip install ray), or use the serial executor."
        ) from None
    return ray


@dataclass
class RayExecutor:
    """Calls as Ray tasks on ``num_workers`` actors, each holding one copy of the model.

    Args:
        num_workers: actors (model copies) to start.
        address: an existing Ray cluster (``"ray://host:10001"``, ``"auto"``); None
            starts a local one with ``num_workers * num_cpus`` CPUs.
        num_cpus: CPUs per worker (also its torch threads, unless ``threads`` is set).
        num_gpus: GPUs per worker; None: none for a CPU model, else an equal share of
            the cluster's GPUs (at most 1).
        threads: torch threads per worker (None: ``num_cpus``).
        spec: how workers load the model (None: the caller's ``model.spec``).
        init_kwargs: more ``ray.init`` arguments (``object_store_memory=``...).
    """

    num_workers: int = 2
    address: str | None = None
    num_cpus: int | float = 1
    num_gpus: int | float | None = None
    threads: int | None = None
    spec: ModelSpec | None = None
    init_kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: str = field(default="ray", init=False)
    _started: bool = field(default=False, init=False, repr=False)
    _actors: list[Any] = field(default_factory=list, init=False, repr=False)
    _actors_spec: ModelSpec | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, bool) or int(self.num_workers) < 1:
            raise ConfigError(f"RayExecutor num_workers={self.num_workers!r} must be >= 1.")
        if self.num_cpus <= 0:
            raise ConfigError(f"RayExecutor num_cpus={self.num_cpus!r} must be > 0.")

    def _init(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "runtime_env": {"env_vars": env},
                **self.init_kwargs,
            }
            if self.address is None:
                kwargs.setdefault("num_cpus", int(max(1, self.num_workers * self.num_cpus)))
            ray.init(address=self.address, **kwargs)
            self._started = True
        return ray

    def _gpus(self, ray: Any, model: SteerlabModel) -> int | float:
        if self.num_gpus is not None:
            return self.num_gpus
        if model.device.type != "cuda":
            return 0
        total = float(ray.cluster_resources().get("GPU", 0.0))
        if total <= 0:
            raise ConfigError(
                "The model is on a GPU but the Ray cluster has no GPUs; pass num_gpus=0 "
                "(workers on the CPU: load the model with device='cpu') or a cluster with GPUs."
            )
        return min(1.0, total / self.num_workers)

    def _workers(self, ray: Any, model: SteerlabModel, spec: ModelSpec) -> list[Any]:
        """The actors holding ``spec``'s model: started on first use, kept until
        :meth:`close` (a second map over the same model reuses the loaded copies)."""
        if self._actors and self._actors_spec == spec:
            return self._actors
        self._kill()
        worker = ray.remote(_ModelWorker).options(
            num_cpus=self.num_cpus, num_gpus=self._gpus(ray, model)
        )
        threads = self.threads or max(1, int(self.num_cpus))
        self._actors = [worker.remote(spec, threads) for _ in range(self.num_workers)]
        self._actors_spec = spec
        return self._actors

    def _kill(self) -> None:
        if self._actors:
            ray = _import_ray()
            for actor in self._actors:
                ray.kill(actor)
        self._actors, self._actors_spec = [], None

    def map(
        self, model: SteerlabModel, fn: Callable[..., R], calls: Sequence[tuple[Any, ...]]
    ) -> Iterator[R]:
        calls = list(calls)
        if not calls:
            return
        spec = self.spec or model.spec
        if spec is None:
            raise ConfigError(
                f"RayExecutor cannot load {model.model_id} in its workers: the model has no "
                "spec. Fix: load it with steerlab.load_model(...) or pass "
                "RayExecutor(spec=ModelSpec('module:function', {...}))."
            )
        ray = self._init()
        from ray.util import ActorPool

        pool = ActorPool(self._workers(ray, model, spec))
        fn_ref = ray.put(fn)
        yield from pool.map(lambda a, args: a.run.remote(fn_ref, args), calls)

    def close(self) -> None:
        """Stop the workers, and the local Ray instance if this executor started it."""
        self._kill()
        if self._started:
            _import_ray().shutdown()
            self._started = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_executor(
    name: str = "serial", *, address: str | None = None, num_workers: int = 2, **kwargs: Any
) -> "SerialExecutor | RayExecutor":
    """The executor called ``name`` (``'serial'`` or ``'ray'``); Ray options go to
    :class:`RayExecutor`."""
    if name == "serial":
        if address is not None:
            raise ConfigError("--ray-address needs --executor ray.")
        return SerialExecutor()
    if name == "ray":
        return RayExecutor(num_workers=num_workers, address=address, **kwargs)
    raise ConfigError(f"Unknown executor {name!r}; use one of {', '.join(EXECUTORS)}.")


__all__ = [
    "EXECUTORS",
    "CellExecutor",
    "RayExecutor",
    "SerialExecutor",
    "make_executor",
]
