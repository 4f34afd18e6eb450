"""Deterministic batch plans: which pairs form each step's batch, and each step's d.

A plan depends only on (seed, epoch, lengths, config), so a resumed run replays exactly
the batches and directions of an uninterrupted one, and the fast and plain trainers can
be compared step by step.
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steerlab.vectors.bipo.config import BiPOConfig


@dataclass(frozen=True)
class Step:
    indices: tuple[int, ...]
    d: tuple[float, ...]  # one direction per example (+1 / -1)


def epoch_plan(lengths: Sequence[int], config: BiPOConfig, epoch: int) -> list[Step]:
    """Shuffle, group into buckets of ``bucket_size`` batches sorted by length (less
    padding), split into batches, shuffle the batch order, draw the directions."""
    g = torch.Generator().manual_seed(int(config.seed) * 1_000_003 + int(epoch))
    order = torch.randperm(len(lengths), generator=g).tolist()
    bucket = config.batch_size * config.bucket_size
    batches: list[list[int]] = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lambda i: (-lengths[i], i))
        batches += [
            chunk[j : j + config.batch_size] for j in range(0, len(chunk), config.batch_size)
        ]
    perm = torch.randperm(len(batches), generator=g).tolist()
    steps = []
    for bi in perm:
        idx = batches[bi]
        if config.direction == "uni":
            d = [1.0] * len(idx)
        elif config.direction_sampling == "per_step":
            d = [1.0 if torch.rand((), generator=g).item() < 0.5 else -1.0] * len(idx)
        else:
            d = [1.0 if x < 0.5 else -1.0 for x in torch.rand(len(idx), generator=g).tolist()]
        steps.append(Step(tuple(idx), tuple(d)))
    return steps


def steps_per_epoch(n: int, config: BiPOConfig) -> int:
    bucket = config.batch_size * config.bucket_size
    full, rest = divmod(n, bucket)
    per_bucket = -(-bucket // config.batch_size)
    return full * per_bucket + (-(-rest // config.batch_size) if rest else 0)


class ShortScheduleWarning(UserWarning):
    """The warm-up is as long as the whole run: the learning rate never reaches ``lr``."""


def warn_if_warmup_covers_the_run(config: BiPOConfig, total_steps: int) -> None:
    """Warn when ``config.warmup_steps`` >= ``total_steps``: the linear warm-up then spans
    the run, the learning rate peaks at ``(total - 1) / warmup`` of ``lr`` and the vector
    (started at zero) stays small; a run of one step does not move it at all."""
    if total_steps < 1 or config.warmup_steps < total_steps:
        return
    peak = (total_steps - 1) / config.warmup_steps
    warnings.warn(
        f"The warm-up ({config.warmup_steps} steps) is as long as the whole run "
        f"({total_steps} steps): the learning rate reaches at most {peak:.0%} of "
        f"lr={config.lr:g}, so the vector stays small. Lower warmup_steps (steerlab train: "
        f"--warmup-steps; run / sweep / calibrate: --bipo-warmup-steps), e.g. to "
        f"{total_steps // 10}.",
        ShortScheduleWarning,
        stacklevel=3,
    )
