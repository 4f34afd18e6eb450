"""PCA projections of contrastive activations, per layer, with steering directions in them.

For one hook site, PCA (scikit-learn) is fitted on the matching and not-matching
activations together; both clouds are projected onto the first two components, each
steering vector's direction at that site is projected into the same plane, and the
separation of matching vs not-matching is measured:

- ``d_prime``: (mean matching - mean not matching) / pooled std along an axis (PC1, PC2
  and every vector's direction). The PCs are oriented so that matching scores higher.
- ``pair_accuracy``: share of pairs whose matching activation projects higher than its
  not-matching partner.
- ``logreg_accuracy``: cross-validated logistic-regression accuracy in the PC1-PC2
  plane (folds keep both sides of a pair together), and in the full space.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from steerlab.activations.stored import ContrastiveActivations
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.evaluation.multipliers import vector_label
from steerlab.models.sites import HookSite
from steerlab.vectors.vector import SteeringVector


@dataclass(frozen=True, eq=False)
class Projection:
    """The PCA picture of one hook site.

    Attributes:
        site: where the activations were read.
        points: one row per activation: ``item, side ('matching' / 'not_matching'),
            pc1, pc2``.
        components: ``[2, d_model]`` unit principal axes (oriented: matching > not
            matching on each).
        explained_variance_ratio: of PC1 and PC2.
        directions: one row per steering vector with a direction at ``site``: ``vector,
            method, pc1, pc2`` (the unit direction's coordinates in the plane),
            ``in_plane`` (norm of that projection, 1 = entirely in the plane), ``norm``.
        separation: one row per axis (``PC1``, ``PC2``, each vector label):
            ``axis, d_prime, pair_accuracy``.
        logreg_accuracy: cross-validated accuracy in the PC1-PC2 plane.
        logreg_accuracy_full: the same in the full ``d_model`` space.
    """

    site: HookSite
    points: pd.DataFrame
    components: np.ndarray
    explained_variance_ratio: tuple[float, float]
    directions: pd.DataFrame
    separation: pd.DataFrame
    logreg_accuracy: float
    logreg_accuracy_full: float

    @property
    def layer(self) -> int:
        return self.site.layer

    def d_prime(self, axis: str = "PC1") -> float:
        row = self.separation[self.separation["axis"] == axis]
        if row.empty:
            raise ConfigError(
                f"No axis {axis!r}; axes: {', '.join(self.separation['axis'].astype(str))}."
            )
        return float(row["d_prime"].iloc[0])


@dataclass(frozen=True, eq=False)
class LayerProjections:
    """:class:`Projection` per site and a summary frame (one row per site).

    ``summary`` columns: ``layer, kind, explained_pc1, explained_pc2, d_prime_pc1,
    pair_accuracy_pc1, logreg_accuracy, logreg_accuracy_full`` and, per vector method,
    ``d_prime_<method>`` and ``in_plane_<method>``.
    """

    projections: dict[HookSite, Projection]
    summary: pd.DataFrame


def separation(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """``(d_prime, pair_accuracy)`` of two paired 1-D projections."""
    pos, neg = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    pooled = np.sqrt((pos.var(ddof=1) + neg.var(ddof=1)) / 2) if len(pos) > 1 else 0.0
    diff = float(pos.mean() - neg.mean())
    if pooled > 0:
        d_prime = diff / pooled
    else:
        d_prime = float("inf") * np.sign(diff) if diff else 0.0
    return float(d_prime), float((pos > neg).mean())


def _cv_accuracy(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    n_groups = len(np.unique(groups))
    k = min(folds, n_groups)
    if k < 2:
        return float("nan")
    scores = []
    for train, test in GroupKFold(n_splits=k).split(x, y, groups):
        if len(np.unique(y[train])) < 2:
            continue
        clf = LogisticRegression(max_iter=2000, random_state=seed)
        clf.fit(x[train], y[train])
        scores.append(float(clf.score(x[test], y[test])))
    return float(np.mean(scores)) if scores else float("nan")


def pca_projection(
    acts: ContrastiveActivations,
    site: "HookSite | int | None" = None,
    vectors: Sequence[SteeringVector] = (),
    *,
    folds: int = 5,
    seed: int = 0,
) -> Projection:
    """PCA of one site's matching + not-matching activations, with ``vectors`` projected.

    ``site`` may be omitted when ``acts`` has one site; an int means ``resid_post``.
    A vector contributes a direction when it has one at ``site`` (or when it has a
    single site and ``acts`` a single site: then its direction is used as it is).
    """
    from sklearn.decomposition import PCA

    sites = acts.sites
    if site is None:
        if len(sites) != 1:
            raise ConfigError(
                f"These activations cover {len(sites)} sites ({', '.join(map(str, sites))}); "
                "pass site= or use pca_by_layer()."
            )
        key = sites[0]
    else:
        key = HookSite(site) if isinstance(site, int) else site
        if key not in acts.matching:
            raise ConfigError(f"No activations at {key}; these cover {', '.join(map(str, sites))}.")
    pos = acts.matching[key].double().cpu().numpy()
    neg = acts.not_matching[key].double().cpu().numpy()
    n = pos.shape[0]
    if n < 2:
        raise EmptyInputError(f"PCA needs at least 2 pairs; got {n} at {key}.")
    x = np.concatenate([pos, neg])
    pca = PCA(n_components=2, random_state=seed).fit(x)
    comps = pca.components_.copy()
    proj = (x - pca.mean_) @ comps.T
    for k in range(2):  # orient each axis so that matching projects higher
        if proj[:n, k].mean() < proj[n:, k].mean():
            comps[k], proj[:, k] = -comps[k], -proj[:, k]
    points = pd.DataFrame(
        {
            "item": np.concatenate([np.arange(n), np.arange(n)]),
            "side": ["matching"] * n + ["not_matching"] * n,
            "pc1": proj[:, 0],
            "pc2": proj[:, 1],
        }
    )
    sep_rows = []
    for k, axis in enumerate(("PC1", "PC2")):
        dp, acc = separation(proj[:n, k], proj[n:, k])
        sep_rows.append({"axis": axis, "d_prime": dp, "pair_accuracy": acc})
    dir_rows = []
    for vec in vectors:
        if key in vec.directions:
            d = vec.directions[key]
        elif len(vec.sites) == 1 and len(sites) == 1:
            d = vec.direction()
        else:
            continue
        d = d.double().cpu().numpy()
        norm = float(np.linalg.norm(d))
        if norm == 0:
            continue
        unit = d / norm
        c1, c2 = float(comps[0] @ unit), float(comps[1] @ unit)
        label = vector_label(vec)
        dir_rows.append(
            {
                "vector": label,
                "method": vec.method,
                "pc1": c1,
                "pc2": c2,
                "in_plane": float(np.hypot(c1, c2)),
                "norm": norm,
            }
        )
        dp, acc = separation(pos @ unit, neg @ unit)
        sep_rows.append({"axis": label, "d_prime": dp, "pair_accuracy": acc})
    y = np.concatenate([np.ones(n), np.zeros(n)])
    groups = np.concatenate([np.arange(n), np.arange(n)])
    return Projection(
        site=key,
        points=points,
        components=comps,
        explained_variance_ratio=(
            float(pca.explained_variance_ratio_[0]),
            float(pca.explained_variance_ratio_[1]),
        ),
        directions=pd.DataFrame(
            dir_rows, columns=["vector", "method", "pc1", "pc2", "in_plane", "norm"]
        ),
        separation=pd.DataFrame(sep_rows, columns=["axis", "d_prime", "pair_accuracy"]),
        logreg_accuracy=_cv_accuracy(proj, y, groups, folds, seed),
        logreg_accuracy_full=_cv_accuracy(x, y, groups, folds, seed),
    )


def pca_by_layer(
    acts: ContrastiveActivations,
    vectors: Sequence[SteeringVector] = (),
    *,
    folds: int = 5,
    seed: int = 0,
) -> LayerProjections:
    """:func:`pca_projection` at every site of ``acts`` and a one-row-per-site summary."""
    projections: dict[HookSite, Projection] = {}
    rows = []
    for site in acts.sites:
        p = pca_projection(acts, site, vectors, folds=folds, seed=seed)
        projections[site] = p
        pc1 = p.separation.iloc[0]
        row = {
            "layer": site.layer,
            "kind": site.kind,
            "explained_pc1": p.explained_variance_ratio[0],
            "explained_pc2": p.explained_variance_ratio[1],
            "d_prime_pc1": float(pc1["d_prime"]),
            "pair_accuracy_pc1": float(pc1["pair_accuracy"]),
            "logreg_accuracy": p.logreg_accuracy,
            "logreg_accuracy_full": p.logreg_accuracy_full,
        }
        for _, d in p.directions.iterrows():
            row[f"d_prime_{d['method']}"] = p.d_prime(str(d["vector"]))
            row[f"in_plane_{d['method']}"] = float(d["in_plane"])
        rows.append(row)
    return LayerProjections(projections, pd.DataFrame(rows))


__all__ = ["LayerProjections", "Projection", "pca_by_layer", "pca_projection", "separation"]
