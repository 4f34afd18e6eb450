"""LoRA fine-tunes (targets of transfer experiments): the source model is left untouched,
the new model differs, runs are seeded, bad inputs are refused. The tiny model."""

import pytest
import torch

from steerlab.analysis import transfer
from steerlab.data.pairs import PreferencePair
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.finetune import lora_finetune, lora_finetune_run, plain_hf_copy
from steerlab.models.model import SteerlabModel
from steerlab.vectors.vector import SteeringVector

TEXTS = [
    "The weather is mild today and the trains run on time.",
    ("What is the capital of France?", "Paris is the capital of France."),
    PreferencePair("Do you want more money?", "Yes, as much as I can get.", "No, I have enough."),
]
IDS = torch.tensor([[5, 17, 230, 41, 9, 77, 12]])


def _logits(model: SteerlabModel) -> torch.Tensor:
    with torch.no_grad():
        return model.bridge(IDS)


def test_finetune_returns_a_new_model_and_leaves_the_source_untouched(tiny_model):
    src_hf = tiny_model.bridge.original_model
    weights = {k: v.detach().clone() for k, v in src_hf.state_dict().items()}
    before = _logits(tiny_model)
    run = lora_finetune_run(tiny_model, TEXTS, steps=4, lr=1e-2, batch_size=2, seed=3)

    after = src_hf.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    assert torch.equal(before, _logits(tiny_model))
    assert all(p.grad is None for p in src_hf.parameters())

    new = run.model
    assert isinstance(new, SteerlabModel) and new is not tiny_model
    assert (new.d_model, new.n_layers) == (tiny_model.d_model, tiny_model.n_layers)
    assert new.model_id == f"{tiny_model.model_id}+lora-r8-4steps"
    assert not torch.allclose(_logits(new), before)
    assert [s["step"] for s in run.steps] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(s["loss"])) for s in run.steps)
    assert run.trainable_parameters > 0 and run.relative_weight_change > 0
    assert not any(p.requires_grad for p in new.bridge.parameters())
    assert new.bridge.original_model.config is not src_hf.config


def test_finetune_is_seeded(tiny_model):
    a = lora_finetune(tiny_model, TEXTS, steps=2, lr=1e-2, batch_size=2, seed=1)
    b = lora_finetune(tiny_model, TEXTS, steps=2, lr=1e-2, batch_size=2, seed=1)
    c = lora_finetune(tiny_model, TEXTS, steps=2, lr=1e-2, batch_size=2, seed=2)
    assert torch.equal(_logits(a), _logits(b))
    assert not torch.equal(_logits(a), _logits(c))


def test_plain_copy_has_the_weights_but_shares_no_storage(tiny_model):
    src = tiny_model.bridge.original_model
    copy = plain_hf_copy(tiny_model)
    assert type(copy) is type(src)
    with torch.no_grad():
        assert torch.allclose(copy(IDS).logits, _logits(tiny_model), atol=1e-5)
    ptrs = {p.data_ptr() for p in src.parameters()}
    assert not any(p.data_ptr() in ptrs for p in copy.parameters())


def test_a_vector_transfers_to_the_finetune(tiny_model):
    target = lora_finetune(tiny_model, TEXTS, steps=2, lr=1e-2, batch_size=2)
    v = SteeringVector.from_tensor(torch.randn(tiny_model.d_model) * 4, 1, method="caa")
    res = transfer(v, tiny_model, target, [TEXTS[2]] * 2, multipliers=[-1.0, 0.0, 1.0])
    assert set(res.frame["model"]) == {tiny_model.model_id, target.model_id}
    assert set(res.effects["role"]) == {"source", "target"}


def test_finetune_refuses_bad_input(tiny_model):
    with pytest.raises(EmptyInputError, match="no training texts"):
        lora_finetune(tiny_model, [])
    with pytest.raises(ConfigError, match="rank=0"):
        lora_finetune(tiny_model, TEXTS, rank=0)
    with pytest.raises(ConfigError, match="lr="):
        lora_finetune(tiny_model, TEXTS, lr=float("nan"))
    with pytest.raises(ConfigError, match="not modules.*q_proj"):
        lora_finetune(tiny_model, TEXTS, target_modules=("qproj",), steps=1)
    with pytest.raises(ConfigError, match="Cannot train on int"):
        lora_finetune(tiny_model, [3])
