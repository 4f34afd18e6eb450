"""The architecture matrix on tiny random-init models of every checked family, and
loading real-model style: unsupported architectures, the memory estimate, dtype='auto',
device_map and reloading a model from its spec."""

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
from tests._bench import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def _matrix_module():
    return load_benchmark("architectures")


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
    import inspect

    # the default: bf16 on a CUDA GPU with bf16, float32 on the CPU
    assert inspect.signature(sl.load_model).parameters["dtype"].default == "auto"
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


def test_a_bf16_model_steers_scores_and_trains(llama_dir):
    """What `load_model(dtype="auto")` gives on a GPU, run on the CPU: a bf16 model
    steers (exactly undone after), generates, scores margins (fast = plain within bf16
    rounding), measures KL and trains BiPO."""
    from steerlab.evaluation.damage import kl_damage
    from steerlab.evaluation.likelihood import likelihood_margin
    from steerlab.evaluation.likelihood_fast import likelihood_margin_fast
    from steerlab.vectors.bipo import BiPOConfig, train_bipo
    from tests.test_bipo import synthetic_pairs

    model = sl.load_model(str(llama_dir), device="cpu", dtype="bfloat16")
    pairs = synthetic_pairs(6)
    vec = sl.fit_caa(model, pairs, layers=[1], progress=False)
    ids = torch.tensor([model.chat.encode("Hi.", "Yes.").ids])
    with torch.no_grad():
        base = model.bridge(ids)
        with sl.steer(model, vec, multiplier=4.0):
            steered = model.bridge(ids)
        assert torch.equal(model.bridge(ids), base) and not torch.equal(steered, base)
    assert sl.generate(model, "Hello?", max_new_tokens=3, steering=vec, multiplier=2.0).texts
    fast = likelihood_margin_fast(model, pairs, [vec], (0.0, 1.0), progress=False)
    plain = likelihood_margin(model, pairs, [vec], (0.0, 1.0), progress=False)
    m = "metric == 'margin'"
    assert fast.query(m)["value"].to_numpy() == pytest.approx(
        plain.query(m)["value"].to_numpy(), abs=0.5
    )
    kl = kl_damage(model, vec, (0.0, 2.0), batch_size=4)
    assert kl["kl"].iloc[0] == 0.0 and kl["kl"].iloc[1] > 0.0
    cfg = BiPOConfig(epochs=1, batch_size=3, warmup_steps=0, lr=5e-2)
    trained = train_bipo(model, pairs, 1, cfg, progress=False)
    assert float(trained.direction(1).norm()) > 0.0
