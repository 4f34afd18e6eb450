"""Export a vector as lm-evaluation-harness's ``steered`` model file (``.pt``).

lm-eval's ``SteeredModel`` (``lm_eval/models/hf_steered.py``, ``--model steered
--model_args pretrained=DIR,steer_path=x.pt``) loads ``{hookpoint: {"steering_vector",
"steering_coefficient", "action", "bias", "head_index"}}``; ``hookpoint`` is a module
name of ``model.base_model`` (for Llama-family models ``layers.14``), and the ``add``
action adds ``coefficient * vector`` to that module's output (the first element when the
output is a tuple) at every position.

Site -> module (``DEFAULT_MODULES``, Llama/Mistral/Qwen naming): ``resid_post`` L ->
``layers.L`` (the decoder block's output), ``attn_out`` L -> ``layers.L.self_attn``,
``mlp_out`` L -> ``layers.L.mlp``, ``resid_pre`` L (L >= 1) -> ``layers.{L-1}`` (the same
tensor). Other architectures pass ``modules=`` (GPT-2: ``{"resid_post": "h.{layer}"...}``).

Each entry also carries ``steerlab_site`` and ``steerlab_provenance`` (JSON), which lm-eval
ignores.
"""

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import ConfigError, did_you_mean
from steerlab.models.sites import HookSite
from steerlab.vectors.vector import SteeringVector

DEFAULT_MODULES: dict[str, str] = {
    "resid_post": "layers.{layer}",
    "attn_out": "layers.{layer}.self_attn",
    "mlp_out": "layers.{layer}.mlp",
}


def lm_eval_hookpoint(site: HookSite, modules: Mapping[str, str] | None = None) -> str:
    """The ``model.base_model`` module whose output is ``site``."""
    table = dict(DEFAULT_MODULES if modules is None else modules)
    if site.layer < 0:
        raise ConfigError(f"{site} has a negative layer; resolve it against the model first.")
    if site.kind == "resid_pre" and site.layer >= 1 and "resid_post" in table:
        return table["resid_post"].format(layer=site.layer - 1)
    if site.kind not in table:
        raise ConfigError(
            f"{site} has no module in lm-eval's steered model (a forward hook edits a module's "
            f"output; kinds with a module: {', '.join(table)}). Fix: export a resid_post, "
            "attn_out or mlp_out vector, or pass modules={kind: 'template.{layer}'}."
        )
    return table[site.kind].format(layer=site.layer)


def lm_eval_steer_config(
    vector: SteeringVector,
    multiplier: float = 1.0,
    *,
    modules: Mapping[str, str] | None = None,
    hf_model: Any = None,
) -> dict[str, dict[str, Any]]:
    """The dict lm-eval's ``SteeredModel`` loads; with ``hf_model`` the hookpoints are
    checked against ``hf_model.base_model.named_modules()``."""
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
        raise ConfigError(f"multiplier must be a number, got {multiplier!r}.")
    known = None
    if hf_model is not None:
        known = {name for name, _ in hf_model.base_model.named_modules()}
    prov = json.dumps(vector.provenance.to_dict(), default=str)
    out: dict[str, dict[str, Any]] = {}
    for site, t in vector.directions.items():
        hook = lm_eval_hookpoint(site, modules)
        if known is not None and hook not in known:
            raise ConfigError(
                f"Module {hook!r} (for {site}) is not in the model.{did_you_mean(hook, known)} "
                "Fix: pass modules= with this architecture's module names."
            )
        if hook in out:
            raise ConfigError(
                f"Two sites map to the module {hook!r} ({out[hook]['steerlab_site']} and "
                f"{site}); lm-eval holds one vector per module. Fix: add them first."
            )
        out[hook] = {
            "steering_vector": t.detach().to(device="cpu", dtype=torch.float32).clone(),
            "steering_coefficient": float(multiplier),
            "action": "add",
            "bias": None,
            "head_index": None,
            "steerlab_site": site.key,
            "steerlab_provenance": prov,
        }
    return out


def save_lm_eval_steer(
    vector: SteeringVector,
    path: "str | Path",
    multiplier: float = 1.0,
    *,
    modules: Mapping[str, str] | None = None,
    hf_model: Any = None,
) -> Path:
    """Write the ``.pt`` file for ``lm_eval --model steered --model_args
    pretrained=MODEL,steer_path=PATH``; steering there equals ``steer(model, vector,
    multiplier=multiplier)``."""
    path = Path(path)
    if path.suffix not in (".pt", ".pth"):
        path = path.with_name(path.name + ".pt")
    config = lm_eval_steer_config(vector, multiplier, modules=modules, hf_model=hf_model)
    buf = io.BytesIO()
    torch.save(config, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path
