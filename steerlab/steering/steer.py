"""``steer()``: add ``multiplier * direction`` at hook sites, inside a context manager.

The amount is a raw ``multiplier`` or a ``strength`` relative to the model's typical
residual norm (:mod:`steerlab.steering.strength`); ``strength="recommended"`` uses the
strength stored in a calibrated vector's provenance.

Built on TransformerLens hooks (``bridge.hooks``). Hooks return new tensors; when the
context exits (normally or through an exception) every hook it added is removed, so the
model computes exactly what it computed before.
"""

import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Union

from torch import Tensor

from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.model import SteerlabModel
from steerlab.models.positions import PositionSpec, check_positions, position_mask
from steerlab.models.sites import HookSite
from steerlab.steering.strength import (
    RECOMMENDED,
    in_norm_units,
    recommended_strength,
    site_multipliers,
    vector_norms,
)
from steerlab.vectors.vector import SteeringVector

VectorsLike = Union[SteeringVector, Sequence[SteeringVector]]
#: One strength, one per vector, or "recommended" (ints are fine; other strings are refused
#: with a message, so the type stays ``str``).
StrengthArg = Union[int, float, Sequence[Union[int, float]], str]


@dataclass(frozen=True)
class Steering:
    """What to steer with: vectors, one multiplier per vector, and the positions.

    ``strengths`` records the strength per vector when the steering was asked for in
    strength units (:meth:`at_strength`); the multipliers are then the equivalent ones.
    """

    vectors: tuple[SteeringVector, ...]
    multipliers: tuple[float, ...]
    positions: PositionSpec = "all"
    strengths: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.vectors:
            raise EmptyInputError("Steering needs at least one vector.")
        if len(self.multipliers) != len(self.vectors):
            raise ConfigError(
                f"Got {len(self.multipliers)} multipliers for {len(self.vectors)} vectors; pass "
                "one multiplier for all or one per vector."
            )
        for m in self.multipliers:
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m):
                raise ConfigError(f"Multiplier {m!r} must be a finite number.")
        check_positions(self.positions)
        if self.strengths is not None and len(self.strengths) != len(self.vectors):
            raise ConfigError(
                f"Got {len(self.strengths)} strengths for {len(self.vectors)} vectors."
            )

    @classmethod
    def of(
        cls,
        vectors: "VectorsLike | Steering",
        multiplier: "float | Sequence[float]" = 1.0,
        positions: PositionSpec = "all",
    ) -> "Steering":
        if isinstance(vectors, Steering):
            return vectors
        vecs = (vectors,) if isinstance(vectors, SteeringVector) else tuple(vectors)
        for v in vecs:
            if not isinstance(v, SteeringVector):
                raise ConfigError(f"Expected SteeringVector values, got {type(v).__name__}.")
        if isinstance(multiplier, (int, float)) and not isinstance(multiplier, bool):
            mults = (float(multiplier),) * len(vecs)
        else:
            mults = tuple(float(m) for m in multiplier)  # type: ignore[union-attr]
        return cls(vecs, mults, positions)

    @classmethod
    def at_strength(
        cls,
        model: SteerlabModel,
        vectors: VectorsLike,
        strength: StrengthArg,
        positions: PositionSpec = "all",
    ) -> "Steering":
        """Steering whose added vectors have ``strength`` relative to ``model``'s typical
        residual norm at each site (one number for all vectors, one per vector, or
        ``"recommended"`` for each vector's calibrated strength).

        A vector whose sites all need the same multiplier keeps its direction and gets
        that multiplier; otherwise it is rescaled to norm units and the multiplier is
        the strength itself.
        """
        base = cls.of(vectors, 1.0, positions)
        n = len(base.vectors)
        if isinstance(strength, str):
            if strength != RECOMMENDED:
                raise ConfigError(
                    f"strength={strength!r}; pass a number (e.g. 0.1) or {RECOMMENDED!r}."
                )
            wanted = tuple(recommended_strength(v).strength for v in base.vectors)
        elif isinstance(strength, (int, float)) and not isinstance(strength, bool):
            wanted = (float(strength),) * n
        else:
            wanted = tuple(
                float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x
                for x in strength
            )
            if len(wanted) != n:
                raise ConfigError(
                    f"Got {len(wanted)} strengths for {n} vectors; pass one for all or one "
                    "per vector."
                )
        vecs, mults = [], []
        for vec, s in zip(base.vectors, wanted):
            norms = vector_norms(model, vec)
            per_site = site_multipliers(vec, s, norms)
            first = next(iter(per_site.values()))
            if all(math.isclose(m, first, rel_tol=1e-9, abs_tol=1e-12) for m in per_site.values()):
                vecs.append(vec)
                mults.append(first)
            else:
                vecs.append(in_norm_units(vec, norms))
                mults.append(float(s))
        return cls(tuple(vecs), tuple(mults), positions, tuple(float(s) for s in wanted))

    def deltas(self, model: SteerlabModel, other_model: str = "warn") -> dict[HookSite, Tensor]:
        """Summed ``multiplier * direction`` per resolved site, on the model's device/dtype.
        ``other_model``: see :meth:`SteeringVector.check_model`."""
        out: dict[HookSite, Tensor] = {}
        for vec, mult in zip(self.vectors, self.multipliers):
            vec.check_model(model.d_model, model.n_layers, model.model_id, other_model)
            for site, direction in vec.directions.items():
                key = site.resolve(model.n_layers)
                key.hook_name(model)
                d = direction.to(device=model.device, dtype=model.dtype) * mult
                out[key] = out[key] + d if key in out else d
        return out

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "method": v.method,
                "behavior": v.behavior,
                "sites": [str(s) for s in v.sites],
                "multiplier": m,
                **({"strength": self.strengths[i]} if self.strengths is not None else {}),
            }
            for i, (v, m) in enumerate(zip(self.vectors, self.multipliers))
        ] + ([{"positions": str(self.positions)}] if self.positions != "all" else [])


