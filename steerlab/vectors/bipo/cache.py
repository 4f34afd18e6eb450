"""What BiPO computes once: packed pairs, residuals below the layer, reference log-probs."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steerlab.activations.batch import length_sorted_batches
from steerlab.activations.prompts import encode_pair
from steerlab.models.model import SteerlabModel
from steerlab.utils.progress import progress_bar
from steerlab.vectors.bipo.fastpath import lower_residuals, upper_token_logprobs
from steerlab.vectors.bipo.packing import PackedBatch, PackedPair, collate, pack, sequence_logprobs


@dataclass(frozen=True, eq=False)
class PairCache:
    """Per pair: the packed tokens, the residual after the first steering layer
    (``[len, d_model]``) and the reference log-probs of both responses."""

    packed: tuple[PackedPair, ...]
    residuals: tuple[Tensor, ...]
    ref_matching: Tensor
    ref_not_matching: Tensor
    layer: int

    @property
    def lengths(self) -> list[int]:
        return [len(p) for p in self.packed]

    @property
    def nbytes(self) -> int:
        return (
            sum(r.numel() * r.element_size() for r in self.residuals)
            + 2 * self.ref_matching.numel() * 8
        )

    def batch(
        self, idx: Sequence[int], pad_id: int, device: torch.device
    ) -> tuple[PackedBatch, Tensor]:
        b = collate([self.packed[i] for i in idx], pad_id).to(device)
        width = b.ids.shape[1]
        first = self.residuals[idx[0]]
        resid = torch.zeros(len(idx), width, first.shape[-1], dtype=first.dtype, device=device)
        for j, i in enumerate(idx):
            r = self.residuals[i]
            resid[j, : r.shape[0]] = r.to(device)
        return b, resid


def pack_pairs(model: SteerlabModel, pairs: Sequence[Any]) -> list[PackedPair]:
    return [pack(*encode_pair(model, p)) for p in pairs]


@torch.no_grad()
def build_cache(
    model: SteerlabModel,
    pairs: Sequence[Any],
    layer: int,
    *,
    batch_size: int = 8,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    desc: str = "BiPO cache",
) -> PairCache:
    """Encode and pack ``pairs``; store ``resid_post`` of ``layer`` and reference log-probs
    (the same frozen model without any vector: no second model copy)."""
    packed = pack_pairs(model, pairs)
    lengths = [len(p) for p in packed]
    residuals: list[Tensor | None] = [None] * len(packed)
    ref_m = torch.zeros(len(packed), dtype=torch.float64)
    ref_n = torch.zeros(len(packed), dtype=torch.float64)
    for idx in progress_bar(
        length_sorted_batches(lengths, batch_size), desc=desc, enabled=progress
    ):
        b = collate([packed[i] for i in idx], model.pad_token_id).to(model.device)
        resid = lower_residuals(model, b, layer)
        lp = upper_token_logprobs(model, resid, b, layer)
        m, n = sequence_logprobs(lp, b)
        for j, i in enumerate(idx):
            residuals[i] = resid[j, : lengths[i]].to(dtype or resid.dtype).clone()
            ref_m[i], ref_n[i] = float(m[j]), float(n[j])
    return PairCache(
        tuple(packed), tuple(r for r in residuals if r is not None), ref_m, ref_n, layer
    )
