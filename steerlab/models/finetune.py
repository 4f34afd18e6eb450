"""LoRA fine-tunes of a loaded model, as new models (targets for transfer experiments).

The paper's Figure 3 applies a Llama-2-7b-chat vector unchanged to Llama2-Chinese-7b-Chat,
a LoRA fine-tune of the same base. :func:`lora_finetune` builds such a target offline: it
rebuilds a plain copy of the Hugging Face model behind the bridge, trains LoRA adapters
(``peft``) on a few texts, merges them into the weights and wraps the result as a new
:class:`SteerlabModel`. The source model is never modified (its weights are copied, not
shared, and the global RNG state is restored afterwards).

Training items are plain strings (next-token loss on every token) or ``(prompt,
response)`` pairs, or anything with ``question`` and ``matching`` attributes (a
preference pair: its matching answer is the response); prompts go through the model's
chat template and only response tokens are scored.
"""

import copy
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from steerlab.errors import ConfigError, EmptyInputError, ModelLoadError, TrainingError
from steerlab.models.chat import EncodedText
from steerlab.models.model import SteerlabModel
from steerlab.utils.gemm import route_linears

#: Attention and MLP projections of Llama-style models (the paper's DPO-LoRA used q, v).
DEFAULT_TARGET_MODULES = ("q_proj", "v_proj")
_BRIDGE_WRAPPER = "._original_component"


@dataclass(frozen=True, eq=False)
class FinetuneRun:
    """A finished LoRA fine-tune.

    Attributes:
        model: the merged fine-tune, a new :class:`SteerlabModel`.
        steps: one record per optimiser step: ``step, loss, lr``.
        trainable_parameters: LoRA parameters trained.
        relative_weight_change: ``||W_merged - W_source|| / ||W_source||`` over the
            adapted weight matrices (how far the merge moved them).
        seconds: wall time of the whole call.
        settings: the arguments (for provenance).
    """

    model: SteerlabModel
    steps: list[dict[str, Any]] = field(default_factory=list)
    trainable_parameters: int = 0
    relative_weight_change: float = 0.0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)


def plain_hf_copy(model: SteerlabModel) -> Any:
    """A fresh Hugging Face model with a copy of ``model``'s weights, without bridge wrappers.

    ``TransformerBridge`` wraps the original model's submodules in place, so a deepcopy
    would copy the wrappers too; this builds the class from its config and loads the
    weights (renamed back to Hugging Face names) into it.
    """
    src = getattr(model.bridge, "original_model", None)
    if src is None:
        raise ModelLoadError(f"{model.model_id}: the bridge has no original_model to copy.")
    fresh = type(src)._from_config(copy.deepcopy(src.config), dtype=model.dtype)
    state = {k.replace(_BRIDGE_WRAPPER, ""): v for k, v in src.state_dict().items()}
    wanted = fresh.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ModelLoadError(
            f"Cannot copy {model.model_id}: {len(missing)} weights are not found in the "
            f"bridged model (e.g. {missing[:3]})."
        )
    fresh.load_state_dict({k: state[k] for k in wanted})  # copies into fresh tensors
    fresh.to(model.device)
    route_linears(fresh)  # the same matmul backend as the model (steerlab.utils.gemm)
    return fresh


def _encode(model: SteerlabModel, item: Any) -> EncodedText:
    if isinstance(item, str):
        return EncodedText((), model.chat.encode_ids(item))
    if isinstance(item, tuple) and len(item) == 2:
        prompt, response = item
    elif hasattr(item, "question") and hasattr(item, "matching"):
        prompt, response = item.question, item.matching
    else:
        raise ConfigError(
            f"Cannot train on {type(item).__name__} {item!r:.80}: give strings, (prompt, "
            "response) tuples or preference pairs."
        )
    if not (isinstance(prompt, str) and isinstance(response, str) and response):
        raise ConfigError(
            f"(prompt, response) must be two strings, the response non-empty; got {item!r:.80}."
        )
    return model.chat.encode(prompt, response)


