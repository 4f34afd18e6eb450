"""A plain, obviously-correct RePS implementation, kept to check the trainer's RePS path.

Written from the objective's definition (see ``RePSConfig``), not from the library's
loss function: each response is its own sequence, the vector is added by a hook during a
full forward pass, full-vocabulary logits at every position, the unsteered log-probs
recomputed at every step, and each (pair, direction) term written out with Python
branching. Only the batch plan (which pairs form a step) is shared with the trainer.
"""

import math

import torch
import torch.nn.functional as F

from steerlab.activations.packed import pack
from steerlab.activations.prompts import encode_pair
from steerlab.models.sites import HookSite
from steerlab.vectors.bipo.config import RePSConfig
from steerlab.vectors.bipo.schedule import epoch_plan, steps_per_epoch


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
    enc = [encode_pair(model, p) for p in pairs]
    lengths = [len(pack(a, b)) for a, b in enc]
    v = torch.zeros(model.d_model, requires_grad=True, device=model.device)
    opt = torch.optim.AdamW([v], lr=config.lr, weight_decay=config.weight_decay)
    total = steps_per_epoch(len(pairs), config) * config.epochs
    warm = config.warmup_steps

    def lam(s):
        if s < warm:
            return s / max(1, warm)
        prog = (s - warm) / max(1, total - warm)
        return max(0.0, 0.5 * (1 + math.cos(math.pi * min(1.0, prog))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    name = HookSite(layer).hook_name(model)
    losses = []
    for epoch in range(config.epochs):
        for step in epoch_plan(lengths, config, epoch):
            if config.direction_sampling == "both" and config.direction == "bi":
                rows = [(i, 1.0) for i in step.indices] + [(i, -1.0) for i in step.indices]
            else:
                rows = list(zip(step.indices, step.d))
            terms = []
            for i, d in rows:
                pos, neg = enc[i]

                def hook_fn(x, hook, d=d):
                    return x + d * v

                pm = _seq_logprob(model, pos.prompt_ids, pos.response_ids, (name, hook_fn))
                pn = _seq_logprob(model, neg.prompt_ids, neg.response_ids, (name, hook_fn))
                with torch.no_grad():
                    rm = _seq_logprob(model, pos.prompt_ids, pos.response_ids)
                    rn = _seq_logprob(model, neg.prompt_ids, neg.response_ids)
                lm, ln = len(pos.response_ids), len(neg.response_ids)
                terms.append(reps_term(pm, pn, lm, ln, rm, rn, d, config))
            loss = torch.stack(terms).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if max_steps is not None and len(losses) >= max_steps:
                return v.detach().clone(), losses
    return v.detach().clone(), losses
