"""Reading activations at hook sites (a context manager over TransformerLens hooks)."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from steerlab.models.model import SteerlabModel
from steerlab.models.sites import HookSite


@contextmanager
def capture(
    model: SteerlabModel, sites: Sequence[HookSite], detach: bool = True
) -> Iterator[dict[HookSite, Tensor]]:
    """Record the activation at each site during forward passes inside the block.

    The dict maps each resolved site to the ``[batch, pos, d_model]`` tensor of the
    latest forward pass. Hooks return their input unchanged and are removed on exit.
    """
    store: dict[HookSite, Tensor] = {}
    resolved = [s.resolve(model.n_layers) for s in sites]

    def make(site: HookSite) -> Any:
        def hook(x: Tensor, hook: Any) -> Tensor:
            store[site] = x.detach() if detach else x
            return x

        return hook

    hooks = [(s.hook_name(model), make(s)) for s in resolved]
    with model.bridge.hooks(fwd_hooks=hooks):
        yield store


def stop_layer_for(model: SteerlabModel, sites: Sequence[HookSite]) -> int | None:
    """The ``stop_at_layer`` that still computes every site (None = full forward)."""
    last = max(s.resolve(model.n_layers).layer for s in sites) + 1
    return None if last >= model.n_layers else last


def forward_to_sites(
    model: SteerlabModel, ids: Tensor, attention_mask: Tensor, sites: Sequence[HookSite]
) -> dict[HookSite, Tensor]:
    """Run the model just far enough to read ``sites``; returns ``site -> [b, p, d]``."""
    with torch.no_grad(), capture(model, sites) as store:
        model.bridge(ids, attention_mask=attention_mask, stop_at_layer=stop_layer_for(model, sites))
    return dict(store)
