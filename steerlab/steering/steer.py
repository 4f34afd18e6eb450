"""``steer()``: add ``multiplier * direction`` at hook sites, inside a context manager.

Built on TransformerLens hooks (``bridge.hooks``). Hooks return new tensors; when the
context exits (normally or through an exception) every hook it added is removed, so the
model computes exactly what it computed before.
"""

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Union

from torch import Tensor

from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.model import SteerlabModel
from steerlab.models.positions import PositionSpec, check_positions, position_mask
from steerlab.models.sites import HookSite
from steerlab.vectors.vector import SteeringVector

VectorsLike = Union[SteeringVector, Sequence[SteeringVector]]


@dataclass(frozen=True)
class Steering:
    """What to steer with: vectors, one multiplier per vector, and the positions."""

    vectors: tuple[SteeringVector, ...]
    multipliers: tuple[float, ...]
    positions: PositionSpec = "all"

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

    def deltas(self, model: SteerlabModel) -> dict[HookSite, Tensor]:
        """Summed ``multiplier * direction`` per resolved site, on the model's device/dtype."""
        out: dict[HookSite, Tensor] = {}
        for vec, mult in zip(self.vectors, self.multipliers):
            vec.check_model(model.d_model, model.n_layers, model.model_id)
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
            }
            for v, m in zip(self.vectors, self.multipliers)
        ] + ([{"positions": str(self.positions)}] if self.positions != "all" else [])


def _make_hook(model: SteerlabModel, delta: Tensor, positions: PositionSpec) -> Any:
    state = model.positions

    def hook(x: Tensor, hook: Any) -> Tensor:
        d = delta.to(dtype=x.dtype)
        if positions == "all":
            return x + d
        mask = position_mask(state, x.shape[0], x.shape[1], positions, x.device)
        return x + mask.unsqueeze(-1).to(x.dtype) * d

    return hook


@contextmanager
def steer(
    model: SteerlabModel,
    vectors: "VectorsLike | Steering",
    multiplier: "float | Sequence[float]" = 1.0,
    positions: PositionSpec = "all",
) -> Iterator[Steering]:
    """Steer ``model`` inside a ``with`` block.

    Args:
        vectors: a :class:`SteeringVector`, a list of them, or a :class:`Steering`.
        multiplier: one number for all vectors or one per vector.
        positions: ``"all"`` (default, as in BiPO), ``"prompt"``, ``"generated"``, or a
            ``slice`` of token indices counted from each sequence's first real token.

    Several vectors at the same site add up. The model is restored exactly on exit.
    """
    spec = Steering.of(vectors, multiplier, positions)
    deltas = spec.deltas(model)
    fwd_hooks = [
        (site.hook_name(model), _make_hook(model, delta, spec.positions))
        for site, delta in deltas.items()
    ]
    with model.bridge.hooks(fwd_hooks=fwd_hooks):
        yield spec
