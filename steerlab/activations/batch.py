"""Right-padded token batches with prompt / response bookkeeping."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from steerlab.errors import EmptyInputError
from steerlab.models.chat import EncodedText


@dataclass(frozen=True)
class TokenBatch:
    """Sequences padded on the right.

    ids, attention_mask: ``[batch, pos]``; prompt_lens / lengths: ``[batch]``.
    Row ``i`` holds its prompt at ``0..prompt_lens[i]-1`` and its response at
    ``prompt_lens[i]..lengths[i]-1``; the rest is padding.
    """

    ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    prompt_lens: Int[Tensor, " batch"]
    lengths: Int[Tensor, " batch"]

    @property
    def response_mask(self) -> Bool[Tensor, "batch pos"]:
        """True at response tokens."""
        pos = torch.arange(self.ids.shape[1], device=self.ids.device)[None, :]
        return (pos >= self.prompt_lens[:, None]) & (pos < self.lengths[:, None])

    @property
    def target_mask(self) -> Bool[Tensor, "batch pos"]:
        """True at positions whose *next* token is a response token (logit positions)."""
        pos = torch.arange(self.ids.shape[1], device=self.ids.device)[None, :]
        return (pos >= self.prompt_lens[:, None] - 1) & (pos < self.lengths[:, None] - 1)

    @property
    def last_prompt_index(self) -> Int[Tensor, " batch"]:
        return self.prompt_lens - 1

    @property
    def last_index(self) -> Int[Tensor, " batch"]:
        return self.lengths - 1

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(
            self.ids.to(device),
            self.attention_mask.to(device),
            self.prompt_lens.to(device),
            self.lengths.to(device),
        )


def right_pad(
    encoded: Sequence[EncodedText], pad_id: int, device: "torch.device | str" = "cpu"
) -> TokenBatch:
    if not encoded:
        raise EmptyInputError("Cannot build a batch from zero sequences.")
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        row = e.ids
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    prompt_lens = torch.tensor([e.prompt_len for e in encoded], dtype=torch.long)
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
    return TokenBatch(ids.to(device), mask.to(device), prompt_lens.to(device), lengths.to(device))


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), order-preserving
    within equal lengths; callers scatter results back by index."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
