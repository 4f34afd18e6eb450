"""Pure fitting math on contrastive activations, and the registry of vector methods."""

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch
from jaxtyping import Float
from torch import Tensor

from steerlab._registry import Registry
from steerlab.activations.stored import ContrastiveActivations
from steerlab.errors import EmptyInputError
from steerlab.models.sites import HookSite
from steerlab.vectors.vector import Provenance, SteeringVector


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


def vector_from_acts(
    acts: ContrastiveActivations,
    method: str,
    reducer: Callable[[ContrastiveActivations, HookSite], Tensor],
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


METHODS: Registry[Fitter] = Registry("vector method")


def fit(
    method: str, model: Any, data: Iterable[Any], layers: Sequence[int], **kwargs: Any
) -> SteeringVector:
    """Fit a vector with a registered method (``caa``, ``freeform``, ``pca``, ``bipo``)."""
    return METHODS.get(method)(model, data, layers, **kwargs)
