"""The BiPO objective (Eq. 3 of Cao et al. 2024) and the RePS objective (Wu et al.
2025, as recalled: see :class:`~steerlab.vectors.bipo.config.RePSConfig`) as pure
functions."""

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

#: One value per row of the batch (a pair, or a pair in one direction).
PerRow = Float[Tensor, " batch"]


def bipo_loss(
    policy_matching: PerRow,
    policy_not_matching: PerRow,
    ref_matching: PerRow,
    ref_not_matching: PerRow,
    d: PerRow,
    beta: float,
) -> Float[Tensor, ""]:
    """Mean over the batch of ``-log sigmoid(z)`` with
    ``z = d * beta * [(log p(r_T|q; d v) - log p_ref(r_T|q)) - (log p(r_O|q; d v) - log p_ref(r_O|q))]``.

    Log-probs are sums over the response tokens; ``d`` is +1 or -1 per example (constant
    within a step by default).
    """
    margin = (policy_matching - ref_matching) - (policy_not_matching - ref_not_matching)
    return -F.logsigmoid(d * beta * margin).mean()


def reps_weight(
    ref_preferred: PerRow,
    ref_dispreferred: PerRow,
    len_preferred: PerRow,
    len_dispreferred: PerRow,
    weighting: str,
) -> PerRow:
    """RePS's weight on the preferred answer from the unsteered model:
    ``max(log p(dis) - log p(pref), 1)`` of summed (``'reference'``) or per-token
    (``'reference_mean'``) log-probs; ones for ``'none'``."""
    if weighting == "none":
        return torch.ones_like(ref_preferred)
    if weighting == "reference_mean":
        gap = ref_dispreferred / len_dispreferred - ref_preferred / len_preferred
    else:
        gap = ref_dispreferred - ref_preferred
    return gap.clamp(min=1.0)


def reps_loss(
    policy_matching: PerRow,
    policy_not_matching: PerRow,
    len_matching: PerRow,
    len_not_matching: PerRow,
    ref_matching: PerRow,
    ref_not_matching: PerRow,
    d: PerRow,
    beta: float = 1.0,
    gamma: float = 0.0,
    weighting: str = "reference",
) -> Float[Tensor, ""]:
    """Mean over the batch of ``-log sigmoid(beta * (w * lp(pref)/|pref| - lp(dis)/|dis|)
    - gamma)``, where for ``d = +1`` the matching answer is preferred and for ``d = -1``
    the not-matching one; ``lp`` are summed response log-probs under the model steered
    by ``d * v`` (no reference in the margin), ``|.|`` response lengths in tokens and
    ``w`` :func:`reps_weight` of the unsteered (reference) log-probs, which carry no
    gradient. One row per (pair, direction): RePS's two terms are two rows.
    """
    pos = d > 0
    pref = torch.where(pos, policy_matching, policy_not_matching)
    dis = torch.where(pos, policy_not_matching, policy_matching)
    len_pref = torch.where(pos, len_matching, len_not_matching)
    len_dis = torch.where(pos, len_not_matching, len_matching)
    ref_pref = torch.where(pos, ref_matching, ref_not_matching)
    ref_dis = torch.where(pos, ref_not_matching, ref_matching)
    w = reps_weight(ref_pref, ref_dis, len_pref, len_dis, weighting).detach()
    margin = w * pref / len_pref - dis / len_dis
    return -F.logsigmoid(beta * margin - gamma).mean()


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """LR multiplier of the usual cosine schedule with warm-up (as in ``transformers``):
    ``step / warmup`` during warm-up, then ``0.5 * (1 + cos(pi * progress))``."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    progress = (step - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
