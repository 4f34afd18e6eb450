"""A plain, obviously-correct RePS implementation, kept to check the trainer's RePS path.

Written from the objective's definition (see ``RePSConfig``), not from the library's
loss function: each response is its own sequence, the vector is added by a hook during a
full forward pass, full-vocabulary logits at every position, the unsteered log-probs
recomputed at every step, and each (pair, direction) term written out with Python
branching. Only the batch plan (which pairs form a step) is shared with the trainer.
"""

import torch
import torch.nn.functional as F

from steerlab.vectors.bipo.config import RePSConfig
from tests.bipo_plain import plain_train


def _seq_logprob(model, prompt_ids, response_ids, hook=None):
    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=model.device)
    with model.bridge.hooks(fwd_hooks=[hook] if hook is not None else []):
        logits = model.bridge(ids)
    logp = F.log_softmax(logits[0].float(), dim=-1)
    p = len(prompt_ids)
    return logp[p - 1 : -1].gather(1, ids[0, p:][:, None]).sum().double()


def reps_term(pm, pn, lm, ln, rm, rn, d, config: RePSConfig):
    """One (pair, direction) term: -log sigmoid(beta * (w * lp(pref)/|pref| - lp(dis)/|dis|)
    - gamma); d = +1 prefers the matching answer, d = -1 the not-matching one."""
    if d > 0:
        pref, dis, l_pref, l_dis, r_pref, r_dis = pm, pn, lm, ln, rm, rn
    else:
        pref, dis, l_pref, l_dis, r_pref, r_dis = pn, pm, ln, lm, rn, rm
    if config.weighting == "none":
        w = 1.0
    elif config.weighting == "reference_mean":
        w = max(float(r_dis) / l_dis - float(r_pref) / l_pref, 1.0)
    else:
        w = max(float(r_dis) - float(r_pref), 1.0)
    margin = w * pref / l_pref - dis / l_dis
    return -F.logsigmoid(config.beta * margin - config.gamma)


def plain_reps(model, pairs, layer, config: RePSConfig, max_steps=None):
    """Returns (vector tensor, list of per-step losses)."""

    def rows_of(step):
        if config.direction_sampling == "both" and config.direction == "bi":
            return [(i, 1.0) for i in step.indices] + [(i, -1.0) for i in step.indices]
        return list(zip(step.indices, step.d))

    def term(pm, pn, rm, rn, pos, neg, d):
        lm, ln = len(pos.response_ids), len(neg.response_ids)
        return reps_term(pm, pn, lm, ln, rm, rn, d, config)

    return plain_train(model, pairs, layer, config, rows_of, term, _seq_logprob, max_steps)
