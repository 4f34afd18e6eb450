"""Steering strength in comparable units, and the recommended strength of a vector.

A raw multiplier ``k`` means different things for vectors of different lengths (a
freeform vector is often 7x longer than a BiPO one at the same layer). The *strength*
of ``k * v`` added at a hook site is its length relative to the model's typical
activation there::

    strength = |k v| / mean ||h||          (mean over the neutral tokens, see
                                             steerlab.activations.norms)

so ``strength=0.1`` adds a vector one tenth as long as a typical residual, whatever the
method that produced ``v``. The sign of the strength is the sign of ``k``. A multi-site
vector has one multiplier per site for a given strength (each site's direction is scaled
to ``strength * mean ||h||`` of its own site).

A calibrated vector carries a :class:`StrengthRecommendation` in its provenance
hyperparameters (key :data:`RECOMMENDED_KEY`); ``steer(model, vec,
strength="recommended")`` uses it.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from steerlab.errors import ConfigError
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.vectors.vector import SteeringVector

#: Provenance hyperparameter that holds a vector's recommended strength.
RECOMMENDED_KEY = "recommended"
#: The spelling ``steer(..., strength=RECOMMENDED)`` asks for the recommended strength.
RECOMMENDED = "recommended"

NormsArg = Mapping[HookSite, float]


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} {value!r} must be a finite number (e.g. 0.1).")
    return float(value)


def _site_norms(vec: SteeringVector, norms: NormsArg) -> dict[HookSite, tuple[float, float]]:
    """(|v_s|, mean ||h|| at s) for each site of ``vec``."""
    lengths = vec.norms()
    out = {}
    for site, length in lengths.items():
        if site not in norms:
            have = ", ".join(str(s) for s in norms) or "none"
            raise ConfigError(
                f"No typical norm for site {site} (norms given for: {have}). Fix: pass "
                "vector_norms(model, vec), which measures the vector's own sites."
            )
        h = float(norms[site])
        if not (h > 0 and math.isfinite(h)):
            raise ConfigError(f"The typical norm at {site} is {h!r}; it must be > 0.")
        if length == 0.0:
            raise ConfigError(
                f"The direction at {site} is zero, so no multiplier reaches a non-zero "
                "strength. Fix: drop that site or use a non-zero vector."
            )
        out[site] = (length, h)
    return out


def vector_norms(model: SteerlabModel, vec: SteeringVector, **kwargs: Any) -> dict[HookSite, float]:
    """Typical residual norms of ``model`` at the sites of ``vec``, keyed as in ``vec``.

    Measured once per model and site (cached; see
    :func:`~steerlab.activations.norms.typical_norms`, which takes the ``kwargs``).
    """
    from steerlab.activations.norms import typical_norms

    resolved = {s: s.resolve(model.n_layers) for s in vec.sites}
    measured = typical_norms(model, list(dict.fromkeys(resolved.values())), **kwargs)
    return {s: measured[r] for s, r in resolved.items()}


def site_multipliers(
    vec: SteeringVector, strength: float, norms: NormsArg
) -> dict[HookSite, float]:
    """The multiplier at each site of ``vec`` that gives ``strength``: ``s * ||h|| / |v|``."""
    s = _finite("Strength", strength)
    return {site: s * h / length for site, (length, h) in _site_norms(vec, norms).items()}


def site_strengths(
    vec: SteeringVector, multiplier: float, norms: NormsArg
) -> dict[HookSite, float]:
    """The strength at each site of ``multiplier * vec``: ``k * |v| / ||h||``."""
    k = _finite("Multiplier", multiplier)
    return {site: k * length / h for site, (length, h) in _site_norms(vec, norms).items()}


def _one(values: dict[HookSite, float], what: str, vec: SteeringVector) -> float:
    vals = list(values.values())
    if all(math.isclose(v, vals[0], rel_tol=1e-9, abs_tol=1e-12) for v in vals):
        return vals[0]
    per_site = ", ".join(f"{s}: {v:.4g}" for s, v in values.items())
    raise ConfigError(
        f"This {vec.method} vector has {len(vals)} sites with different {what}s ({per_site}). "
        f"Fix: use site_{what}s() for per-site values, or in_norm_units(vec, norms), on "
        f"which the multiplier equals the strength."
    )


def strength_to_multiplier(vec: SteeringVector, strength: float, norms: NormsArg) -> float:
    """The one multiplier of ``vec`` that gives ``strength`` (multi-site vectors: only
    when every site needs the same multiplier; otherwise see :func:`site_multipliers`)."""
    return _one(site_multipliers(vec, strength, norms), "multiplier", vec)


def multiplier_to_strength(vec: SteeringVector, multiplier: float, norms: NormsArg) -> float:
    """The strength of ``multiplier * vec`` (multi-site: only when equal at every site)."""
    return _one(site_strengths(vec, multiplier, norms), "strength", vec)


def in_norm_units(vec: SteeringVector, norms: NormsArg) -> SteeringVector:
    """``vec`` with each site's direction rescaled to length ``mean ||h||`` of its site.

    On the result, multiplier ``k`` *is* strength ``k`` at every site, so one sweep of
    multipliers over several such vectors compares them at matched relative norm.
    """
    scale = {site: h / length for site, (length, h) in _site_norms(vec, norms).items()}
    hp = dict(vec.provenance.hyperparameters)
    hp["norm_units"] = {str(s): float(norms[s]) for s in scale}
    return SteeringVector(
        {s: t * scale[s] for s, t in vec.directions.items()},
        replace(vec.provenance, hyperparameters=hp),
    )


@dataclass(frozen=True)
class StrengthRecommendation:
    """The strength a calibration chose for a vector, and where and why.

    strength: the recommended strength (relative units, see the module docstring).
    sites: the vector's sites when it was chosen (``'14.resid_post'``...); a vector moved
        to other sites no longer has a valid recommendation.
    kl: the measured KL(steered || unsteered) in nats/token at that strength, if known.
    kl_cap: the damage cap the choice respected, if any.
    criterion: a short description of how it was chosen.
    """

    strength: float
    sites: tuple[str, ...]
    kl: float | None = None
    kl_cap: float | None = None
    criterion: str = ""

    def __post_init__(self) -> None:
        _finite("Recommended strength", self.strength)
        if not self.sites or not all(isinstance(s, str) for s in self.sites):
            raise ConfigError(f"sites={self.sites!r}; give the site keys, e.g. ('14.resid_post',).")
        for name in ("kl", "kl_cap"):
            value = getattr(self, name)
            if value is not None and not (_finite(name, value) >= 0):
                raise ConfigError(f"{name}={value!r} must be >= 0 (nats per token).")

    def to_dict(self) -> dict[str, Any]:
        return {
            "strength": self.strength,
            "sites": list(self.sites),
            "kl": self.kl,
            "kl_cap": self.kl_cap,
            "criterion": self.criterion,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StrengthRecommendation":
        try:
            return cls(
                strength=float(data["strength"]),
                sites=tuple(str(s) for s in data["sites"]),
                kl=None if data.get("kl") is None else float(data["kl"]),
                kl_cap=None if data.get("kl_cap") is None else float(data["kl_cap"]),
                criterion=str(data.get("criterion", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"Malformed recommended strength {dict(data)!r} in a vector's provenance "
                f"({exc}); it needs 'strength' and 'sites'."
            ) from exc


def with_recommended_strength(
    vec: SteeringVector,
    strength: float,
    *,
    kl: float | None = None,
    kl_cap: float | None = None,
    criterion: str = "",
) -> SteeringVector:
    """A copy of ``vec`` whose provenance records ``strength`` as its recommended one."""
    rec = StrengthRecommendation(
        float(strength), tuple(s.key for s in vec.sites), kl, kl_cap, criterion
    )
    hp = dict(vec.provenance.hyperparameters)
    hp[RECOMMENDED_KEY] = rec.to_dict()
    return SteeringVector(vec.directions, replace(vec.provenance, hyperparameters=hp))


def recommended_strength(vec: SteeringVector) -> StrengthRecommendation:
    """The recommendation stored in ``vec``'s provenance; a clear error when it has none
    or when the vector's sites changed since it was chosen."""
    raw = vec.provenance.hyperparameters.get(RECOMMENDED_KEY)
    if raw is None:
        raise ConfigError(
            f"This {vec.method} vector ({vec.behavior}) has no recommended strength in its "
            "provenance. Fix: calibrate it (steerlab.calibrate / `steerlab calibrate`), set "
            "one with with_recommended_strength(vec, 0.1), or pass strength=<number>."
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(f"Malformed recommended strength {raw!r}; expected a mapping.")
    rec = StrengthRecommendation.from_dict(raw)
    have = tuple(s.key for s in vec.sites)
    if set(rec.sites) != set(have):
        raise ConfigError(
            f"The recommended strength was chosen at sites {', '.join(rec.sites)} but this "
            f"vector is at {', '.join(have)} (it was moved or combined after calibration). "
            "Fix: pass strength=<number> or calibrate the vector at its new sites."
        )
    return rec
