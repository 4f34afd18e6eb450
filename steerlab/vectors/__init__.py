"""Steering vectors: the value type, file io, and the methods that fit them."""

from steerlab.vectors.io import load_bipo_pt, load_vector, save_vector
from steerlab.vectors.vector import Provenance, SteeringVector

__all__ = ["Provenance", "SteeringVector", "load_bipo_pt", "load_vector", "save_vector"]
