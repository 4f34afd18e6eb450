"""Saving and loading steering vectors (safetensors + JSON metadata), and BiPO ``.pt`` import."""

import json
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import DModelMismatchError, SteerlabError, VectorFileError
from steerlab.models.sites import HookSite
from steerlab.utils.files import atomic_write_bytes
from steerlab.vectors.vector import Provenance, SteeringVector

_META_KEY = "steerlab"
_FORMAT = 1


def save_vector(vector: SteeringVector, path: "str | Path") -> Path:
    """Save as safetensors; tensors keyed ``'LAYER.KIND'``; provenance as JSON metadata.
    A ``.gguf`` path writes a GGUF control vector (:mod:`steerlab.vectors.gguf`)."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix == ".gguf":
        from steerlab.vectors.gguf import save_gguf

        return save_gguf(vector, path)
    if path.suffix != ".safetensors":
        path = (
            path.with_suffix(path.suffix + ".safetensors")
            if path.suffix
            else path.with_suffix(".safetensors")
        )
    tensors = {s.key: t.detach().cpu().contiguous() for s, t in vector.directions.items()}
    meta = {"format": _FORMAT, "provenance": vector.provenance.to_dict()}
    blob = save(tensors, metadata={_META_KEY: json.dumps(meta, default=str)})
    atomic_write_bytes(path, blob)
    return path


def load_vector(path: "str | Path", device: "str | torch.device" = "cpu") -> SteeringVector:
    """Load a vector saved by :func:`save_vector` (or any ``.gguf`` control vector);
    corrupt files raise VectorFileError."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix == ".gguf":
        from steerlab.vectors.gguf import load_gguf

        return load_gguf(path, device)
    if not path.is_file():
        raise VectorFileError(f"Vector file {str(path)!r} does not exist.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw_meta = (f.metadata() or {}).get(_META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:
        raise VectorFileError(
            f"{str(path)!r} is not a readable safetensors file ({exc}). Fix: re-save the "
            "vector with SteeringVector.save(), or import a BiPO .pt with from_bipo_pt()."
        ) from exc
    if raw_meta is None:
        raise VectorFileError(
            f"{str(path)!r} is a safetensors file without steerlab metadata; it was not written "
            "by SteeringVector.save()."
        )
    try:
        meta = json.loads(raw_meta)
        version = meta.get("format", _FORMAT)  # no version written: read it as this one
        prov = Provenance.from_dict(meta["provenance"])
    except (ValueError, KeyError, TypeError) as exc:
        raise VectorFileError(f"{str(path)!r} has corrupt steerlab metadata: {exc}.") from exc
    if version != _FORMAT:
        raise VectorFileError(
            f"{str(path)!r} is in steerlab vector format {version!r}, but this steerlab reads "
            f"format {_FORMAT}. Upgrade steerlab (or re-save the vector with this version)."
        )
    if not tensors:
        raise VectorFileError(f"{str(path)!r} holds no tensors.")
    directions: dict[HookSite, torch.Tensor] = {}
    for key, t in tensors.items():
        try:
            site = HookSite.parse(key)
        except Exception as exc:
            raise VectorFileError(
                f"{str(path)!r}: tensor name {key!r} is not a hook site."
            ) from exc
        directions[site] = t.to(device)
    try:
        return SteeringVector(directions, prov)
    except SteerlabError as exc:
        raise VectorFileError(f"{str(path)!r} holds an invalid vector: {exc}") from exc


def load_bipo_pt(
    path: "str | Path", layer: int = 15, model: Any = None, **provenance: Any
) -> SteeringVector:
    """Import an official BiPO vector file (one float tensor ``[d_model]``), safely.

    Uses ``torch.load(weights_only=True)``: no arbitrary code runs. With ``model=`` the
    hidden size and layer are checked against it.
    """
    path = Path(path)
    if not path.is_file():
        raise VectorFileError(f"BiPO vector file {str(path)!r} does not exist.")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VectorFileError(
            f"{str(path)!r} could not be loaded safely with torch.load(weights_only=True): {exc}."
            " Only plain tensor files are accepted."
        ) from exc
    if isinstance(obj, dict) and len(obj) == 1:
        obj = next(iter(obj.values()))
    if not isinstance(obj, torch.Tensor):
        raise VectorFileError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a tensor; a BiPO vector file "
            "holds one float tensor of shape [d_model]."
        )
    t = obj.detach().float().reshape(-1) if obj.ndim == 2 and 1 in obj.shape else obj.float()
    if t.ndim != 1:
        raise VectorFileError(
            f"{str(path)!r} holds a tensor of shape {tuple(obj.shape)}; expected [d_model]."
        )
    prov = {"method": "bipo", "model_id": "unknown (official BiPO release)", **provenance}
    prov.setdefault("hyperparameters", {"source_file": str(path), "layer": layer})
    vec = SteeringVector({HookSite(layer): t}, Provenance(**prov))
    if model is not None:
        if vec.d_model != model.d_model:
            raise DModelMismatchError(
                f"{path.name} is a {vec.d_model}-d BiPO vector but {model.model_id} has "
                f"d_model={model.d_model}; it cannot be applied to this model. The released "
                "vectors are for Llama-2-7b-chat / Mistral-7B (d_model 4096): load one of those "
                "models, or train a vector for this one with steerlab.train_bipo()."
            )
        vec.check_model(model.d_model, model.n_layers, model.model_id)
    return vec
