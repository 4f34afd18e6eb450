"""A plain, obviously-correct BiPO implementation, kept to check the fast trainer.

Everything the fast path optimises away is done the straightforward way here: each
response is its own sequence, the vector is added by a hook during a full forward pass,
full-vocabulary logits are computed at every position, and the reference log-probs are
recomputed (without the vector) at every step. It shares only the batch plan with the
fast trainer (which pairs, which d), so both can be compared step by step.
"""

import math

import torch
import torch.nn.functional as F

from steerlab.activations.prompts import encode_pair
from steerlab.models.chat import EncodedText
from steerlab.models.sites import HookSite
from steerlab.vectors.bipo.config import BiPOConfig
from steerlab.vectors.bipo.schedule import epoch_plan, steps_per_epoch


def _seq_logprob(model, prompt_ids, response_ids, hook=None):
    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=model.device)
    hooks = [hook] if hook is not None else []
    with model.bridge.hooks(fwd_hooks=hooks):
        logits = model.bridge(ids)
    logp = F.log_softmax(logits[0].float(), dim=-1)
    p = len(prompt_ids)
    targets = ids[0, p:]
    return logp[p - 1 : -1].gather(1, targets[:, None]).sum()


def plain_train(model, pairs, layer, config, rows_of, term, seq_logprob=None, max_steps=None):
    """The plain training loop shared by plain BiPO and plain RePS: AdamW on one vector,
    the trainer's warm-up + cosine schedule, a hook adding ``d * v`` at ``layer``, and per
    step the mean of ``term(pm, pn, rm, rn, pos, neg, d)`` over ``rows_of(step)`` (pairs
    index, direction). Returns (vector tensor, list of per-step losses)."""
    from steerlab.activations.packed import pack

    seq_logprob = seq_logprob or _seq_logprob
    enc = [encode_pair(model, p) for p in pairs]
    if config.score_eos:  # each response ends with EOS, scored like its other tokens
        eos = (model.tokenizer.eos_token_id,)
        enc = [tuple(EncodedText(e.prompt_ids, e.response_ids + eos) for e in pn) for pn in enc]
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
            terms = []
            for i, d in rows_of(step):
                pos, neg = enc[i]

                def hook_fn(x, hook, d=d):
                    return x + d * v

                pm = seq_logprob(model, pos.prompt_ids, pos.response_ids, (name, hook_fn))
                pn = seq_logprob(model, neg.prompt_ids, neg.response_ids, (name, hook_fn))
                with torch.no_grad():
                    rm = seq_logprob(model, pos.prompt_ids, pos.response_ids)
                    rn = seq_logprob(model, neg.prompt_ids, neg.response_ids)
                terms.append(term(pm, pn, rm, rn, pos, neg, d))
            loss = torch.stack(terms).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if max_steps is not None and len(losses) >= max_steps:
                return v.detach().clone(), losses
    return v.detach().clone(), losses


def plain_bipo(model, pairs, layer, config: BiPOConfig, max_steps=None):
    """Returns (vector tensor, list of per-step losses)."""

    def term(pm, pn, rm, rn, pos, neg, d):
        return -F.logsigmoid(d * config.beta * ((pm - rm) - (pn - rn)))

    def rows_of(step):
        return list(zip(step.indices, step.d))

    return plain_train(model, pairs, layer, config, rows_of, term, max_steps=max_steps)
