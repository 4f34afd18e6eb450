"""Which token positions a steering hook touches.

``generate()`` tells the model where the prompt ends while it decodes (a
:class:`PositionState` on the model); a plain forward pass treats every position as
prompt. Positions are counted per row from its first real (non-padding) token.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Union

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from steerlab.errors import ConfigError

PositionSpec = Union[Literal["all", "prompt", "generated"], slice]
POSITION_NAMES = ("all", "prompt", "generated")


def check_positions(positions: object) -> PositionSpec:
    if isinstance(positions, slice):
        for part in (positions.start, positions.stop):
            if part is not None and (not isinstance(part, int) or part < 0):
                raise ConfigError(
                    f"positions slice {positions} must use non-negative ints (token index from "
                    "the start of each sequence)."
                )
        if positions.step is not None and (
            not isinstance(positions.step, int) or positions.step <= 0
        ):
            raise ConfigError(f"positions slice {positions} must have a positive step.")
        return positions
    if positions not in POSITION_NAMES:
        raise ConfigError(
            f"Unknown positions {positions!r}; use 'all', 'prompt', 'generated' or a slice "
            "such as slice(0, 10)."
        )
    return positions  # type: ignore[return-value]


@dataclass
class PositionState:
    """Mutable decoding state read by steering hooks (owned by one model).

    offset: padded index of the first position of the current forward input.
    prompt_len: padded prompt length while generating; None outside generate().
    pad_left: per-row number of left padding tokens (None = no padding).
    """

    offset: int = 0
    prompt_len: int | None = None
    pad_left: Tensor | None = None


@contextmanager
def position_scope(
    state: PositionState, offset: int, prompt_len: int | None, pad_left: Tensor | None
) -> Iterator[None]:
    saved = (state.offset, state.prompt_len, state.pad_left)
    state.offset, state.prompt_len, state.pad_left = offset, prompt_len, pad_left
    try:
        yield
    finally:
        state.offset, state.prompt_len, state.pad_left = saved


def position_mask(
    state: PositionState, batch: int, n_pos: int, positions: PositionSpec, device: torch.device
) -> Bool[Tensor, "batch pos"]:
    """Boolean mask of the positions to steer in the current forward input."""
    absolute = torch.arange(state.offset, state.offset + n_pos, device=device).expand(batch, n_pos)
    if positions == "all":
        return torch.ones(batch, n_pos, dtype=torch.bool, device=device)
    if positions == "prompt":
        if state.prompt_len is None:
            return torch.ones(batch, n_pos, dtype=torch.bool, device=device)
        return absolute < state.prompt_len
    if positions == "generated":
        if state.prompt_len is None:
            return torch.zeros(batch, n_pos, dtype=torch.bool, device=device)
        return absolute >= state.prompt_len
    assert isinstance(positions, slice)
    pad = state.pad_left
    if pad is not None and pad.shape[0] == batch:
        rel = absolute - pad.to(device)[:, None]
    else:
        rel = absolute
    return slice_mask(rel, positions)


def slice_mask(rel: Int[Tensor, "*shape"], positions: slice) -> Bool[Tensor, "*shape"]:
    """Which positions ``rel`` (counted from each row's first real token) a ``positions``
    slice selects (start, stop and step as in Python; checked by :func:`check_positions`)."""
    start = positions.start or 0
    mask = rel >= start
    if positions.stop is not None:
        mask &= rel < positions.stop
    if positions.step:
        mask &= (rel - start) % positions.step == 0
    return mask
