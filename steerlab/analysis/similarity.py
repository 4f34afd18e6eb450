"""Cosine similarity between steering vectors, and the released BiPO vectors' norms.

Everything here returns data: a :class:`SimilarityResult` (a labelled matrix and the same
numbers as a tidy frame) or a :class:`ReleasedVectors` table. Figures are built from them
in :mod:`steerlab.viz.figures`.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from steerlab.errors import ConfigError, DataNotFoundError, EmptyInputError
from steerlab.evaluation.multipliers import vector_label, vector_layer
from steerlab.vectors.vector import SteeringVector

#: Where the released vectors live under a data root (see ``steerlab.data.roots``).
RELEASED_DIR = "bipo/pretrained_vector"
_RELEASED_FILE = re.compile(r"vec_ep(?P<epochs>\d+)_layer(?P<layer>\d+)\.pt$")


@dataclass(frozen=True, eq=False)
class SimilarityResult:
    """Pairwise cosine similarities.

    Attributes:
        labels: one label per vector (``method:behavior:Llayer`` unless given).
        matrix: ``[n, n]`` cosines (``NaN`` where two vectors share no hook site and
            ``by_site=True``).
        frame: the same numbers, tidy: ``a, b, method_a, method_b, behavior_a,
            behavior_b, layer_a, layer_b, cosine``.
    """

    labels: tuple[str, ...]
    matrix: np.ndarray
    frame: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        """The matrix as a labelled square DataFrame."""
        return pd.DataFrame(self.matrix, index=list(self.labels), columns=list(self.labels))


def _unique_labels(vectors: Sequence[SteeringVector], labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(vectors):
            raise ConfigError(
                f"Got {len(labels)} labels for {len(vectors)} vectors; pass one label per vector."
            )
        return [str(x) for x in labels]
    out: list[str] = []
    for v in vectors:
        label = vector_label(v)
        k, base = 2, label
        while label in out:
            label, k = f"{base}#{k}", k + 1
        out.append(label)
    return out


def _flat(v: SteeringVector) -> torch.Tensor:
    return torch.cat([v.directions[s].double().cpu() for s in v.sites])


def cosine_matrix(
    vectors: "Sequence[SteeringVector] | Mapping[str, SteeringVector]",
    labels: Sequence[str] | None = None,
    *,
    by_site: bool = False,
) -> SimilarityResult:
    """Cosine similarity of every pair of vectors.

    Args:
        vectors: a list of vectors, or a ``{label: vector}`` mapping.
        labels: names for the rows / columns (default: from provenance,
            ``method:behavior:Llayer``; ignored for a mapping).
        by_site: ``False`` (default) compares the directions themselves, so vectors at
            different layers (a sweep's, or the released Llama-2 L15 vs Mistral L13) can be
            compared; multi-site vectors are compared as their concatenated directions
            when they have the same sites. ``True`` compares only over shared hook sites
            (:meth:`SteeringVector.cosine`) and gives ``NaN`` where there are none.
    """
    if isinstance(vectors, Mapping):
        labels, vecs = list(vectors), list(vectors.values())
    else:
        vecs = list(vectors)
    if not vecs:
        raise EmptyInputError("cosine_matrix() needs at least one vector.")
    names = _unique_labels(vecs, labels)
    d_models = {v.d_model for v in vecs}
    if len(d_models) > 1:
        raise ConfigError(
            f"Vectors of different sizes cannot be compared: d_model {sorted(d_models)}. "
            "Compare vectors of one model (or models with the same hidden size)."
        )
    n = len(vecs)
    mat = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i, n):
            a, b = vecs[i], vecs[j]
            if by_site:
                shared = set(a.sites) & set(b.sites)
                c = a.cosine(b) if shared else float("nan")
            elif len(a.sites) == 1 and len(b.sites) == 1:
                c = float(torch.nn.functional.cosine_similarity(_flat(a), _flat(b), dim=0))
            elif set(a.sites) == set(b.sites):
                c = a.cosine(b)
            else:
                raise ConfigError(
                    f"{names[i]} and {names[j]} have different multi-site layouts "
                    f"({', '.join(map(str, a.sites))} vs {', '.join(map(str, b.sites))}); "
                    "pass by_site=True to compare shared sites only."
                )
            mat[i, j] = mat[j, i] = c
    rows = [
        {
            "a": names[i],
            "b": names[j],
            "method_a": vecs[i].method,
            "method_b": vecs[j].method,
            "behavior_a": vecs[i].behavior,
            "behavior_b": vecs[j].behavior,
            "layer_a": vector_layer(vecs[i]),
            "layer_b": vector_layer(vecs[j]),
            "cosine": float(mat[i, j]),
        }
        for i in range(n)
        for j in range(n)
    ]
    frame = pd.DataFrame(rows)
    frame["layer_a"] = frame["layer_a"].astype(object)
    frame["layer_b"] = frame["layer_b"].astype(object)
    return SimilarityResult(tuple(names), mat, frame)


# --- the released BiPO vectors ----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReleasedVectors:
    """The official BiPO vectors: one row per file (``table``) and their cosines.

    ``table`` columns: ``name, behavior, model, layer, epochs, d_model, norm, path``.
    """

    vectors: Mapping[str, SteeringVector]
    table: pd.DataFrame
    similarity: SimilarityResult


def released_bipo_paths(root: "str | Path | None" = None) -> list[Path]:
    """The released ``*.pt`` files under the first data root that has them."""
    from steerlab.data.roots import candidate_roots

    roots = candidate_roots(root)
    for r in roots:
        base = r.path / RELEASED_DIR
        files = sorted(base.glob("*/*.pt")) if base.is_dir() else []
        if files:
            return files
    looked = "; ".join(f"{r.path / RELEASED_DIR} ({r.origin})" for r in roots)
    raise DataNotFoundError(
        f"No released BiPO vectors (*/*.pt) found. Looked in: {looked}. Fix: set "
        "STEERLAB_DATA=/path/to/data or run `steerlab data fetch bipo`."
    )


def load_released_bipo(root: "str | Path | None" = None) -> dict[str, SteeringVector]:
    """``{folder name: vector}`` of the released vectors, e.g. ``'power-seeking_llama-2'``.

    Behavior and model come from the folder name (``BEHAVIOR_MODEL``), layer and epochs
    from the file name (``vec_epE_layerL.pt``); files are read with ``weights_only=True``.
    """
    out: dict[str, SteeringVector] = {}
    for path in released_bipo_paths(root):
        match = _RELEASED_FILE.search(path.name)
        layer = int(match["layer"]) if match else 15
        epochs = int(match["epochs"]) if match else None
        behavior, _, source_model = path.parent.name.rpartition("_")
        out[path.parent.name] = SteeringVector.from_bipo_pt(
            path,
            layer=layer,
            behavior=behavior or path.parent.name,
            model_id=f"{source_model} (official BiPO release)",
            hyperparameters={"source_file": path.name, "layer": layer, "epochs": epochs},
        )
    return out


def released_bipo_table(root: "str | Path | None" = None) -> ReleasedVectors:
    """Norms of the released BiPO vectors and their pairwise cosines.

    The Llama-2 (layer 15) and Mistral (layer 13) vectors live in different models'
    residual streams; their cosines are shown for completeness, not as a like-for-like
    comparison.
    """
    vecs = load_released_bipo(root)
    rows = []
    for name, v in vecs.items():
        hp = v.provenance.hyperparameters
        rows.append(
            {
                "name": name,
                "behavior": v.behavior,
                "model": name.rpartition("_")[2],
                "layer": vector_layer(v),
                "epochs": hp.get("epochs"),
                "d_model": v.d_model,
                "norm": float(next(iter(v.norms().values()))),
                "path": f"{name}/{hp.get('source_file', '')}",
            }
        )
    table = pd.DataFrame(rows)
    return ReleasedVectors(vecs, table, cosine_matrix(vecs))


__all__ = [
    "RELEASED_DIR",
    "ReleasedVectors",
    "SimilarityResult",
    "cosine_matrix",
    "load_released_bipo",
    "released_bipo_paths",
    "released_bipo_table",
]
