"""Steering vectors: the value type, file io, and the methods that fit them.

Importing this package registers the built-in methods (caa, freeform, pca, bipo) in
:data:`METHODS`.
"""

from steerlab.vectors.bipo import BiPOConfig, BiPORun, fit_bipo_run, train_bipo
from steerlab.vectors.caa import fit_caa
from steerlab.vectors.fitting import METHODS, fit, mean_difference, pca_direction
from steerlab.vectors.freeform import fit_freeform
from steerlab.vectors.gguf import load_gguf, save_gguf
from steerlab.vectors.interop import (
    from_repeng,
    from_steering_vectors,
    to_repeng,
    to_steering_vectors,
)
from steerlab.vectors.io import load_bipo_pt, load_vector, save_vector
from steerlab.vectors.lm_eval_export import save_lm_eval_steer
from steerlab.vectors.pca import fit_pca
from steerlab.vectors.vector import Provenance, SteeringVector

__all__ = [
    "METHODS",
    "BiPOConfig",
    "BiPORun",
    "Provenance",
    "SteeringVector",
    "fit",
    "fit_bipo_run",
    "fit_caa",
    "fit_freeform",
    "fit_pca",
    "from_repeng",
    "from_steering_vectors",
    "load_bipo_pt",
    "load_gguf",
    "load_vector",
    "mean_difference",
    "pca_direction",
    "save_gguf",
    "save_lm_eval_steer",
    "save_vector",
    "to_repeng",
    "to_steering_vectors",
    "train_bipo",
]
