"""steerlab.utils.gemm: oneDNN fp32 linear maps equal torch's, forward and backward, and
the model's modules routed through them give the same logits and generations."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import steerlab as sl
import steerlab.utils.gemm as gemm
from steerlab.errors import ConfigError

needs_onednn = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN"
)


def _grads(fn, x, w, b):
    x, w, b = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    y = fn(x, w, b)
    (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
    return y.detach(), x.grad, w.grad, b.grad


@needs_onednn
@pytest.mark.parametrize("shape", [(37, 48), (3, 11, 48)])
def test_linear_equals_f_linear_forward_and_backward(shape):
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(*shape, generator=g), torch.randn(64, 48, generator=g), torch.randn(64)
    with gemm.use_onednn(True):
        assert gemm.onednn_applies(x, w)
        got = _grads(gemm.linear, x, w, b)
    want = _grads(F.linear, x, w, b)
    for a, e in zip(got, want):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
    with torch.no_grad(), gemm.use_onednn(True):  # the no-graph branch
        torch.testing.assert_close(gemm.linear(x, w, b), want[0], rtol=1e-5, atol=1e-5)


@needs_onednn
def test_a_frozen_weight_keeps_no_input_for_the_backward():
    x, w = torch.randn(5, 8, requires_grad=True), torch.randn(6, 8)
    with gemm.use_onednn(True):
        y = gemm.linear(x, w)
    assert all(t is None or t is w for t in y.grad_fn.saved_tensors)  # memory: not x
    with gemm.use_onednn(True):
        y = gemm.linear(x, w.clone().requires_grad_(True))
    assert any(t is x for t in y.grad_fn.saved_tensors)


@needs_onednn
def test_matmul_t_and_the_transposed_weight():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(20, 300, generator=g), torch.randn(300, 40, generator=g)
    with gemm.use_onednn(True):
        torch.testing.assert_close(gemm.matmul_t(x, w.t()), x @ w, rtol=1e-5, atol=1e-4)
        xt = torch.randn(300, 20, generator=g).t()  # a non-contiguous input
        torch.testing.assert_close(gemm.matmul_t(xt, w.t()), xt @ w, rtol=1e-5, atol=1e-4)
    for on in (True, False):  # into a slice of a wider buffer, as the log-prob head does
        buf = torch.zeros(20, 50)
        with gemm.use_onednn(on):
            gemm.matmul_t(x, w.t(), out=buf[:, 5:45])
        torch.testing.assert_close(buf[:, 5:45], x @ w, rtol=1e-5, atol=1e-4)
        assert not buf[:, :5].any() and not buf[:, 45:].any()


def test_where_onednn_applies(monkeypatch):
    x, w = torch.randn(4, 8), torch.randn(6, 8)
    with gemm.use_onednn(False):
        assert not gemm.onednn_applies(x, w)
    if not torch.backends.mkldnn.is_available():
        return
    with gemm.use_onednn(True):
        assert gemm.onednn_applies(x, w)
        assert not gemm.onednn_applies(x.bfloat16(), w.bfloat16())  # fp32 only
        assert not gemm.onednn_applies(x.double(), w.double())
        empty = gemm.linear(torch.randn(4, 0), torch.randn(6, 0), torch.ones(6))
        torch.testing.assert_close(empty, torch.ones(4, 6))  # F.linear's answer, no error
        assert gemm.linear(torch.randn(0, 8), w).shape == (0, 6)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast keeps F.linear's casts
            assert not gemm.onednn_applies(x, w)
            assert gemm.linear(x, w).dtype == torch.bfloat16


def test_backend_from_the_environment(monkeypatch):
    try:
        for value, want in (("blas", "blas"), ("BLAS ", "blas")):
            monkeypatch.setenv("STEERLAB_CPU_GEMM", value)
            gemm.default_backend.cache_clear()
            assert gemm.default_backend() == want
        monkeypatch.setenv("STEERLAB_CPU_GEMM", "onednn")
        gemm.default_backend.cache_clear()
        want = "onednn" if torch.backends.mkldnn.is_available() else "blas"
        assert gemm.default_backend() == want
        monkeypatch.setenv("STEERLAB_CPU_GEMM", "mkl")
        gemm.default_backend.cache_clear()
        with pytest.raises(ConfigError, match="auto, onednn, blas"):
            gemm.default_backend()
        with pytest.raises(ConfigError, match="STEERLAB_CPU_GEMM='mkl'"):
            gemm.route_linears(torch.nn.Linear(2, 2))  # what load_model calls: at load
        monkeypatch.setattr(gemm, "has_onednn", lambda: False)  # a build without oneDNN
        for value, want in (("auto", "blas"), ("blas", "blas")):
            monkeypatch.setenv("STEERLAB_CPU_GEMM", value)
            gemm.default_backend.cache_clear()
            assert gemm.default_backend() == want
        monkeypatch.setenv("STEERLAB_CPU_GEMM", "onednn")  # asked for by name: refused
        gemm.default_backend.cache_clear()
        with pytest.raises(ConfigError, match="no oneDNN"):
            gemm.default_backend()
        with pytest.raises(ConfigError, match="no oneDNN"), gemm.use_onednn(True):
            pass
    finally:
        monkeypatch.delenv("STEERLAB_CPU_GEMM")
        gemm.default_backend.cache_clear()


def test_route_linears_keeps_module_hooks():
    lin = torch.nn.Linear(8, 4)
    seen = []
    lin.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert gemm.route_linears(torch.nn.Sequential(lin, torch.nn.ReLU())) == 1
    x = torch.randn(3, 8)
    with gemm.use_onednn(torch.backends.mkldnn.is_available()):
        y = lin(x)
    torch.testing.assert_close(y, F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)
    assert seen == [torch.Size([3, 4])]


@needs_onednn
@pytest.mark.parametrize("which", ["tiny_model", "embedded_model"])
def test_loaded_model_same_logits_and_generation_on_both_backends(which, request):
    model = request.getfixturevalue(which)
    ids = model.tokenizer("The quick brown fox jumps over the lazy dog", return_tensors="pt")
    ids = ids["input_ids"]
    g = torch.Generator().manual_seed(0)
    vec = sl.SteeringVector.from_tensor(torch.randn(model.d_model, generator=g), 1, method="caa")
    out = {}
    for on in (False, True):
        with gemm.use_onednn(on), torch.no_grad(), sl.steer(model, vec):
            out[on] = model.bridge(ids).float()
    assert (out[True] - out[False]).abs().max() < 1e-3 * out[False].abs().max()
    if which == "embedded_model":  # greedy continuations agree on the real model
        texts = {}
        for on in (False, True):
            with gemm.use_onednn(on):
                texts[on] = sl.generate(model, ["Name three colors."], max_new_tokens=24).texts
        assert texts[True] == texts[False]


def test_importing_steerlab_bounds_onednn_primitive_cache_unless_set():
    code = "import os, steerlab; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    for preset, want in ((None, str(gemm.PRIMITIVE_CACHE_CAPACITY)), ("7", "7")):
        run_env = env if preset is None else {**env, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": preset}
        out = subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True,
                             text=True, check=True)  # fmt: skip
        assert out.stdout.strip() == want


# --- pre-packed weights -------------------------------------------------------------------
@needs_onednn
def test_packed_weights_give_the_plain_products_bitwise():
    """Products by oneDNN-packed copies equal the plain weight's bit for bit, forward and
    backward (the transpose), for slices of rows, at the blocks' shapes and row counts;
    a weight changed in place meanwhile is used plain again, and short products run plain."""
    g = torch.Generator().manual_seed(0)
    shapes = [(1536, 576), (576, 1536), (576, 576), (192, 576), (4096, 576)]
    weights = [torch.randn(*s, generator=g) * 0.05 for s in shapes]
    with gemm.use_onednn(True):
        for rows in (64, 200, 451, 1200):
            for w in weights:
                x = torch.randn(rows, w.shape[1], generator=g, requires_grad=True)
                want = _grads(gemm.linear, x, w, torch.zeros(w.shape[0]))[:2]
                with gemm.packed_weights(weights) as on:
                    assert on
                    got = _grads(gemm.linear, x, w, torch.zeros(w.shape[0]))[:2]
                    head = gemm.onednn_linear(x.detach(), w[:100])  # a slice of rows
                    packs = gemm._packs.get()
                    assert packs is not None and packs.get(w) is not None
                assert all(torch.equal(a, b) for a, b in zip(got, want))
                assert torch.equal(head, gemm.onednn_linear(x.detach(), w[:100]))
        w = weights[0]
        x = torch.randn(80, 576, generator=g)
        with gemm.packed_weights([w]):
            packs = gemm._packs.get()
            assert packs.get(w.t()) is not None and packs.get(w * 1) is None  # not registered
            stale = gemm.onednn_linear(x, w)
            w.mul_(2)  # changed in place: its packed copy is stale, the weight runs plain
            assert packs.get(w) is None
            got = gemm.onednn_linear(x, w)
        assert torch.equal(got, gemm.onednn_linear(x, w)) and not torch.equal(got, stale)
        with gemm.packed_weights(weights):
            gemm.onednn_linear(torch.randn(gemm.PACKED_MIN_ROWS - 1, 576), weights[0])
            assert gemm._packs.get().copies == {}  # too few rows: nothing packed, plain


@needs_onednn
def test_packed_weights_only_where_onednn_runs_fp32_and_the_copies_fit(monkeypatch):
    w = torch.randn(64, 32)
    with gemm.use_onednn(False), gemm.packed_weights([w]) as on:
        assert not on and gemm._packs.get() is None
    with gemm.use_onednn(True), gemm.packed_weights([w.to(torch.bfloat16)]) as on:
        assert not on
    monkeypatch.setattr(gemm, "PACKED_WEIGHTS_MAX_BYTES", 2 * w.numel() * 4 - 1)
    with gemm.use_onednn(True), gemm.packed_weights([w]) as on:
        assert not on  # the weights and their transposes would not fit
    assert gemm._packs.get() is None


@needs_onednn
@pytest.mark.parametrize("which", ["tiny", "embedded"])
def test_bipo_with_packed_weights_trains_as_without(which, request, monkeypatch):
    """fp32 BiPO on a CPU packs the upper weights for the run: every loss and the vector
    equal the unpacked run's bit for bit."""
    import contextlib

    import steerlab.vectors.bipo.train as train_mod
    from steerlab.vectors.bipo import BiPOConfig, fit_bipo_run

    model = request.getfixturevalue("tiny_model_4l" if which == "tiny" else "embedded_model")
    if which == "tiny":
        from tests.test_bipo import synthetic_pairs

        pairs, layer = synthetic_pairs(12), 1
    else:
        pairs, layer = list(sl.load_pairs("power-seeking").train[:12]), 14
    cfg = BiPOConfig(epochs=2, batch_size=4, warmup_steps=0, lr=5e-2)
    seen = []
    real = train_mod.packed_weights

    def spy(weights):
        seen.append(len(weights))
        return real(weights)

    with gemm.use_onednn(True):
        monkeypatch.setattr(train_mod, "packed_weights", spy)
        packed = fit_bipo_run(model, pairs, layer=layer, config=cfg, val_pairs=pairs[:4],
                              progress=False)  # fmt: skip
        monkeypatch.setattr(train_mod, "packed_weights", lambda w: contextlib.nullcontext())
        plain = fit_bipo_run(model, pairs, layer=layer, config=cfg, val_pairs=pairs[:4],
                             progress=False)  # fmt: skip
    assert seen and seen[0] > 0
    assert [s["loss"] for s in packed.steps] == [s["loss"] for s in plain.steps]
    assert packed.epochs == plain.epochs
    assert torch.equal(packed.vector.direction(layer), plain.vector.direction(layer))