# The steer() blocks active in the current thread / asyncio task. TransformerLens hooks are
# global to the model; each steering hook checks that its block is active in the context
# running the forward, so another thread using the same model is not steered.
_ACTIVE: ContextVar[frozenset[int]] = ContextVar("steerlab_active_steering", default=frozenset())
_IDS = itertools.count()


def _make_hook(model: SteerlabModel, delta: Tensor, positions: PositionSpec, sid: int) -> Any:
    state = model.positions

    def hook(x: Tensor, hook: Any) -> Tensor:
        if sid not in _ACTIVE.get():
            return x  # a forward from another thread/context: not steered by this block
        d = delta.to(dtype=x.dtype)
        if positions == "all":
            return x + d
        mask = position_mask(state, x.shape[0], x.shape[1], positions, x.device)
        return x + mask.unsqueeze(-1).to(x.dtype) * d

    return hook


def resolve_steering(
    model: SteerlabModel,
    vectors: "VectorsLike | Steering",
    multiplier: "float | Sequence[float] | None" = None,
    strength: "StrengthArg | None" = None,
    positions: PositionSpec = "all",
) -> Steering:
    """The :class:`Steering` for ``multiplier`` *or* ``strength`` (neither: multiplier 1)."""
    if multiplier is not None and strength is not None:
        raise ConfigError(
            f"Got both multiplier={multiplier!r} and strength={strength!r}; pass exactly one "
            "(multiplier: raw scale of the vector; strength: |k v| / mean ||h|| at the site)."
        )
    if strength is None:
        return Steering.of(vectors, 1.0 if multiplier is None else multiplier, positions)
    if isinstance(vectors, Steering):
        raise ConfigError(
            "strength= cannot re-scale a ready Steering; pass the vectors instead, or build "
            "it with Steering.at_strength(model, vectors, strength)."
        )
    return Steering.at_strength(model, vectors, strength, positions)


@contextmanager
def steer(
    model: SteerlabModel,
    vectors: "VectorsLike | Steering",
    multiplier: "float | Sequence[float] | None" = None,
    positions: PositionSpec = "all",
    *,
    strength: "StrengthArg | None" = None,
    other_model: str = "warn",
) -> Iterator[Steering]:
    """Steer ``model`` inside a ``with`` block.

    Args:
        vectors: a :class:`SteeringVector`, a list of them, or a :class:`Steering`.
        multiplier: one number for all vectors or one per vector (default 1 when
            ``strength`` is not given either).
        positions: ``"all"`` (default, as in BiPO), ``"prompt"``, ``"generated"``, or a
            ``slice`` of token indices counted from each sequence's first real token.
        strength: instead of ``multiplier``: ``|k v| / mean ||h||`` at each site (the
            typical norm is measured once per model and site on the neutral text set and
            cached), one number or one per vector; ``"recommended"`` uses each vector's
            calibrated strength (an error if it has none).

    Several vectors at the same site add up. The model is restored exactly on exit.

    Steering is scoped to the calling thread (and asyncio task): while one thread is inside
    ``steer()``, another thread running the same model computes unsteered outputs. Threads
    started inside the block are not steered either; enter ``steer()`` in the thread that
    runs the model. A vector whose provenance names another model (same hidden size)
    raises an :class:`~steerlab.errors.OtherModelWarning`; ``other_model="allow"`` silences
    it for a deliberate transfer and ``"error"`` refuses.
    """
    spec = resolve_steering(model, vectors, multiplier, strength, positions)
    deltas = spec.deltas(model, other_model=other_model)
    sid = next(_IDS)
    fwd_hooks = [
        (site.hook_name(model), _make_hook(model, delta, spec.positions, sid))
        for site, delta in deltas.items()
    ]
    _ACTIVE.set(_ACTIVE.get() | {sid})
    try:
        with model.bridge.hooks(fwd_hooks=fwd_hooks):
            yield spec
    finally:
        _ACTIVE.set(_ACTIVE.get() - {sid})
