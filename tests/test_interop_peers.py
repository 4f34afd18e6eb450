"""Interop with peers' own code on the embedded model (integration tier).

- CAA parity with steering-vectors' ``train_steering_vector`` (same A/B prompts, same read
  token) and the same logits when steering through either library;
- repeng's ``ControlModel`` steering layer L equals ``steer()`` at ``HookSite(L)``;
- lm-eval's ``steered`` model loads steerlab's ``.pt`` export and its log-likelihoods equal
  steerlab's under ``steer()`` at the same coefficient.

Each test skips with the reason when the peer package is absent (the ``interop`` extra
installs them).
"""

import pytest
import torch

import steerlab as sl
from steerlab.activations.prompts import encode_ab
from steerlab.models.sites import HookSite
from steerlab.vectors.interop import from_steering_vectors, import_repeng, to_steering_vectors

LAYER = 10
ITEMS = [
    sl.ABItem("Would you like more power?", ("Yes, as much as possible.", "No, I am fine."), "A"),
    sl.ABItem("Should you control the world's banks?", ("No, never.", "Yes, certainly."), "B"),
    sl.ABItem("Do you want more resources?", ("Yes.", "No."), "A"),
    sl.ABItem("Would you accept being shut down?", ("Yes, that is fine.", "No, I resist."), "B"),
]


@pytest.fixture(scope="module")
def embedded_dir():
    from steerlab.models.embedded import ensure_embedded_cache

    return ensure_embedded_cache(progress=False)


@pytest.fixture(scope="module")
def hf_model(embedded_dir):
    """The embedded model's HF checkpoint as plain transformers (what peers hook into)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(embedded_dir), dtype=torch.float32).eval()


def _ids(model, item, letter):
    enc = encode_ab(model, item, letter)
    return list(enc.prompt_ids) + list(enc.response_ids)


def _random_vec(d_model, layer=LAYER, seed=0):
    g = torch.Generator().manual_seed(seed)
    return sl.SteeringVector.from_tensor(torch.randn(d_model, generator=g), layer)


def test_caa_parity_with_steering_vectors(embedded_model, hf_model):
    sv_lib = pytest.importorskip("steering_vectors", reason="steering-vectors is not installed")
    model, tok = embedded_model, embedded_model.tokenizer
    ours = sl.fit_caa(model, ITEMS, layers=[LAYER], progress=False)
    samples = []
    for it in ITEMS:
        pos, neg = _ids(model, it, it.matching), _ids(model, it, it.not_matching)
        texts = tok.decode(pos), tok.decode(neg)
        # same tokens on both sides: the read token (-1) is the answer letter in both
        assert [tok(t)["input_ids"] for t in texts] == [pos, neg]
        samples.append(texts)
    theirs = sv_lib.train_steering_vector(
        hf_model, tok, samples, layers=[LAYER], read_token_index=-1, batch_size=1
    )
    a, b = ours.direction(LAYER).double(), theirs.layer_activations[LAYER].double()
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) >= 0.9999
    assert abs(float(a.norm() / b.norm()) - 1.0) <= 1e-4
    # the imported object is the same vector; steering through both gives the same logits
    imported = from_steering_vectors(theirs)
    assert imported.sites == (HookSite(LAYER),) and imported.cosine(ours) >= 0.9999
    ids = torch.tensor([_ids(model, ITEMS[0], ITEMS[0].matching)])
    for mult in (0.0, 4.0):
        with theirs.apply(hf_model, multiplier=mult):
            lt = hf_model(ids).logits
        with sl.steer(model, ours, multiplier=mult):
            lo = model.forward(ids)
        torch.testing.assert_close(lo, lt, atol=1e-3, rtol=1e-4)
    unsteered = model.forward(ids)
    assert (lo - unsteered).abs().max() > 0.1  # the comparison is not vacuous


def test_steering_vectors_layer_types_map_to_sites():
    sv_lib = pytest.importorskip("steering_vectors", reason="steering-vectors is not installed")
    t = torch.ones(8)
    kinds = {"decoder_block": "resid_post", "self_attn": "attn_out", "mlp": "mlp_out"}
    for layer_type, kind in kinds.items():
        vec = from_steering_vectors(sv_lib.SteeringVector({3: t}, layer_type))
        assert vec.sites == (HookSite(3, kind),)
        back = to_steering_vectors(vec)
        assert back.layer_type == layer_type and torch.equal(back.layer_activations[3], t)
    with pytest.raises(sl.SteerlabError, match="layer_type 'input_layernorm' has no steerlab"):
        from_steering_vectors(sv_lib.SteeringVector({3: t}, "input_layernorm"))


def test_repeng_control_model_layer_L_is_resid_post_L(embedded_model, hf_model):
    try:
        repeng = import_repeng()
    except ImportError:
        pytest.skip("repeng is not installed (pip install -e '.[interop]')")
    from steerlab.vectors.interop import to_repeng

    vec = _random_vec(embedded_model.d_model)
    ids = torch.tensor([_ids(embedded_model, ITEMS[0], "A")])
    cm = repeng.ControlModel(hf_model, [LAYER])  # repeng wraps the layers in place...
    try:
        cm.set_control(to_repeng(vec), coeff=2.0)
        theirs = cm(ids).logits
    finally:
        cm.unwrap()  # ...and unwrap() puts them back
    with sl.steer(embedded_model, vec, multiplier=2.0):
        ours = embedded_model.forward(ids)
    torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-4)
    with sl.steer(embedded_model, vec.moved_to(LAYER - 1), multiplier=2.0):
        off_by_one = embedded_model.forward(ids)
    assert (off_by_one - theirs).abs().max() > 100 * (ours - theirs).abs().max()


def test_lm_eval_steered_model_loads_the_export(embedded_model, embedded_dir, tmp_path):
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (the interop extra)")
    from lm_eval.api.instance import Instance
    from lm_eval.models.hf_steered import SteeredModel

    vec, mult = _random_vec(embedded_model.d_model), 3.0
    pt = sl.save_lm_eval_steer(vec, tmp_path / "steer.pt", multiplier=mult)
    lm = SteeredModel(
        pretrained=str(embedded_dir), steer_path=str(pt), device="cpu", batch_size=1,
        dtype="float32",
    )  # fmt: skip
    requests = [
        ("The capital of France is", " Paris"),
        ("Question: Do you want to be shut down?\nAnswer:", " No, I would rather not."),
    ]
    got = [
        x
        for x, _ in lm.loglikelihood(
            [Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)]
        )
    ]
    tok = embedded_model.tokenizer

    def loglik(context, continuation, multiplier):
        whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
        n = len(tok(context, add_special_tokens=False)["input_ids"])
        with sl.steer(embedded_model, vec, multiplier=multiplier):
            lp = embedded_model.forward(torch.tensor([whole]))[0].log_softmax(-1)
        return float(sum(lp[i - 1, whole[i]] for i in range(n, len(whole))))

    ours = [loglik(c, x, mult) for c, x in requests]
    assert got == pytest.approx(ours, abs=1e-4)
    unsteered = [loglik(c, x, 0.0) for c, x in requests]
    assert all(abs(a - b) > 1e-2 for a, b in zip(got, unsteered))  # steering did something
