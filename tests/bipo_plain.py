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


def _one_by_one(seq_logprob):
    """A step's scorer: each (encoded response, d) its own forward (d None: no vector)."""

    def score(model, items, name, v):
        out = []
        for e, d in items:
            hook = None if d is None else (name, lambda x, hook, d=d: x + d * v)
            out.append(seq_logprob(model, e.prompt_ids, e.response_ids, hook))
        return out

    return score


def batched_score(model, items, name, v):
    """A step's scorer as the reference code batches: every (encoded response, d) of the
    step right-padded into one forward (the vector added per row, d None: no vector),
    full-vocabulary log-softmax at every position, response tokens gathered and summed."""
    from steerlab.activations.batch import right_pad

    batch = right_pad([e for e, _ in items], model.pad_token_id, model.device)
    ds = [d for _, d in items]
    hooks = []
    if any(d is not None for d in ds):
        dd = torch.tensor([0.0 if d is None else d for d in ds], device=model.device)
        hooks = [(name, lambda x, hook: x + dd.view(-1, 1, 1) * v)]
    with model.bridge.hooks(fwd_hooks=hooks):
        logits = model.bridge(batch.ids, attention_mask=batch.attention_mask)
    logp = F.log_softmax(logits.float(), dim=-1)
    out = []
    for row, (e, _) in enumerate(items):
        p, n = len(e.prompt_ids), len(e.prompt_ids) + len(e.response_ids)
        targets = batch.ids[row, p:n]
        out.append(logp[row, p - 1 : n - 1].gather(1, targets[:, None]).sum())
    return out


def plain_train(
    model, pairs, layer, config, rows_of, term, seq_logprob=None, max_steps=None, score=None
):
    """The plain training loop shared by plain BiPO and plain RePS: AdamW on one vector,
    the trainer's warm-up + cosine schedule, a hook adding ``d * v`` at ``layer``, and per
    step the mean of ``term(pm, pn, rm, rn, pos, neg, d)`` over ``rows_of(step)`` (pairs
    index, direction); the reference (no vector) recomputed every step. ``score`` scores
    a step's responses (default: one forward each, through ``seq_logprob``;
    :func:`batched_score`: one batched forward). Returns (vector tensor, list of per-step
    losses)."""
    from steerlab.activations.packed import pack

    score = score or _one_by_one(seq_logprob or _seq_logprob)
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
            rows = rows_of(step)
            seqs = [e for i, _ in rows for e in enc[i]]  # matching, not matching per row
            pol = score(model, [(e, d) for (_, d), e in zip(_twice(rows), seqs)], name, v)
            with torch.no_grad():
                ref = score(model, [(e, None) for e in seqs], name, v)
            terms = [
                term(pol[2 * k], pol[2 * k + 1], ref[2 * k], ref[2 * k + 1], *enc[i], d)
                for k, (i, d) in enumerate(rows)
            ]
            loss = torch.stack(terms).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if max_steps is not None and len(losses) >= max_steps:
                return v.detach().clone(), losses
    return v.detach().clone(), losses


def _twice(rows):
    return [r for r in rows for _ in (0, 1)]


def plain_bipo(model, pairs, layer, config: BiPOConfig, max_steps=None, score=None):
    """Returns (vector tensor, list of per-step losses); ``score=batched_score``: the
    reference code's batching (one forward per step for the policy, one for the
    reference)."""

    def term(pm, pn, rm, rn, pos, neg, d):
        return -F.logsigmoid(d * config.beta * ((pm - rm) - (pn - rn)))

    def rows_of(step):
        return list(zip(step.indices, step.d))

    return plain_train(model, pairs, layer, config, rows_of, term, max_steps=max_steps,
                       score=score)  # fmt: skip
