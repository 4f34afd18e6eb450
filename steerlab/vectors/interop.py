"""Vectors from and to peers' objects: repeng ``ControlVector``, steering-vectors
``SteeringVector``.

Layer conventions (read in their sources):

- repeng: ``directions[L]`` is added to the output of ``model.layers[L]`` (its
  ``ControlModule`` wraps the decoder block) -> ``HookSite(L, "resid_post")``.
- steering-vectors: ``layer_activations[L]`` is added by a forward hook on the ``L``-th module
  matching the ``layer_type``: ``"decoder_block"`` -> ``resid_post``, ``"self_attn"`` ->
  ``attn_out``, ``"mlp"`` -> ``mlp_out``. Its layernorm layer types have no steerlab site.

Neither package is imported here unless a function needs to build one of its objects.
"""

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from steerlab.errors import ConfigError
from steerlab.models.sites import HookSite
from steerlab.vectors.vector import Provenance, SteeringVector

#: steering-vectors ``layer_type`` -> steerlab hook kind.
SV_LAYER_KINDS: dict[str, str] = {
    "decoder_block": "resid_post",
    "self_attn": "attn_out",
    "mlp": "mlp_out",
}


def _provenance(default_method: str, provenance: Mapping[str, Any]) -> Provenance:
    return Provenance(**{"method": default_method, **provenance})


def from_repeng(control_vector: Any, **provenance: Any) -> SteeringVector:
    """A repeng ``ControlVector`` as a steerlab vector (``directions[L]`` -> resid_post L).

    ``provenance`` overrides fields (``behavior=``, ``model_id=``...); the default
    ``model_id`` is repeng's ``model_type``.
    """
    dirs = getattr(control_vector, "directions", None)
    if not isinstance(dirs, Mapping) or not dirs:
        raise ConfigError(
            f"Expected a repeng ControlVector with a non-empty .directions dict, got "
            f"{type(control_vector).__name__}. Fix: pass repeng.ControlVector.train(...)'s "
            "result or ControlVector.import_gguf(path)."
        )
    out: dict[HookSite, torch.Tensor] = {}
    for layer, d in dirs.items():
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
            raise ConfigError(f"repeng direction key {layer!r} is not a non-negative layer index.")
        out[HookSite(int(layer))] = torch.as_tensor(np.asarray(d)).reshape(-1).clone()
    prov = {"model_id": str(getattr(control_vector, "model_type", "unknown")), **provenance}
    return SteeringVector(out, _provenance("repeng", prov))


def import_repeng() -> Any:
    """``import repeng``. repeng 0.4.0 names ``np.float_`` (removed in NumPy 2) in method
    annotations, which only matters while its module body runs; a missing alias is added
    for that import and removed again."""
    added = "float_" not in np.__dict__
    if added:
        np.float_ = np.float64  # type: ignore[attr-defined]
    try:
        return importlib.import_module("repeng")
    finally:
        if added:
            del np.float_  # type: ignore[attr-defined]


def to_repeng(vector: SteeringVector, model_type: str | None = None) -> Any:
    """A repeng ``ControlVector`` (float32 numpy directions) of a resid_post vector."""
    from steerlab.vectors.gguf import default_model_hint, gguf_tensor_name

    repeng = import_repeng()
    dirs = {}
    for site, t in vector.directions.items():
        gguf_tensor_name(site)  # the same rule: resid_post only, named error otherwise
        dirs[site.layer] = t.detach().to(device="cpu", dtype=torch.float32).numpy().copy()
    hint = model_type or default_model_hint(vector.provenance)
    return repeng.ControlVector(model_type=hint, directions=dirs)


def from_steering_vectors(sv: Any, **provenance: Any) -> SteeringVector:
    """A ``steering_vectors.SteeringVector`` as a steerlab vector (layer types mapped by
    :data:`SV_LAYER_KINDS`)."""
    acts = getattr(sv, "layer_activations", None)
    layer_type = getattr(sv, "layer_type", None)
    if not isinstance(acts, Mapping) or not acts:
        raise ConfigError(
            f"Expected a steering_vectors.SteeringVector with non-empty layer_activations, got "
            f"{type(sv).__name__}."
        )
    if layer_type not in SV_LAYER_KINDS:
        raise ConfigError(
            f"steering-vectors layer_type {layer_type!r} has no steerlab hook site; supported: "
            f"{', '.join(SV_LAYER_KINDS)}. Fix: train the vector with layer_type='decoder_block'."
        )
    kind = SV_LAYER_KINDS[str(layer_type)]
    out: dict[HookSite, torch.Tensor] = {}
    for layer, t in acts.items():
        if layer < 0:
            raise ConfigError(
                f"steering-vectors layer {layer} is negative; steerlab needs it resolved. Fix: "
                "give from_steering_vectors a vector trained with non-negative layers."
            )
        out[HookSite(int(layer), kind)] = torch.as_tensor(t).detach().reshape(-1).clone()
    return SteeringVector(out, _provenance("steering-vectors", provenance))


def to_steering_vectors(vector: SteeringVector) -> Any:
    """A ``steering_vectors.SteeringVector`` of a vector whose sites share one kind."""
    from steering_vectors import SteeringVector as SVSteeringVector

    kinds = {s.kind for s in vector.sites}
    by_kind = {v: k for k, v in SV_LAYER_KINDS.items()}
    if len(kinds) != 1 or next(iter(kinds)) not in by_kind:
        raise ConfigError(
            f"steering-vectors holds one layer type per vector; this vector has kinds "
            f"{sorted(kinds)} (supported: {', '.join(by_kind)}). Fix: split it with "
            "vec.at_site(site)."
        )
    acts = {s.layer: t.detach().clone() for s, t in vector.directions.items()}
    return SVSteeringVector(acts, by_kind[next(iter(kinds))])  # type: ignore[arg-type]
