"""Packing a preference pair into one sequence: prompt, matching, not-matching.

``prompt + matching + not_matching`` share one row; the not-matching tokens may not
attend to the matching ones and take the position ids that follow the prompt, so each
response sees exactly the context it would see alone while the prompt is computed once
for both (attention is causal: the prompt never sees either response).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from steerlab.errors import EmptyInputError
from steerlab.models.chat import EncodedText


@dataclass(frozen=True)
class PackedPair:
    prompt: tuple[int, ...]
    matching: tuple[int, ...]
    not_matching: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.prompt or not self.matching or not self.not_matching:
            raise EmptyInputError(
                "A BiPO pair needs a non-empty prompt and two non-empty responses."
            )

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt + self.matching + self.not_matching

    def __len__(self) -> int:
        return len(self.prompt) + len(self.matching) + len(self.not_matching)

    def position_ids(self) -> list[int]:
        p, c, r = len(self.prompt), len(self.matching), len(self.not_matching)
        return list(range(p + c)) + list(range(p, p + r))

    def targets(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """(positions, tokens) whose logits predict the matching / not-matching tokens."""
        p, c, r = len(self.prompt), len(self.matching), len(self.not_matching)
        pos_m = list(range(p - 1, p + c - 1))
        pos_n = [p - 1] + list(range(p + c, p + c + r - 1))
        return pos_m, list(self.matching), pos_n, list(self.not_matching)


def pack(pos: EncodedText, neg: EncodedText) -> PackedPair:
    if pos.prompt_ids != neg.prompt_ids:
        raise ValueError("The two sides of a pair must share the prompt.")
    return PackedPair(pos.prompt_ids, pos.response_ids, neg.response_ids)


@dataclass(frozen=True)
class PackedBatch:
    """Right-padded packed pairs with their 4-D attention mask and target index lists.

    tgt_row/tgt_pos/tgt_tok: one entry per predicted response token;
    tgt_seg: ``2 * example + side`` (side 0 = matching, 1 = not matching).
    """

    ids: Int[Tensor, "batch pos"]
    position_ids: Int[Tensor, "batch pos"]
    allowed: Bool[Tensor, "batch pos pos"]
    lengths: Int[Tensor, " batch"]
    tgt_row: Int[Tensor, " n_tok"]
    tgt_pos: Int[Tensor, " n_tok"]
    tgt_tok: Int[Tensor, " n_tok"]
    tgt_seg: Int[Tensor, " n_tok"]

    @property
    def batch(self) -> int:
        return int(self.ids.shape[0])

    def attention_mask(self, dtype: torch.dtype) -> Float[Tensor, "batch 1 pos pos"]:
        """Additive 4-D mask: 0 where attention is allowed, the dtype's minimum elsewhere."""
        zero = torch.zeros((), dtype=dtype, device=self.allowed.device)
        neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=self.allowed.device)
        return torch.where(self.allowed, zero, neg).unsqueeze(1)

    def to(self, device: "torch.device | str") -> "PackedBatch":
        return PackedBatch(
            *(
                t.to(device)
                for t in (
                    self.ids,
                    self.position_ids,
                    self.allowed,
                    self.lengths,
                    self.tgt_row,
                    self.tgt_pos,
                    self.tgt_tok,
                    self.tgt_seg,
                )
            )
        )


def collate(pairs: Sequence[PackedPair], pad_id: int) -> PackedBatch:
    if not pairs:
        raise EmptyInputError("Cannot collate zero pairs.")
    width = max(len(p) for p in pairs)
    b = len(pairs)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    pos_ids = torch.zeros((b, width), dtype=torch.long)
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    allowed = causal.repeat(b, 1, 1)
    rows, poss, toks, segs = [], [], [], []
    for i, p in enumerate(pairs):
        n, np_, nc = len(p), len(p.prompt), len(p.matching)
        ids[i, :n] = torch.tensor(p.ids)
        pos_ids[i, :n] = torch.tensor(p.position_ids())
        if n < width:  # padding: keep positions increasing; pad keys are masked below
            pos_ids[i, n:] = torch.arange(n, width)
        allowed[i, np_ + nc : n, np_ : np_ + nc] = False  # not-matching can't see matching
        allowed[i, :n, n:] = False
        pm, tm, pn, tn = p.targets()
        rows += [i] * (len(pm) + len(pn))
        poss += pm + pn
        toks += tm + tn
        segs += [2 * i] * len(pm) + [2 * i + 1] * len(pn)
    lengths = torch.tensor([len(p) for p in pairs], dtype=torch.long)
    return PackedBatch(
        ids,
        pos_ids,
        allowed,
        lengths,
        torch.tensor(rows),
        torch.tensor(poss),
        torch.tensor(toks),
        torch.tensor(segs),
    )


def sequence_logprobs(
    token_logprobs: Float[Tensor, " n_tok"], batch: PackedBatch
) -> tuple[Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """Sum token log-probs per (example, side) -> (matching, not_matching) per example."""
    sums = torch.zeros(2 * batch.batch, dtype=token_logprobs.dtype, device=token_logprobs.device)
    sums = sums.index_add(0, batch.tgt_seg.to(token_logprobs.device), token_logprobs)
    sums = sums.view(batch.batch, 2)
    return sums[:, 0], sums[:, 1]