def _pad(
    encoded: Sequence[EncodedText], pad_id: int, max_length: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Right-padded ``ids, attention_mask, labels`` (labels -100 outside responses)."""
    rows = [e.ids[:max_length] for e in encoded]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (e, row) in enumerate(zip(encoded, rows)):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
        labels[i, e.prompt_len : len(row)] = ids[i, e.prompt_len : len(row)]
    return ids, mask, labels


def _check(rank: int, alpha: float, dropout: float, steps: int, lr: float, batch_size: int,
           max_length: int) -> None:  # fmt: skip
    checks = [
        (rank >= 1, f"rank={rank} must be >= 1"),
        (alpha > 0, f"alpha={alpha} must be > 0"),
        (0 <= dropout < 1, f"dropout={dropout} must be in [0, 1)"),
        (steps >= 1, f"steps={steps} must be >= 1"),
        (lr > 0 and math.isfinite(lr), f"lr={lr} must be a positive number"),
        (batch_size >= 1, f"batch_size={batch_size} must be >= 1"),
        (max_length >= 2, f"max_length={max_length} must be >= 2"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(f"lora_finetune: {msg}.")


class LoraTrainer:
    """LoRA adapters (``peft``) on a plain copy of a model, AdamW (constant lr) and a
    seeded batch order that cycles through the encoded texts. :meth:`step` trains on the
    next batch; :meth:`merge` folds the adapters into the copy's weights and returns it.

    Build it inside ``torch.random.fork_rng`` after seeding: the LoRA init draws from
    the global RNG.
    """

    def __init__(
        self,
        model: SteerlabModel,
        encoded: Sequence[EncodedText],
        *,
        rank: int,
        alpha: float,
        dropout: float,
        target_modules: Sequence[str],
        lr: float,
        batch_size: int,
        max_length: int,
        seed: int,
        device: torch.device,
    ) -> None:
        from peft import LoraConfig, get_peft_model

        hf = plain_hf_copy(model).to(device)
        names = {n.rsplit(".", 1)[-1] for n, _ in hf.named_modules()}
        unknown = [m for m in target_modules if m not in names]
        if unknown:
            raise ConfigError(
                f"target_modules {unknown} are not modules of {model.model_id}; linear layers "
                f"include {sorted(n for n in names if n.endswith('proj'))}."
            )
        lora = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=list(target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # peft calls a deprecated transformers helper
            warnings.simplefilter("ignore", FutureWarning)
            self.peft_model = get_peft_model(hf, lora)
        self.peft_model.train()
        params = [p for p in self.peft_model.parameters() if p.requires_grad]
        self.trainable_parameters = sum(p.numel() for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        self.encoded, self.pad_id, self.device = list(encoded), model.pad_token_id, device
        self.lr, self.batch_size, self.max_length = lr, batch_size, max_length
        self._gen = torch.Generator().manual_seed(seed)
        self._order: list[int] = []
        self.steps: list[dict[str, Any]] = []

    def _next_batch(self) -> list[int]:
        idx: list[int] = []
        while len(idx) < min(self.batch_size, len(self.encoded)):
            if not self._order:
                self._order = torch.randperm(len(self.encoded), generator=self._gen).tolist()
            idx.append(self._order.pop())
        return idx

    def step(self) -> dict[str, Any]:
        """One optimiser step on the next batch; returns its record ``step, loss, lr``."""
        number = len(self.steps) + 1
        batch = [self.encoded[i] for i in self._next_batch()]
        ids, mask, labels = _pad(batch, self.pad_id, self.max_length)
        dev = self.device
        out = self.peft_model(
            input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev)
        )
        loss = out.loss
        if not torch.isfinite(loss):
            raise TrainingError(
                f"LoRA fine-tune diverged at step {number} (loss {loss.item()}); lower lr "
                f"(now {self.lr})."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        rec = {"step": number, "loss": float(loss.item()), "lr": self.lr}
        self.steps.append(rec)
        return rec

    def merge(self) -> Any:
        """The copy with the adapters merged into its weights (eval mode)."""
        merged = self.peft_model.merge_and_unload()
        merged.eval()
        return merged


def lora_finetune_run(
    model: SteerlabModel,
    texts: Sequence[Any],
    *,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.05,
    steps: int = 30,
    lr: float = 1e-3,
    batch_size: int = 4,
    max_length: int = 128,
    target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
    seed: int = 0,
    device: "str | torch.device | None" = None,
    model_id: str | None = None,
) -> FinetuneRun:
    """LoRA-fine-tune a copy of ``model`` on ``texts`` and return the merged model and log.

    Args:
        texts: strings, ``(prompt, response)`` tuples or preference pairs (see module doc).
        rank, alpha, dropout: LoRA settings (the paper's DPO-LoRA: 8, 16, 0.05).
        steps: optimiser steps (AdamW, constant ``lr``); batches cycle through ``texts``
            in a seeded random order.
        target_modules: module names to adapt (default ``q_proj``, ``v_proj``).
        seed: seeds the LoRA init, dropout and batch order (the global RNG is restored).
        device: where to train and keep the copy (default: the source model's device).
        model_id: the new model's id (default ``'<source id>+lora-r<rank>-<steps>steps'``).
    """
    try:
        import peft  # noqa: F401
    except ImportError as exc:  # pragma: no cover - peft is an optional extra
        raise ConfigError(
            "lora_finetune needs peft: pip install 'steerlab[transfer]' (or pip install peft)."
        ) from exc
    from steerlab.models.loading import _wrap

    _check(rank, alpha, dropout, steps, lr, batch_size, max_length)
    items = list(texts)
    if not items:
        raise EmptyInputError("lora_finetune() got no training texts.")
    t0 = time.perf_counter()
    dev = torch.device(device) if device is not None else model.device
    encoded = [_encode(model, it) for it in items]
    if not any(min(len(e), max_length) > e.prompt_len for e in encoded):
        raise EmptyInputError(
            f"No response tokens within max_length={max_length}; raise max_length."
        )
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        trainer = LoraTrainer(
            model, encoded, rank=rank, alpha=alpha, dropout=dropout,
            target_modules=target_modules, lr=lr, batch_size=batch_size,
            max_length=max_length, seed=seed, device=dev,
        )  # fmt: skip
        for _ in range(steps):
            trainer.step()
        merged = trainer.merge()
    change = _relative_change(model, merged, target_modules)  # before _wrap renames modules
    settings = {
        "source": model.model_id, "rank": rank, "alpha": alpha, "dropout": dropout,
        "steps": steps, "lr": lr, "batch_size": batch_size, "max_length": max_length,
        "target_modules": list(target_modules), "seed": seed, "n_texts": len(items),
    }  # fmt: skip
    new_id = model_id or f"{model.model_id}+lora-r{rank}-{steps}steps"
    name = str(model.bridge.cfg.model_name)
    new = _wrap(merged, model.tokenizer, new_id, name, dev, model.system_prompt, "lora", t0)
    return FinetuneRun(
        model=new,
        steps=trainer.steps,
        trainable_parameters=trainer.trainable_parameters,
        relative_weight_change=change,
        seconds=time.perf_counter() - t0,
        settings=settings,
    )


def _relative_change(model: SteerlabModel, merged: Any, target_modules: Sequence[str]) -> float:
    src = {
        k.replace(_BRIDGE_WRAPPER, ""): v
        for k, v in model.bridge.original_model.state_dict().items()
    }
    diff2 = base2 = 0.0
    for k, v in merged.state_dict().items():
        parts = k.split(".")
        if len(parts) >= 2 and parts[-2] in target_modules and parts[-1] == "weight" and k in src:
            ref = src[k].detach().double().cpu()
            diff2 += float(((v.detach().double().cpu() - ref) ** 2).sum())
            base2 += float((ref**2).sum())
    return math.sqrt(diff2 / base2) if base2 else 0.0


def lora_finetune(model: SteerlabModel, texts: Sequence[Any], **kwargs: Any) -> SteerlabModel:
    """The merged LoRA fine-tune of a copy of ``model`` (a new model; ``model`` is left
    unchanged). Takes the keyword arguments of :func:`lora_finetune_run`, which also
    returns the training log."""
    return lora_finetune_run(model, texts, **kwargs).model


__all__ = [
    "DEFAULT_TARGET_MODULES",
    "FinetuneRun",
    "LoraTrainer",
    "lora_finetune",
    "lora_finetune_run",
    "plain_hf_copy",
]
