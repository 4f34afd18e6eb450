"""The BiPO objective (Eq. 3 of Cao et al. 2024) as a pure function."""

import math

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def bipo_loss(
    policy_matching: Float[Tensor, " batch"],
    policy_not_matching: Float[Tensor, " batch"],
    ref_matching: Float[Tensor, " batch"],
    ref_not_matching: Float[Tensor, " batch"],
    d: Float[Tensor, " batch"],
    beta: float,
) -> Float[Tensor, ""]:
    """Mean over the batch of ``-log sigmoid(z)`` with
    ``z = d * beta * [(log p(r_T|q; d v) - log p_ref(r_T|q)) - (log p(r_O|q; d v) - log p_ref(r_O|q))]``.

    Log-probs are sums over the response tokens; ``d`` is +1 or -1 per example (constant
    within a step by default).
    """
    margin = (policy_matching - ref_matching) - (policy_not_matching - ref_not_matching)
    return -F.logsigmoid(d * beta * margin).mean()


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """LR multiplier of the usual cosine schedule with warm-up (as in ``transformers``):
    ``step / warmup`` during warm-up, then ``0.5 * (1 + cos(pi * progress))``."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    progress = (step - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
