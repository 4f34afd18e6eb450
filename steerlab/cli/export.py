"""``steerlab vector export VECTOR --format gguf|lm-eval``: run a steerlab vector elsewhere.

- ``gguf``: a GGUF control vector for llama.cpp (``--control-vector-scaled x.gguf:M``) and
  repeng (``ControlVector.import_gguf``); ``direction.L`` is steerlab's resid_post L.
- ``lm-eval``: lm-evaluation-harness's ``steered`` model file (``--model steered
  --model_args pretrained=MODEL,steer_path=x.pt``) with ``--multiplier`` as its coefficient.
"""

from pathlib import Path
from typing import Literal

import typer

from steerlab.cli import _common
from steerlab.errors import ConfigError

_SUFFIX = {"gguf": ".gguf", "lm-eval": ".pt"}


def export_cmd(
    vector: Path = typer.Argument(..., help="A steerlab vector file (.safetensors or .gguf)."),
    format: Literal["gguf", "lm-eval"] = typer.Option(
        ..., "--format", help="gguf (llama.cpp, repeng) or lm-eval (steered .pt)."
    ),
    out: Path | None = typer.Option(
        None, help="Output file (default: the input's name with .gguf / .pt)."
    ),
    multiplier: float = typer.Option(1.0, help="lm-eval: the steering coefficient stored."),
    model_hint: str | None = typer.Option(
        None, help="gguf: controlvector.model_hint (default: 'llama' for the embedded model)."
    ),
) -> None:
    """Export a vector as a GGUF control vector or an lm-eval steered file."""
    from steerlab.vectors.gguf import save_gguf
    from steerlab.vectors.io import load_vector
    from steerlab.vectors.lm_eval_export import save_lm_eval_steer

    target = _common.check_out_file(out or vector.with_suffix(_SUFFIX[format]))
    if target.resolve() == vector.resolve():
        raise ConfigError(f"--out {target} is the input file; give another --out path.")
    vec = load_vector(vector)
    if format == "gguf":
        path = save_gguf(vec, target, model_hint=model_hint)
        hint = f"llama-cli -m MODEL.gguf --control-vector-scaled {path}:{multiplier:g}"
    else:
        path = save_lm_eval_steer(vec, target, multiplier)
        hint = f"lm_eval --model steered --model_args pretrained=MODEL,steer_path={path}"
    console = _common.console()
    console.print(f"wrote {path} ({', '.join(str(s) for s in vec.sites)})")
    console.print(f"run it: {hint}", soft_wrap=True)
