"""``SteeringVector``: a frozen value with one direction per hook site plus provenance."""

import datetime as _dt
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from steerlab.errors import (
    ConfigError,
    DModelMismatchError,
    EmptyInputError,
    NonFiniteError,
    OtherModelError,
    OtherModelWarning,
)
from steerlab.models.sites import HookSite


def steerlab_version() -> str:
    try:
        from importlib.metadata import version

        return version("steerlab")
    except Exception:  # pragma: no cover - running from a source tree without install
        return "0+unknown"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Provenance:
    """Where a vector came from. ``hyperparameters`` is read-only."""

    model_id: str = "unknown"
    d_model: int = 0
    method: str = "unknown"
    behavior: str = "unknown"
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    dataset_hash: str = ""
    created_at: str = field(default_factory=_now)
    steerlab_version: str = field(default_factory=steerlab_version)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hyperparameters", MappingProxyType(dict(self.hyperparameters)))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["hyperparameters"] = dict(self.hyperparameters)  # a plain dict, not the read-only view
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Provenance":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def _check_direction(site: HookSite, t: Any, d_model: int | None) -> Tensor:
    if not isinstance(t, Tensor):
        raise ConfigError(f"Direction at {site} must be a torch.Tensor, got {type(t).__name__}.")
    if t.ndim != 1:
        raise ConfigError(f"Direction at {site} must be 1-D [d_model], got shape {tuple(t.shape)}.")
    if not t.is_floating_point():
        raise ConfigError(f"Direction at {site} must be floating point, got {t.dtype}.")
    if d_model is not None and t.shape[0] != d_model:
        raise DModelMismatchError(
            f"Direction at {site} has size {t.shape[0]} but the vector's d_model is {d_model}."
        )
    if not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise NonFiniteError(
            f"Direction at {site} has {n_bad} NaN/inf entries; a steering vector must be "
            "finite. Fix: check the training run (lower the learning rate) or the file."
        )
    return t.detach().clone()


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """Directions per :class:`HookSite` (each ``[d_model]``) and their provenance.

    Immutable: arithmetic, :meth:`normalized` and :meth:`to` return new vectors.
    ``v + w`` adds directions site by site (a site present in only one operand is kept),
    ``k * v`` scales all directions.
    """

    directions: Mapping[HookSite, Float[Tensor, " d_model"]]
    provenance: Provenance = field(default_factory=Provenance)

    def __post_init__(self) -> None:
        if not self.directions:
            raise EmptyInputError("A SteeringVector needs at least one (site, direction).")
        d_model = None
        checked: dict[HookSite, Tensor] = {}
        for site, t in sorted(self.directions.items()):
            if not isinstance(site, HookSite):
                raise ConfigError(f"Keys must be HookSite values, got {site!r}.")
            checked[site] = _check_direction(site, t, d_model)
            d_model = checked[site].shape[0]
        prov = self.provenance
        if prov.d_model and prov.d_model != d_model:
            raise DModelMismatchError(
                f"Provenance says d_model={prov.d_model} but the directions have size {d_model}."
            )
        if not prov.d_model:
            prov = replace(prov, d_model=int(d_model or 0))
        object.__setattr__(self, "directions", MappingProxyType(checked))
        object.__setattr__(self, "provenance", prov)

    # --- construction helpers ---------------------------------------------------------
    @classmethod
    def from_tensor(
        cls,
        direction: Float[Tensor, " d_model"],
        layer: int | HookSite,
        kind: str = "resid_post",
        **provenance: Any,
    ) -> "SteeringVector":
        site = layer if isinstance(layer, HookSite) else HookSite(layer, kind)
        return cls({site: direction}, Provenance(**provenance))

    # --- facts ------------------------------------------------------------------------
    @property
    def sites(self) -> tuple[HookSite, ...]:
        return tuple(self.directions)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(s.layer for s in self.directions)

    @property
    def d_model(self) -> int:
        return int(next(iter(self.directions.values())).shape[0])

    @property
    def method(self) -> str:
        return self.provenance.method

    @property
    def behavior(self) -> str:
        return self.provenance.behavior

    def direction(self, site: "HookSite | int | None" = None) -> Tensor:
        """The direction at ``site`` (an int means ``resid_post`` of that layer)."""
        if site is None:
            if len(self.directions) != 1:
                raise ConfigError(
                    f"This vector has {len(self.directions)} sites ({self._sites_str()}); "
                    "pass site= to pick one."
                )
            return next(iter(self.directions.values()))
        key = HookSite(site) if isinstance(site, int) else site
        if key not in self.directions:
            raise ConfigError(f"No direction at {key}; this vector has {self._sites_str()}.")
        return self.directions[key]

    def norms(self) -> dict[HookSite, float]:
        return {s: float(_wide(t).norm()) for s, t in self.directions.items()}

    def _sites_str(self) -> str:
        return ", ".join(str(s) for s in self.directions)

    # --- arithmetic -------------------------------------------------------------------
    def _combine(self, other: "SteeringVector", sign: float) -> "SteeringVector":
        if not isinstance(other, SteeringVector):
            return NotImplemented  # type: ignore[return-value]
        if other.d_model != self.d_model:
            raise DModelMismatchError(
                f"Cannot combine vectors with d_model {self.d_model} and {other.d_model}."
            )
        out = dict(self.directions)
        for site, t in other.directions.items():
            t = t.to(device=self._device, dtype=self._dtype)
            out[site] = out[site] + sign * t if site in out else sign * t
        op = "+" if sign > 0 else "-"
        prov = replace(
            self.provenance,
            method="combination",
            behavior=_join_behaviors(self.behavior, other.behavior, op),
            hyperparameters={
                "operation": op,
                "left": self.provenance.to_dict(),
                "right": other.provenance.to_dict(),
            },
            created_at=_now(),
        )
        return SteeringVector(out, prov)

    def __add__(self, other: "SteeringVector") -> "SteeringVector":
        return self._combine(other, 1.0)

    def __sub__(self, other: "SteeringVector") -> "SteeringVector":
        return self._combine(other, -1.0)

    def __mul__(self, k: float) -> "SteeringVector":
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k):
            return NotImplemented  # type: ignore[return-value]
        hp = dict(self.provenance.hyperparameters)
        hp["scale"] = float(hp.get("scale", 1.0)) * float(k)
        prov = replace(self.provenance, hyperparameters=hp)
        return SteeringVector({s: t * k for s, t in self.directions.items()}, prov)

    __rmul__ = __mul__

    def __neg__(self) -> "SteeringVector":
        return self * -1.0

    def __truediv__(self, k: float) -> "SteeringVector":
        if k == 0:
            raise ConfigError("Cannot divide a steering vector by zero.")
        return self * (1.0 / k)

    def with_hyperparameters(self, **extra: Any) -> "SteeringVector":
        """The same directions with ``extra`` added to (or replacing entries of) the
        provenance's hyperparameters (e.g. which pairs it was fitted on)."""
        hp = {**dict(self.provenance.hyperparameters), **extra}
        return SteeringVector(dict(self.directions), replace(self.provenance, hyperparameters=hp))

    def normalized(self) -> "SteeringVector":
        """Each site's direction scaled to unit L2 norm."""
        out = {}
        for site, t in self.directions.items():
            n = _wide(t).norm()
            if float(n) == 0.0:
                raise ConfigError(f"Cannot normalize the zero direction at {site}.")
            out[site] = t / n.to(t.dtype)
        hp = dict(self.provenance.hyperparameters)
        hp["normalized"] = True
        return SteeringVector(out, replace(self.provenance, hyperparameters=hp))

    def cosine(self, other: "SteeringVector") -> float:
        """Cosine similarity over all shared sites (directions concatenated)."""
        shared = [s for s in self.directions if s in other.directions]
        if not shared:
            raise ConfigError(
                f"No shared hook sites: {self._sites_str()} vs {other._sites_str()}. "
                "Use cosine_by_site() or restrict to a site first (at_site)."
            )
        a = torch.cat([self.directions[s].double().cpu() for s in shared])
        b = torch.cat([other.directions[s].double().cpu() for s in shared])
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0))

    def cosine_by_site(self, other: "SteeringVector") -> dict[HookSite, float]:
        return {
            s: float(
                torch.nn.functional.cosine_similarity(
                    self.directions[s].double().cpu(), other.directions[s].double().cpu(), dim=0
                )
            )
            for s in self.directions
            if s in other.directions
        }

    def at_site(self, site: "HookSite | int") -> "SteeringVector":
        """A one-site vector; moving it to another site is :meth:`moved_to`."""
        key = HookSite(site) if isinstance(site, int) else site
        return SteeringVector({key: self.direction(key)}, self.provenance)

    def moved_to(self, site: "HookSite | int") -> "SteeringVector":
        """The single direction of this vector placed at another site (cross-layer)."""
        key = HookSite(site) if isinstance(site, int) else site
        hp = dict(self.provenance.hyperparameters)
        hp["moved_from"] = ", ".join(str(s) for s in self.directions)
        return SteeringVector({key: self.direction()}, replace(self.provenance, hyperparameters=hp))

    # --- device / dtype ---------------------------------------------------------------
    @property
    def _device(self) -> torch.device:
        return next(iter(self.directions.values())).device

    @property
    def _dtype(self) -> torch.dtype:
        return next(iter(self.directions.values())).dtype

    def to(
        self, device: "str | torch.device | None" = None, dtype: torch.dtype | None = None
    ) -> "SteeringVector":
        return SteeringVector(
            {s: t.to(device=device, dtype=dtype) for s, t in self.directions.items()},
            self.provenance,
        )

    def equal(self, other: "SteeringVector") -> bool:
        """Exact equality of sites and direction values."""
        return set(self.directions) == set(other.directions) and all(
            torch.equal(t.cpu(), other.directions[s].cpu()) for s, t in self.directions.items()
        )

    def check_model(
        self,
        d_model: int,
        n_layers: int,
        model_id: str = "the model",
        other_model: str = "warn",
    ) -> None:
        """Raise a clear error if this vector cannot be applied to a model of that shape.

        ``other_model`` says what happens when the shapes fit but the provenance names
        another model: ``"warn"`` (the API's default: :class:`OtherModelWarning`),
        ``"error"`` (:class:`OtherModelError`; the CLI and the server refuse unless forced)
        or ``"allow"`` (deliberate transfer, e.g. to a fine-tune)."""
        if other_model not in ("warn", "error", "allow"):
            raise ConfigError(f"other_model={other_model!r}; use 'warn', 'error' or 'allow'.")
        if self.d_model != d_model:
            raise DModelMismatchError(
                f"This {self.method} vector has d_model={self.d_model} (from "
                f"{self.provenance.model_id}) but {model_id} has d_model={d_model}. A vector "
                "only applies to models with the same hidden size; train or load one for "
                "this model."
            )
        for site in self.directions:
            site.resolve(n_layers)
        made_for = self.provenance.model_id
        if other_model == "allow" or not made_for or made_for in ("unknown", model_id):
            return
        msg = (
            f"This {self.method} vector was made for {made_for!r} but is applied to "
            f"{model_id!r}; the hidden sizes match, but its directions belong to the other "
            "model's residual stream."
        )
        if other_model == "error":
            raise OtherModelError(
                msg + " Pass --force-other-model (CLI) / force (server) to apply it anyway."
            )
        warnings.warn(
            msg + " Pass other_model='allow' if the transfer is deliberate.",
            OtherModelWarning,
            stacklevel=3,
        )

    # --- io (implemented in steerlab.vectors.io) --------------------------------------
    def save(self, path: Any) -> Any:
        from steerlab.vectors.io import save_vector

        return save_vector(self, path)

    @classmethod
    def load(cls, path: Any, device: "str | torch.device" = "cpu") -> "SteeringVector":
        from steerlab.vectors.io import load_vector

        return load_vector(path, device=device)

    @classmethod
    def from_bipo_pt(
        cls, path: Any, layer: int = 15, model: Any = None, **provenance: Any
    ) -> "SteeringVector":
        from steerlab.vectors.io import load_bipo_pt

        return load_bipo_pt(path, layer=layer, model=model, **provenance)

    def __repr__(self) -> str:
        norms = ", ".join(f"{s}: |v|={n:.3g}" for s, n in self.norms().items())
        p = self.provenance
        return (
            f"SteeringVector(method={p.method!r}, behavior={p.behavior!r}, "
            f"d_model={self.d_model}, {norms})"
        )


def _wide(t: Tensor) -> Tensor:
    """``t`` in at least float32 (half precision is widened, float64 is kept)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _join_behaviors(a: str, b: str, op: str) -> str:
    return a if a == b else f"{a}{op}{b}"


def stack_sites(vectors: Iterable[SteeringVector]) -> list[HookSite]:
    """All sites used by any of ``vectors``, sorted."""
    return sorted({s for v in vectors for s in v.directions})
