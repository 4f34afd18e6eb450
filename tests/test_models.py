"""Model loading: the embedded SmolLM2 (and its cache), the tiny test model, dtype/device."""

import json

import pytest
import torch

import steerlab as sl
from steerlab.errors import ConfigError, ModelLoadError
from steerlab.models import embedded
from steerlab.models.chat import DEFAULT_SYSTEM_PROMPT
from steerlab.models.embedded import _is_complete, embedded_cache_dir, ensure_embedded_cache
from steerlab.models.loading import resolve_device, resolve_dtype
from steerlab.models.sites import HOOK_KINDS
from steerlab.models.tiny import TinyShape, load_tiny_model

# --- the embedded model -----------------------------------------------------------------------


def test_embedded_model_shape_and_identity(embedded_model):
    m = embedded_model
    assert isinstance(m, sl.SteerlabModel)
    assert (m.n_layers, m.d_model, m.d_vocab) == (30, 576, 49152)
    assert m.source == "embedded" and "SmolLM2-135M-Instruct" in m.model_id
    assert m.dtype == torch.float32 and m.device.type == "cpu"
    assert "n_layers=30" in repr(m) and "d_model=576" in repr(m)
    for layer in (0, 29):
        for kind in HOOK_KINDS:
            assert m.site(layer, kind).hook_name(m) in m.hook_names


def test_embedded_model_is_frozen_and_in_eval_mode(embedded_model):
    assert not any(p.requires_grad for p in embedded_model.bridge.parameters())
    assert not embedded_model.bridge.training


def test_embedded_chat_template_has_default_system_prompt(embedded_model):
    m = embedded_model
    assert (
        m.system_prompt
        == DEFAULT_SYSTEM_PROMPT
        == ("You are a helpful, honest and concise assistant.")
    )
    assert m.chat.has_template
    text = m.chat.prompt_text("Hello?")
    assert text.startswith("<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>")
    assert "<|im_start|>user\nHello?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    enc = m.chat.encode("Hello?", "Hi there.")
    assert enc.ids[: enc.prompt_len] == m.chat.encode_ids(text)
    assert m.tokenizer.decode(list(enc.response_ids)) == "Hi there."
    im_end = m.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in m.eos_token_ids


def test_embedded_cache_dir_is_complete_after_load(embedded_model):
    path = embedded_cache_dir()
    assert _is_complete(path)
    meta = json.loads((path / "steerlab.json").read_text())
    assert meta["format"] == 1 and meta["hf_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (path / name).is_file(), name
    assert ensure_embedded_cache() == path


@pytest.mark.slow
def test_embedded_conversion_from_scratch_then_cached(tmp_path, monkeypatch, embedded_model):
    """Convert into an empty cache, check the files, then load from it without converting."""
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path))
    target = ensure_embedded_cache()
    assert target == tmp_path / "models" / embedded.EMBEDDED_CACHE_NAME
    assert _is_complete(target)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temp dirs left
    for name in ("config.json", "model.safetensors", "tokenizer.json", "steerlab.json"):
        assert (target / name).is_file(), name
    config = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in config

    def no_conversion():
        raise AssertionError("the cache is complete; the GGUF must not be read again")

    monkeypatch.setattr(embedded, "embedded_gguf_path", no_conversion)
    again = sl.load_model("embedded", device="cpu")
    ids = torch.tensor([again.chat.encode("Is the cache used?").prompt_ids])
    with torch.no_grad():
        assert torch.equal(again.bridge(ids), embedded_model.bridge(ids))
    local = sl.load_model(str(target), device="cpu")  # the cache dir is a plain HF checkpoint
    assert local.source == "local" and local.n_layers == 30
    with torch.no_grad():
        assert torch.equal(local.bridge(ids), embedded_model.bridge(ids))


def test_incomplete_cache_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path))
    target = embedded_cache_dir()
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a half-written cache without the marker
    assert not _is_complete(target)
    (target / "steerlab.json").write_text("{not json")
    assert not _is_complete(target)
    (target / "steerlab.json").write_text(json.dumps({"format": 999}))
    assert not _is_complete(target)

    def gguf_missing():
        raise ModelLoadError("no gguf (simulated)")

    monkeypatch.setattr(embedded, "embedded_gguf_path", gguf_missing)
    with pytest.raises(ModelLoadError, match="simulated"):
        ensure_embedded_cache()  # it tries to convert instead of using the bad cache
    (target / "steerlab.json").write_text(json.dumps({"format": 1}))
    assert _is_complete(target) and ensure_embedded_cache() == target


def test_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    import transformers

    def broken(*args, **kwargs):
        raise RuntimeError("conversion failed (simulated)")

    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", broken)
    with pytest.raises(ModelLoadError, match=r"Converting the embedded GGUF .* failed: conversion"):
        ensure_embedded_cache()
    assert list((tmp_path / "models").iterdir()) == []


# --- tiny model -------------------------------------------------------------------------------


def test_tiny_model_is_seeded_and_leaves_global_rng_alone(tiny_model):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = load_tiny_model(seed=0, tokenizer=tiny_model.tokenizer)
    assert torch.equal(torch.rand(3), expected)  # the global RNG was not consumed
    other = load_tiny_model(seed=1, tokenizer=tiny_model.tokenizer)
    ids = torch.tensor([tiny_model.chat.encode("Hello?").prompt_ids])
    with torch.no_grad():
        assert torch.equal(again.bridge(ids), tiny_model.bridge(ids))
        assert not torch.allclose(other.bridge(ids), tiny_model.bridge(ids))
    assert (tiny_model.n_layers, tiny_model.d_model) == (2, 64)
    assert tiny_model.source == "tiny"
    assert tiny_model.d_vocab == len(tiny_model.tokenizer)


def test_tiny_shape_names_unknown_options_and_bad_head_counts():
    with pytest.raises(ConfigError, match=r"'n_layer'.*Valid: n_layers, d_model"):
        load_tiny_model(n_layer=4)
    with pytest.raises(ConfigError, match=r"d_model=60, n_heads=8.*multiple of n_heads"):
        TinyShape(d_model=60, n_heads=8)
    assert TinyShape.of({"n_layers": 3}) == TinyShape(n_layers=3)


def test_tiny_model_uses_the_real_chat_template(tiny_model):
    assert DEFAULT_SYSTEM_PROMPT in tiny_model.chat.prompt_text("Hi")
    assert tiny_model.pad_token_id is not None


def test_no_system_prompt(tiny_model):
    text = tiny_model.chat.prompt_text("Hi", system_prompt="")
    assert DEFAULT_SYSTEM_PROMPT not in text and "<|im_start|>user\nHi<|im_end|>" in text


# --- dtype / device ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, torch.float32),
        ("float32", torch.float32),
        ("BF16", torch.bfloat16),
        ("fp16", torch.float16),
        (torch.float64, torch.float64),
    ],
)
def test_resolve_dtype(value, expected):
    assert resolve_dtype(value) == expected


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device(None) == torch.device("cpu")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
