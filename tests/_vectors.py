"""Random steering vectors at given sites, for the fast-path parity tests."""

import torch

from steerlab.vectors.vector import Provenance, SteeringVector


def vec_at(model, sites, scale=4.0, seed=0, method="caa") -> SteeringVector:
    """A seeded random direction of norm ~``scale * sqrt(d_model)`` at each site."""
    g = torch.Generator().manual_seed(seed)
    dirs = {s: torch.randn(model.d_model, generator=g) * scale for s in sites}
    return SteeringVector(dirs, Provenance(method=method, behavior="toy"))
