"""``generate()``: batched chat generation with a KV cache, optionally steered."""

import math
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.model import SteerlabModel
from steerlab.models.positions import PositionSpec, position_scope
from steerlab.steering.steer import Steering, StrengthArg, VectorsLike, resolve_steering, steer
from steerlab.utils.progress import progress_bar


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings.

    max_new_tokens: tokens to generate per prompt (>= 1).
    greedy: argmax decoding (the paper's setting); False samples with temperature/top_p.
    temperature, top_p: sampling settings (ignored when greedy).
    seed: seed of the sampling generator (sampling is reproducible for a given seed).
    batch_size: prompts per forward pass; prompts are length-sorted and left-padded.
    use_cache: reuse keys/values between steps (same tokens as without, faster).
    chat: wrap prompts in the chat template with the system prompt (False: raw text).
    stop_at_eos: stop a row at EOS / end-of-turn.
    """

    max_new_tokens: int = 64
    greedy: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8
    use_cache: bool = True
    chat: bool = True
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens}; it must be >= 1.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size}; it must be >= 1.")
        check_sampling(self.greedy, self.temperature, self.top_p)


def check_sampling(greedy: bool, temperature: float, top_p: float, owner: str = "") -> None:
    """Raise :class:`ConfigError` for a sampling temperature that is not a finite value > 0
    (checked only when ``greedy`` is False) or a ``top_p`` outside (0, 1]; ``owner``
    prefixes the field names in the message (e.g. ``"RowSpec."``)."""
    if not greedy and not (temperature > 0 and math.isfinite(temperature)):
        raise ConfigError(f"{owner}temperature={temperature}; sampling needs a value > 0.")
    if not 0 < top_p <= 1:
        raise ConfigError(f"{owner}top_p={top_p}; it must be in (0, 1].")


@dataclass(frozen=True)
class GenerationResult:
    """Completions in the order of the prompts, their token ids, and the settings used."""

    prompts: tuple[str, ...]
    texts: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]
    prompt_token_ids: tuple[tuple[int, ...], ...]
    config: GenerationConfig
    steering: tuple[dict[str, Any], ...] = ()
    system_prompt: str | None = None

    @property
    def text(self) -> str:
        """The first completion (convenient for a single prompt)."""
        return self.texts[0]

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.texts)

    def __str__(self) -> str:
        return self.texts[0] if len(self.texts) == 1 else "\n---\n".join(self.texts)

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {"prompt": p, "completion": t, "n_tokens": len(ids)}
            for p, t, ids in zip(self.prompts, self.texts, self.token_ids)
        ]

    def settings(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "steering": list(self.steering),
            "system_prompt": self.system_prompt,
        }


def _left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[Int[Tensor, "b p"], Int[Tensor, "b p"], Int[Tensor, " b"]]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    pads = torch.zeros(len(rows), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
        pads[i] = width - len(r)
    return ids.to(device), mask.to(device), pads.to(device)


def _next_token(logits: Tensor, cfg: GenerationConfig, gen: torch.Generator | None) -> Tensor:
    if cfg.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < cfg.top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(-1).to(logits.device)


@torch.no_grad()
def _generate_batch(
    model: SteerlabModel,
    rows: Sequence[Sequence[int]],
    cfg: GenerationConfig,
    gen: torch.Generator | None,
) -> list[list[int]]:
    ids, mask, pads = _left_pad(rows, model.pad_token_id, model.device)
    prompt_len = ids.shape[1]
    eos = torch.tensor(model.eos_token_ids or (-1,), device=ids.device)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    out: list[list[int]] = [[] for _ in rows]
    cache = None
    for _ in range(cfg.max_new_tokens):
        if cfg.use_cache and cache is not None:
            inp, offset = ids[:, -1:], ids.shape[1] - 1
        else:
            inp, offset = ids, 0
        with position_scope(model.positions, offset, prompt_len, pads):
            if cfg.use_cache:
                kwargs: dict[str, Any] = {"return_type": "logits_and_cache", "attention_mask": mask}
                if cache is None:
                    kwargs["use_cache"] = True
                else:
                    kwargs["past_key_values"] = cache
                with warnings.catch_warnings():
                    # TransformerLens 4.3 reads the cache as past_key_values, which
                    # transformers 5.2x deprecates (models.compat); the warning is expected.
                    warnings.filterwarnings(
                        "ignore", message=".*past_key_values.*deprecated", category=FutureWarning
                    )
                    logits, cache = model.bridge(inp, **kwargs)
            else:
                logits = model.bridge(inp, attention_mask=mask)
        nxt = _next_token(logits[:, -1, :], cfg, gen)
        nxt = torch.where(done, torch.full_like(nxt, model.pad_token_id), nxt)
        for i in range(len(rows)):
            if not done[i]:
                out[i].append(int(nxt[i]))
        if cfg.stop_at_eos:
            done |= torch.isin(nxt, eos)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if bool(done.all()):
            break
    if cfg.stop_at_eos:
        eos_set = set(model.eos_token_ids)
        out = [r[:-1] if r and r[-1] in eos_set else r for r in out]
    return out


def generate(
    model: SteerlabModel,
    prompts: "str | Sequence[str]",
    max_new_tokens: int = 64,
    *,
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    use_cache: bool = True,
    chat: bool = True,
    stop_at_eos: bool = True,
    system_prompt: str | None = None,
    steering: "VectorsLike | Steering | None" = None,
    multiplier: "float | Sequence[float] | None" = None,
    positions: PositionSpec = "all",
    progress: bool = False,
    strength: "StrengthArg | None" = None,
) -> GenerationResult:
    """Generate completions for ``prompts`` (chat template applied by default).

    Greedy by default. Prompts are sorted by length, batched and left-padded; padding
    never changes a completion. ``steering=`` (a vector, a list of vectors or a
    :class:`Steering`) with ``multiplier=`` (default 1) or ``strength=`` (relative to
    the typical residual norm, or ``"recommended"``; see :func:`steer`) and
    ``positions=`` steers this call only; an enclosing ``with steer(...)`` also applies.
    """
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise EmptyInputError("generate() got an empty prompt list; pass at least one prompt.")
    for i, p in enumerate(prompt_list):
        if not isinstance(p, str):
            raise ConfigError(f"Prompt {i} is a {type(p).__name__}, not a str.")
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        greedy=greedy,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        use_cache=use_cache,
        chat=chat,
        stop_at_eos=stop_at_eos,
    )
    sys_prompt = model.system_prompt if system_prompt is None else system_prompt
    if chat:
        rows = [model.chat.encode(p, system_prompt=sys_prompt).prompt_ids for p in prompt_list]
    else:
        rows = [model.chat.encode_ids(p) for p in prompt_list]
    for i, r in enumerate(rows):
        if not r:
            raise EmptyInputError(f"Prompt {i} ({prompt_list[i]!r}) encodes to zero tokens.")
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    spec = (
        resolve_steering(model, steering, multiplier, strength, positions)
        if steering is not None
        else None
    )
    ctx = steer(model, spec) if spec is not None else nullcontext()
    gen = None if greedy else torch.Generator().manual_seed(seed)
    results: dict[int, list[int]] = {}
    with ctx:
        starts = range(0, len(order), batch_size)
        for start in progress_bar(starts, desc="generate", enabled=progress):
            idx = order[start : start + batch_size]
            outs = _generate_batch(model, [rows[i] for i in idx], cfg, gen)
            results.update(zip(idx, outs))
    token_ids = tuple(tuple(results[i]) for i in range(len(rows)))
    texts = tuple(
        model.tokenizer.decode(list(t), skip_special_tokens=True).strip() for t in token_ids
    )
    return GenerationResult(
        prompts=tuple(prompt_list),
        texts=texts,
        token_ids=token_ids,
        prompt_token_ids=tuple(tuple(r) for r in rows),
        config=cfg,
        steering=tuple(spec.describe()) if spec else (),
        system_prompt=sys_prompt if chat else None,
    )
