"""``RePSTrainer``: the BiPO trainer with the RePS objective (Wu et al. 2025,
arXiv 2505.20809, "reference-free preference steering"; the objective checked against
public AxBench code, see :class:`~steerlab.vectors.bipo.config.RePSConfig` for where
steerlab differs from it).

Everything but the objective is BiPO's: packed pairs, cached lower residuals, the fast
(or plain) path, the schedule, checkpoints, validation and early stopping. With
``direction_sampling='both'`` every pair of a step runs twice in one batch, once with
``+v`` (matching preferred) and once with ``-v`` (not matching preferred).
"""

from typing import Any

import torch
from torch import Tensor

from steerlab.vectors.bipo.config import RePSConfig
from steerlab.vectors.bipo.loss import reps_loss
from steerlab.vectors.bipo.schedule import Step
from steerlab.vectors.bipo.trainer import BiPOTrainer


def response_lengths(cache: object, idx: list[int]) -> tuple[Tensor, Tensor]:
    """Token counts (float64) of the matching and not-matching responses of pairs ``idx``."""
    packed = cache.packed  # type: ignore[attr-defined]
    lm = torch.tensor([len(packed[i].matching) for i in idx], dtype=torch.float64)
    ln = torch.tensor([len(packed[i].not_matching) for i in idx], dtype=torch.float64)
    return lm, ln


class RePSTrainer(BiPOTrainer):
    """One RePS optimisation: :class:`BiPOTrainer`'s lifecycle with :func:`reps_loss`."""

    method, label = "reps", "RePS"
    config: RePSConfig

    def batch_of(self, step: Step) -> tuple[list[int], Tensor]:
        """``'both'``: the step's pairs at d = +1, then the same pairs at d = -1
        (``direction='uni'``: d = +1 only); otherwise the plan's directions."""
        if self.config.direction_sampling != "both" or self.config.direction == "uni":
            return super().batch_of(step)  # the plan's draws (all +1 for 'uni')
        idx = list(step.indices)
        return idx + idx, torch.tensor([1.0] * len(idx) + [-1.0] * len(idx))

    def step(self, step: Step) -> dict[str, Any]:
        """:meth:`BiPOTrainer.step`; its record's ``d`` is 0 when both directions ran."""
        rec = super().step(step)
        if self.config.direction_sampling == "both" and self.config.direction == "bi":
            rec["d"] = 0.0  # the same dict as the one kept in self.steps
        return rec

    def loss(
        self, m: Tensor, nm: Tensor, ref_m: Tensor, ref_n: Tensor, d: Tensor, idx: list[int]
    ) -> Tensor:
        cfg, dev = self.config, m.device
        lm, ln = response_lengths(self.cache, idx)
        return reps_loss(
            m,
            nm,
            lm.to(dev),
            ln.to(dev),
            ref_m.to(dev),
            ref_n.to(dev),
            d.to(m),
            cfg.beta,
            cfg.gamma,
            cfg.weighting,
        )

    def reward_margin(
        self, m: Tensor, nm: Tensor, ref_m: Tensor, ref_n: Tensor, d: Tensor
    ) -> float:
        """Mean change of the margin against the unsteered model in each row's own
        direction (``d * delta``): positive when steering moves the way it should."""
        delta = (m - nm).detach().cpu() - (ref_m - ref_n)
        return float((d.double() * delta).mean())


__all__ = ["RePSTrainer", "response_lengths"]
