"""GGUF control vectors: the file format of repeng and llama.cpp's ``--control-vector``.

The format (repeng ``ControlVector.export_gguf``; llama.cpp ``common_control_vector_load``):

- ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the HF
  ``model_type``, e.g. ``"llama"``; informational), ``controlvector.layer_count`` (the
  number of direction tensors);
- one float32 tensor ``direction.{L}`` of shape ``[d_model]`` per steered layer.

Layer convention (read in llama.cpp's source, ``src/llama-adapter.cpp`` and
``src/models/llama.cpp``): the tensor ``direction.{L}`` is added to ``cur`` at the end of
the loop over layer ``il == L`` (0-based), after the feed-forward residual add, i.e. to the
output of decoder block ``L``. That is steerlab's ``HookSite(L, "resid_post")``
(``blocks.{L}.hook_resid_post``), and repeng's layer ``L`` (the output of
``model.layers[L]``). llama.cpp refuses ``direction.0`` ("invalid (zero) direction tensor
layer index") and then ignores the whole file, so block 0 cannot be steered in llama.cpp.

steerlab adds its provenance as a JSON string under ``steerlab.provenance``; other readers
ignore it. Strength: llama.cpp's ``--control-vector-scaled FILE:S`` and repeng's
``set_control(v, coeff=S)`` add ``S * direction``, the same as ``steer(..., multiplier=S)``.
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerlab.errors import (
    ConfigError,
    DModelMismatchError,
    HookSiteError,
    NonFiniteError,
    SteerlabError,
    VectorFileError,
)
from steerlab.models.sites import HookSite
from steerlab.vectors.vector import Provenance, SteeringVector

ARCH = "controlvector"
PROVENANCE_KEY = "steerlab.provenance"
TENSOR_PREFIX = "direction."
#: The one hook kind a GGUF control vector can hold (the output of a decoder block).
GGUF_KIND = "resid_post"


def gguf_tensor_name(site: HookSite) -> str:
    """``HookSite(L, "resid_post")`` -> ``"direction.L"`` (llama.cpp / repeng layer L)."""
    if site.kind != GGUF_KIND:
        raise ConfigError(
            f"GGUF control vectors add to the output of a decoder block (resid_post); {site} "
            f"is a {site.kind!r} site. Fix: export a resid_post vector"
            + (
                f" (resid_pre of layer {site.layer} is resid_post of layer {site.layer - 1}: "
                f"vec.moved_to({site.layer - 1}))."
                if site.kind == "resid_pre" and site.layer > 0
                else ", e.g. fit it at resid_post."
            )
        )
    if site.layer < 0:
        raise HookSiteError(
            f"{site} has a negative layer; resolve it first (site.resolve(model.n_layers))."
        )
    return f"{TENSOR_PREFIX}{site.layer}"


def gguf_site(name: str, where: str = "") -> HookSite:
    """``"direction.L"`` -> ``HookSite(L, "resid_post")``."""
    layer_txt = name[len(TENSOR_PREFIX) :] if name.startswith(TENSOR_PREFIX) else ""
    if not layer_txt.isdigit():
        raise VectorFileError(
            f"{where}tensor {name!r} is not a control-vector direction; the tensors must be "
            "named 'direction.LAYER' (LAYER a non-negative int). Fix: write the file with "
            "SteeringVector.save('x.gguf') or repeng's ControlVector.export_gguf()."
        )
    return HookSite(int(layer_txt), GGUF_KIND)


def default_model_hint(provenance: Provenance) -> str:
    """``controlvector.model_hint`` when none is given: ``"llama"`` for the embedded SmolLM2,
    else a ``model_type`` recorded in the hyperparameters, else the model id."""
    hp = provenance.hyperparameters
    if isinstance(hp.get("model_type"), str):
        return str(hp["model_type"])
    if provenance.model_id.startswith("embedded:"):
        return "llama"
    return provenance.model_id or "unknown"


def save_gguf(
    vector: SteeringVector,
    path: "str | Path",
    *,
    model_hint: str | None = None,
    allow_layer0: bool = False,
) -> Path:
    """Write ``vector`` as a GGUF control vector (float32 ``direction.L`` tensors).

    Args:
        model_hint: ``controlvector.model_hint`` (default :func:`default_model_hint`).
        allow_layer0: write ``direction.0`` although llama.cpp rejects such a file (repeng
            reads it); default: refuse with a ConfigError.
    """
    import gguf

    path = Path(path)
    if path.suffix != ".gguf":
        path = path.with_name(path.name + ".gguf")
    names = {gguf_tensor_name(site): site for site in vector.sites}
    if "direction.0" in names and not allow_layer0:
        raise ConfigError(
            f"This vector steers layer 0 ({names['direction.0']}); llama.cpp rejects a control "
            "vector with 'direction.0' and ignores the whole file (it cannot steer block 0). "
            "Fix: steer a later layer (vec.moved_to(1) or fit at layer >= 1), or pass "
            "allow_layer0=True for a file only repeng will read."
        )
    hint = model_hint if model_hint is not None else default_model_hint(vector.provenance)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, ARCH)
        writer.add_string(f"{ARCH}.model_hint", hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(names))
        prov = json.dumps(vector.provenance.to_dict(), default=str)
        writer.add_string(PROVENANCE_KEY, prov)
        for name, site in sorted(names.items(), key=lambda kv: kv[1].layer):
            t = vector.directions[site].detach().to(device="cpu", dtype=torch.float32)
            writer.add_tensor(name, t.numpy().copy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _field(reader: Any, key: str) -> Any:
    """The value of a GGUF metadata field, or ``None`` when absent."""
    f = reader.get_field(key)
    if f is None:
        return None
    if hasattr(f, "contents"):
        return f.contents()
    part = f.parts[f.data[0]]  # older gguf releases
    return bytes(part).decode("utf-8") if part.dtype == np.uint8 else part.tolist()[0]


def load_gguf(
    path: "str | Path", device: "str | torch.device" = "cpu", *, model: Any = None
) -> SteeringVector:
    """Read a GGUF control vector (steerlab's, repeng's, llama-cvector-generator's).

    Each ``direction.L`` becomes ``HookSite(L, "resid_post")``. Problems raise typed errors
    that name the file and the fix: not a GGUF file or not a control vector (e.g. a model
    file) -> VectorFileError; a tensor that is not 1-D or differs in size -> VectorFileError;
    ``controlvector.layer_count`` disagreeing with the tensors (a missing layer) ->
    VectorFileError; NaN/inf -> NonFiniteError. With ``model=`` the hidden size and the
    layers are checked against it.
    """
    import gguf

    path = Path(path)
    at = f"{str(path)!r}: "
    if not path.is_file():
        raise VectorFileError(f"GGUF control vector {str(path)!r} does not exist.")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:
        raise VectorFileError(
            f"{at}not a readable GGUF file ({exc}). Fix: pass a control vector written by "
            "SteeringVector.save('x.gguf'), repeng's export_gguf() or llama-cvector-generator."
        ) from exc
    arch = _field(reader, "general.architecture")
    if arch != ARCH:
        n_layers = _field(reader, f"{arch}.block_count") if isinstance(arch, str) else None
        what = f"a {arch!r} model file" if n_layers is not None else f"architecture {arch!r}"
        raise VectorFileError(
            f"{at}is {what}, not a control vector (general.architecture must be {ARCH!r}). "
            "Fix: pass the control-vector .gguf (to run a GGUF model, load it with "
            "steerlab.load_model(<its directory>))."
        )
    directions: dict[HookSite, torch.Tensor] = {}
    d_model = None
    for tensor in reader.tensors:
        site = gguf_site(tensor.name, at)
        data = np.asarray(tensor.data)
        if tensor.tensor_type not in (
            gguf.GGMLQuantizationType.F32,
            gguf.GGMLQuantizationType.F16,
            gguf.GGMLQuantizationType.F64,
        ):
            raise VectorFileError(
                f"{at}{tensor.name} has type {tensor.tensor_type.name}; a control vector "
                "holds float32 tensors (llama.cpp accepts only F32). Fix: re-export it."
            )
        shape = tuple(int(n) for n in tensor.shape if int(n) != 1) or (int(data.size),)
        if len(shape) != 1:
            raise VectorFileError(
                f"{at}{tensor.name} has shape {tuple(int(n) for n in tensor.shape)}; each "
                "direction must be 1-D [d_model]. Fix: write one direction tensor per layer."
            )
        if d_model is not None and shape[0] != d_model:
            raise VectorFileError(
                f"{at}{tensor.name} has {shape[0]} entries but earlier directions have "
                f"{d_model}; all layers of one vector share d_model. Fix: re-export the vector "
                "for a single model."
            )
        d_model = shape[0]
        t = torch.from_numpy(data.astype(np.float32).reshape(-1).copy())
        if not bool(torch.isfinite(t).all()):
            n_bad = int((~torch.isfinite(t)).sum())
            raise NonFiniteError(
                f"{at}{tensor.name} has {n_bad} NaN/inf entries; a steering vector must be "
                "finite. Fix: re-train or re-export the vector (check the training run)."
            )
        directions[site] = t.to(device)
    if not directions:
        raise VectorFileError(
            f"{at}is a control-vector GGUF without direction tensors. Fix: re-export it."
        )
    count = _field(reader, f"{ARCH}.layer_count")
    if count is not None and int(count) != len(directions):
        layers = ", ".join(str(s.layer) for s in sorted(directions))
        raise VectorFileError(
            f"{at}controlvector.layer_count says {int(count)} layers but the file holds "
            f"{len(directions)} direction tensors (layers {layers}): a layer is missing or the "
            "file was cut short. Fix: re-export the vector."
        )
    prov = _provenance(reader, path, at)
    try:
        vec = SteeringVector(directions, prov)
    except SteerlabError as exc:
        raise VectorFileError(f"{at}holds an invalid vector: {exc}") from exc
    if model is not None:
        if vec.d_model != model.d_model:
            raise DModelMismatchError(
                f"{at}is a {vec.d_model}-d control vector but {model.model_id} has d_model="
                f"{model.d_model}. Fix: load a vector made for this model."
            )
        vec.check_model(model.d_model, model.n_layers, model.model_id)
    return vec


def _provenance(reader: Any, path: Path, at: str) -> Provenance:
    raw = _field(reader, PROVENANCE_KEY)
    if raw is not None:
        try:
            return Provenance.from_dict(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise VectorFileError(f"{at}has corrupt {PROVENANCE_KEY} metadata: {exc}.") from exc
    hint = _field(reader, f"{ARCH}.model_hint")
    return Provenance(
        model_id=str(hint) if hint is not None else "unknown",
        method="gguf-import",
        hyperparameters={"source_file": str(path), "model_hint": hint},
    )
