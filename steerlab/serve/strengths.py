"""Strengths in steering requests: ``{"vector": NAME, "strength": 0.1}``.

A strength is ``|k v| / mean ||h||`` at the vector's site (:mod:`steerlab.steering.strength`),
so one number means the same push for vectors whose norms differ by orders of magnitude
(a BiPO vector of norm 0.2 needs multiplier ~70 where a freeform one of norm 15 needs ~1).
The server measures the typical residual norm of every ``resid_post`` layer once, before
it serves (one pass over the neutral texts, cached on disk like every typical norm), and
turns each requested strength into the vector's multiplier. ``"recommended"`` takes the
strength a calibration stored in the vector.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

from steerlab.errors import SteerlabError
from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite
from steerlab.serve.schema import RECOMMENDED, RequestError, SteeringEntry
from steerlab.steering.strength import (
    recommended_strength,
    site_strengths,
    strength_to_multiplier,
)
from steerlab.vectors.vector import SteeringVector


@dataclass(frozen=True)
class SiteNorms:
    """Typical residual norms per ``resid_post`` site, or why there are none."""

    norms: Mapping[HookSite, float] | None
    reason: str = ""


def measure_site_norms(model: SteerlabModel) -> SiteNorms:
    """The typical norm at ``resid_post`` of every layer (call before serving: the pass
    runs the model); without the neutral texts, none and the reason."""
    from steerlab.activations.norms import typical_norms

    sites = [model.site(layer) for layer in range(model.n_layers)]
    try:
        return SiteNorms(typical_norms(model, sites))
    except (SteerlabError, OSError) as exc:
        return SiteNorms(None, str(exc))


def _norms_of(
    vec: SteeringVector, site_norms: SiteNorms, n_layers: int
) -> dict[HookSite, float] | None:
    """The typical norm at each site of ``vec`` (keyed as in ``vec``); None when a site
    has none (not ``resid_post``) or nothing was measured."""
    if site_norms.norms is None:
        return None
    resolved = {s: s.resolve(n_layers) for s in vec.sites}
    if any(r not in site_norms.norms for r in resolved.values()):
        return None
    return {s: site_norms.norms[r] for s, r in resolved.items()}


def resolve_entry(
    entry: SteeringEntry, vec: SteeringVector, site_norms: SiteNorms, n_layers: int, where: str
) -> SteeringEntry:
    """``entry`` with its multiplier: as sent, or the one that gives its strength."""
    if entry.strength is None:
        return entry
    param = f"{where}.strength"
    if site_norms.norms is None:
        raise RequestError(
            f"{where}: this server cannot turn strengths into multipliers (the typical "
            f"residual norms could not be measured at start: {site_norms.reason}); send a "
            "multiplier.",
            param=param,
            code="strength_unavailable",
        )
    strength = entry.strength
    try:
        if strength == RECOMMENDED:
            strength = recommended_strength(vec).strength
        norms = _norms_of(vec, site_norms, n_layers)
        if norms is None:
            sites = ", ".join(str(s) for s in vec.sites)
            raise RequestError(
                f"{where}: strengths are measured at resid_post sites, and vector "
                f"{entry.vector!r} has {sites}; send a multiplier.",
                param=param,
            )
        k = strength_to_multiplier(vec, float(strength), norms)
    except RequestError:
        raise
    except SteerlabError as exc:
        raise RequestError(f"{where}: {exc}", param=param) from None
    if not math.isfinite(k):
        raise RequestError(f"{where}: strength {strength} gives no finite multiplier.", param=param)
    return SteeringEntry(entry.vector, k, float(strength))


def strength_at_x1(
    vec: SteeringVector, site_norms: SiteNorms, n_layers: int
) -> dict[str, float] | None:
    """Per site, the strength of multiplier 1 (``|v| / mean ||h||``, to 6 significant
    digits); None without norms, for a site that is not ``resid_post`` or a zero site."""
    norms = _norms_of(vec, site_norms, n_layers)
    if norms is None:
        return None
    try:
        values = site_strengths(vec, 1.0, norms)
    except SteerlabError:
        return None
    return {str(site): float(f"{value:.6g}") for site, value in values.items()}


__all__ = ["SiteNorms", "measure_site_norms", "resolve_entry", "strength_at_x1"]
