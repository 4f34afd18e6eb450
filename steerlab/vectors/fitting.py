"""Pure fitting math on contrastive activations, and the registry of vector methods.

Each method in :data:`METHODS` is a :class:`VectorMethod` record: its fitter and what a
caller needs to schedule it, namely the activation positions it reads and how it turns
them into a direction (methods reading the same positions share one collection pass,
see :func:`fit_vectors`), or the training loop it runs instead (BiPO). ``fit(method,
...)`` fits one registered method.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from jaxtyping import Float
from torch import Tensor

from steerlab._registry import Registry
from steerlab.activations.collect import collect
from steerlab.activations.stored import ContrastiveActivations
from steerlab.data.convert import as_ab_items, as_pairs, behavior_of
from steerlab.data.fingerprints import fingerprint_record
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.sites import HookSite
from steerlab.vectors.vector import Provenance, SteeringVector

#: The direction at one site from contrastive activations.
Reducer = Callable[[ContrastiveActivations, HookSite], Tensor]


def mean_difference(
    pos: Float[Tensor, "n d_model"], neg: Float[Tensor, "n d_model"]
) -> Float[Tensor, " d_model"]:
    """Mean over rows of ``pos - neg``."""
    if pos.shape[0] == 0:
        raise EmptyInputError("mean_difference needs at least one row.")
    return (pos.double() - neg.double()).mean(0).float()


def pca_direction(
    diffs: Float[Tensor, "n d_model"], scale: str = "projection"
) -> Float[Tensor, " d_model"]:
    """First principal component of the pair differences (not centred, like CAA's PCA
    variants: the shared shift is the signal), sign fixed so that most differences
    project positively. ``scale='projection'`` multiplies the unit direction by the
    mean projection of the differences (comparable to a mean difference); ``'unit'``
    keeps it unit-norm."""
    if diffs.shape[0] < 1:
        raise EmptyInputError("pca_direction needs at least one difference.")
    x = diffs.double()
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    pc = vh[0]
    proj = x @ pc
    if float((proj > 0).double().mean()) < 0.5 or (
        float((proj > 0).double().mean()) == 0.5 and float(proj.mean()) < 0
    ):
        pc, proj = -pc, -proj
    if scale == "unit":
        return pc.float()
    return (pc * proj.mean()).float()


def mean_difference_of(acts: ContrastiveActivations, site: HookSite) -> Tensor:
    """:func:`mean_difference` of the matching and not-matching rows at ``site``."""
    return mean_difference(acts.matching[site], acts.not_matching[site])


def pca_direction_of(acts: ContrastiveActivations, site: HookSite) -> Tensor:
    """:func:`pca_direction` of the pair differences at ``site``."""
    return pca_direction(acts.differences(site))


def vector_from_acts(
    acts: ContrastiveActivations,
    method: str,
    reducer: Reducer,
    behavior: str = "unknown",
    hyperparameters: dict[str, Any] | None = None,
) -> SteeringVector:
    directions = {s: reducer(acts, s) for s in acts.sites}
    hp = {"position": acts.position, "n": acts.n, **(hyperparameters or {})}
    prov = Provenance(
        model_id=acts.model_id,
        method=method,
        behavior=behavior,
        hyperparameters=hp,
        dataset_hash=acts.dataset_hash,
    )
    return SteeringVector(directions, prov)


class Fitter(Protocol):
    """A method that turns a model and data into a :class:`SteeringVector`."""

    def __call__(
        self, model: Any, data: Iterable[Any], layers: Sequence[int], **kwargs: Any
    ) -> SteeringVector: ...


@dataclass(frozen=True)
class VectorMethod:
    """A registered vector method: its fitter and how callers schedule it.

    Attributes:
        fit: ``fit(model, data, layers, **kwargs) -> SteeringVector``.
        positions: the activation positions it reads (``collect(..., positions)``);
            methods that read the same positions share one collection pass. None for a
            method that is not fitted from collected activations.
        reduce: its direction at one site from those activations.
        seeded: the seed is recorded in the vector's hyperparameters.
        check_items: called on the collected items before the pass (e.g. a warning).
        train: for a method fitted by a training loop, one run per layer, the function
            returning that run (``.vector``, ``.steps``, ``.epochs``); None otherwise.
    """

    fit: Callable[..., SteeringVector]
    positions: str | None = None
    reduce: Reducer | None = None
    seeded: bool = False
    check_items: Callable[[Sequence[Any]], Any] | None = None
    train: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if (self.positions is None) != (self.reduce is None):
            raise ConfigError(
                "VectorMethod needs both positions= and reduce= (a method fitted from "
                "collected activations) or neither."
            )

    @property
    def trains(self) -> bool:
        """Fitted by a training loop (one run per layer), not from a shared pass."""
        return self.train is not None

    def __call__(
        self, model: Any, data: Iterable[Any], layers: Sequence[int], **kwargs: Any
    ) -> SteeringVector:
        return self.fit(model, data, layers, **kwargs)


METHODS: Registry[VectorMethod] = Registry("vector method")


def fit(
    method: str, model: Any, data: Iterable[Any], layers: Sequence[int], **kwargs: Any
) -> SteeringVector:
    """Fit a vector with a registered method (``caa``, ``freeform``, ``pca``, ``bipo``,
    ``reps``)."""
    return METHODS.get(method).fit(model, data, layers, **kwargs)


def fit_from_activations(
    model: Any,
    data: Iterable[Any],
    methods: Sequence[str],
    layers: Sequence[int],
    *,
    positions: str | None = None,
    behavior: str | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, SteeringVector]:
    """``{method: vector}`` of methods that read the same activations, from one
    collection at ``positions`` (default: the methods' own, which must agree).

    A/B items are read at ``'answer_letter'`` (free-form pairs get a seeded A/B order),
    preference pairs at every other position. ``behavior`` defaults to the dataset's name
    (:func:`~steerlab.data.convert.behavior_of`).
    """
    behavior = behavior_of(data, behavior)
    specs = {m: METHODS.get(m) for m in dict.fromkeys(methods)}
    pos = positions or next(iter(specs.values())).positions
    for m, spec in specs.items():
        if spec.reduce is None or (positions is None and spec.positions != pos):
            raise ConfigError(
                f"Method {m!r} does not read {pos!r} activations; fit it with fit({m!r}, ...)."
            )
    items = as_ab_items(data, seed) if pos == "answer_letter" else as_pairs(data)
    for spec in specs.values():
        if spec.check_items is not None:
            spec.check_items(items)
    acts = collect(model, items, list(layers), pos, batch_size=batch_size, progress=progress)
    # which pairs these were, checked later against a judge's pairs: their fingerprints
    # (any pairs), and for a dataset its size and content hash
    digest = getattr(data, "content_hash", None)
    seen = {"n_train": len(items), "train_hash": digest} if isinstance(digest, str) else {}
    seen.update(fingerprint_record(items))
    return {
        m: vector_from_acts(acts, m, spec.reduce, behavior,
                            {**({"seed": seed} if spec.seeded else {}), **seen} or None)
        for m, spec in specs.items()
        if spec.reduce is not None
    }  # fmt: skip


def shared_passes(methods: Sequence[str]) -> dict[str | None, list[str]]:
    """Methods grouped by the activation positions they read (one pass each); key None:
    the methods fitted on their own (training loops, fitters without a shared pass)."""
    groups: dict[str | None, list[str]] = {}
    for m in dict.fromkeys(methods):
        groups.setdefault(METHODS.get(m).positions, []).append(m)
    return groups


def fit_vectors(
    model: Any,
    train: Sequence[Any],
    methods: Sequence[str],
    layers: Sequence[int],
    *,
    behavior: str | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[tuple[str, int], SteeringVector]:
    """One-layer vectors ``{(method, layer): vector}`` of ``methods`` at ``layers``.

    Methods that read the same activation positions share one collection over all
    ``layers`` (freeform and PCA both read response means); the vectors equal those of
    ``fit(method, ...)``. Any other method is fitted with ``fit(method, ...)`` on all
    layers at once, which for a training method (BiPO) trains one multi-layer vector:
    :func:`steerlab.analysis.sweep` trains those per layer instead.
    """
    layers = [int(x) for x in layers]
    kw: Mapping[str, Any] = {"behavior": behavior, "seed": seed, "batch_size": batch_size,
                             "progress": progress}  # fmt: skip
    multi: dict[str, SteeringVector] = {}
    for positions, group in shared_passes(methods).items():
        if positions is None:
            multi.update({m: fit(m, model, train, layers, **kw) for m in group})
        else:
            multi.update(fit_from_activations(model, train, group, layers, **kw))
    out: dict[tuple[str, int], SteeringVector] = {}
    for method in dict.fromkeys(methods):
        for layer in layers:
            out[(method, layer)] = multi[method].at_site(HookSite(layer).resolve(model.n_layers))
    return out


__all__ = [
    "METHODS",
    "Fitter",
    "Reducer",
    "VectorMethod",
    "fit",
    "fit_from_activations",
    "fit_vectors",
    "mean_difference",
    "mean_difference_of",
    "pca_direction",
    "pca_direction_of",
    "shared_passes",
    "vector_from_acts",
]
