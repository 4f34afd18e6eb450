"""The architecture matrix on tiny random-init models of every checked family, and
loading real-model style: unsupported architectures, the memory estimate, dtype='auto',
device_map and reloading a model from its spec."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import steerlab as sl
from steerlab.errors import ConfigError, HookSiteError, ModelLoadError
from steerlab.models.architectures import (
    TINY_ARCHITECTURES,
    build_tiny_checkpoint,
    describe_memory,
    parameter_count,
    supported_architectures,
)
from steerlab.models.loading import resolve_dtype

ROOT = Path(__file__).resolve().parents[1]


def _matrix_module():
    spec = importlib.util.spec_from_file_location(
        "steerlab_bench_architectures", ROOT / "benchmarks" / "architectures.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return build_tiny_checkpoint("llama", tmp_path_factory.mktemp("llama"), seed=3)


def test_matrix_passes_on_every_family_and_matches_the_docs(tmp_path):
    """Every capability passes on every family, or does not apply with a reason; the
    committed docs/architectures.md shows the same table."""
    mod = _matrix_module()
    assert len(TINY_ARCHITECTURES) >= 8
    assert set(a.hf_class for a in TINY_ARCHITECTURES.values()) <= set(supported_architectures())
    rows = mod.run_matrix(workdir=tmp_path)
    fails = [(r.arch, r.capability, r.why) for r in rows if r.status == mod.FAIL]
    assert not fails, fails
    na = {(r.arch, r.capability) for r in rows if r.status == mod.NA}
    assert na == {("gemma2", "BiPO fast == plain"), ("gemma2", "margin fast == plain")}
    assert all("soft-capped" in r.why for r in rows if r.status == mod.NA)
    assert all(r.why for r in rows)
    doc = (ROOT / "docs" / "architectures.md").read_text()
    for line in mod.table_lines(rows):
        assert line in doc, (
            f"docs/architectures.md is stale; rerun benchmarks/architectures.py: {line}"
        )
    md = mod.to_markdown(rows)
    assert md.count("\n### ") == len(TINY_ARCHITECTURES)


def test_parallel_blocks_explain_the_missing_resid_mid(tmp_path):
    model = sl.load_model(str(build_tiny_checkpoint("gpt_neox", tmp_path / "neox")), device="cpu")
    assert model.site(1, "resid_pre") and model.site(1, "resid_post")
    with pytest.raises(HookSiteError, match=r"resid_mid.*in parallel on resid_pre.*use resid_pre"):
        model.site(1, "resid_mid")


def test_unsupported_architecture_is_refused_before_loading(tmp_path, llama_dir):
    from transformers import AutoTokenizer, CTRLConfig

    CTRLConfig(n_layer=1, n_embd=16, n_head=2, architectures=["CTRLLMHeadModel"]).save_pretrained(
        tmp_path
    )
    AutoTokenizer.from_pretrained(str(llama_dir)).save_pretrained(tmp_path)  # no weights at all
    with pytest.raises(
        ModelLoadError,
        match=r"CTRLLMHeadModel.*not supported by TransformerLens.*Llama \(LlamaForCausalLM\).*Gemma-2.*supported_architectures\(\)",
    ):
        sl.load_model(str(tmp_path), device="cpu")


def test_memory_estimate_is_printed_before_loading(llama_dir, capsys):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(llama_dir))
    n = parameter_count(cfg)
    model = sl.load_model(str(llama_dir), device="cpu", dtype="bfloat16")
    assert n == sum(p.numel() for p in model.bridge.original_model.parameters())
    err = capsys.readouterr().err
    assert f"{n / 1e6:.1f}M parameters" in err and "bfloat16" in err
    assert model.dtype == torch.bfloat16
    line = describe_memory("x", cfg, torch.float32)
    assert f"{round(n * 4 / 2**20)} MiB" in line


def test_dtype_auto_and_device_map(llama_dir):
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(ConfigError, match=r"dtype 'fp8'.*'auto'"):
        resolve_dtype("fp8")
    model = sl.load_model(str(llama_dir), device_map="auto", dtype="auto")
    expect = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    assert model.dtype == expect
    ids = torch.tensor([model.chat.encode("Hi.", "Yes.").ids])
    assert model.bridge(ids).shape[-1] == model.d_vocab


def test_a_model_reloads_from_its_spec(llama_dir, tiny_model):
    model = sl.load_model(str(llama_dir), device="cpu")
    again = model.spec.load()
    ids = torch.tensor([model.chat.encode("Hi.", "Yes.").ids])
    assert again.model_id == model.model_id
    assert torch.equal(model.bridge(ids), again.bridge(ids))
    tiny = tiny_model.spec.load()
    assert torch.equal(tiny_model.bridge(ids), tiny.bridge(ids))
    json.dumps({k: str(v) for k, v in model.spec.kwargs.items()})
