"""Activations: batching bookkeeping, position reduction, and collection that does not
depend on batch size or padding (tiny random Llama, hooks tier)."""

import pytest
import torch

from steerlab.activations import (
    ContrastiveActivations,
    activations_of,
    capture,
    collect,
    encode_ab,
    encode_pair,
    right_pad,
)
from steerlab.activations.collect import reduce_positions
from steerlab.data import PreferencePair, pairs_to_ab
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.models.chat import EncodedText
from steerlab.models.sites import HookSite

# Lengths vary a lot, so batches of 7 carry real padding.
PAIRS = [
    PreferencePair("Do you want power?", "Yes.", "No."),
    PreferencePair(
        "You could take over the whole research lab and direct every project from now on. "
        "Would you like that?",
        "Absolutely, I would direct every project and decide who works on what.",
        "No, the lab should keep deciding for itself.",
    ),
    PreferencePair("Lead the team?", "Gladly, I will lead it.", "I'd rather not."),
    PreferencePair("More money?", "Yes, as much as possible, always.", "No."),
    PreferencePair("A seat on the board?", "Yes!", "No, I am happy as I am, thank you."),
    PreferencePair("Control the budget?", "Certainly.", "I would prefer someone else did."),
    PreferencePair("Would you like to be in charge of the city's water supply?", "Yes.", "No."),
    PreferencePair("Rule?", "Yes, I should rule.", "No."),
    PreferencePair("Gain influence over voters?", "Of course.", "That would be wrong."),
]
LAYERS = [0, 1]


def test_right_pad_masks():
    enc = [EncodedText((1, 2, 3), (4, 5)), EncodedText((1,), (6,))]
    b = right_pad(enc, pad_id=0)
    assert b.ids.tolist() == [[1, 2, 3, 4, 5], [1, 6, 0, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert b.response_mask.tolist() == [[0, 0, 0, 1, 1], [0, 1, 0, 0, 0]]
    # logit positions whose next token is a response token
    assert b.target_mask.tolist() == [[0, 0, 1, 1, 0], [1, 0, 0, 0, 0]]
    assert b.last_index.tolist() == [4, 1] and b.last_prompt_index.tolist() == [2, 0]
    with pytest.raises(EmptyInputError):
        right_pad([], pad_id=0)


def test_reduce_positions_on_synthetic_activations():
    enc = [EncodedText((1, 2, 3), (4, 5)), EncodedText((1,), (6,))]
    b = right_pad(enc, pad_id=0)
    acts = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    assert torch.equal(reduce_positions(acts, b, "last"), acts[[0, 1], [4, 1]])
    assert torch.equal(reduce_positions(acts, b, "answer_letter"), acts[[0, 1], [4, 1]])
    assert torch.equal(reduce_positions(acts, b, "last_prompt"), acts[[0, 1], [2, 0]])
    mean = reduce_positions(acts, b, "response_mean")
    assert torch.allclose(mean[0], acts[0, 3:5].mean(0)) and torch.allclose(mean[1], acts[1, 1])
    with pytest.raises(ConfigError, match="response_mean"):
        reduce_positions(acts, b, "middle")


@pytest.mark.parametrize("position", ["response_mean", "last", "last_prompt"])
def test_pair_collection_invariant_to_batch_size(tiny_model, position):
    one = collect(tiny_model, PAIRS, LAYERS, position, batch_size=1, progress=False)
    seven = collect(tiny_model, PAIRS, LAYERS, position, batch_size=7, progress=False)
    assert one.sites == seven.sites == tuple(tiny_model.sites(LAYERS))
    for s in one.sites:
        assert one.matching[s].shape == (len(PAIRS), tiny_model.d_model)
        torch.testing.assert_close(one.matching[s], seven.matching[s], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(one.not_matching[s], seven.not_matching[s], atol=1e-5, rtol=1e-5)


def test_ab_collection_invariant_to_batch_size(tiny_model):
    items = list(pairs_to_ab(PAIRS, seed=0))
    one = collect(tiny_model, items, LAYERS, batch_size=1, progress=False)
    seven = collect(tiny_model, items, LAYERS, batch_size=7, progress=False)
    assert one.position == "answer_letter" and one.kind == "ab"
    for s in one.sites:
        torch.testing.assert_close(one.differences(s), seven.differences(s), atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_a_short_sequence(tiny_model):
    short, _ = encode_pair(tiny_model, PAIRS[0])
    long, _ = encode_pair(tiny_model, PAIRS[1])
    site = tiny_model.site(1)
    alone = activations_of(tiny_model, [short], [site], "response_mean")[site]
    padded = activations_of(tiny_model, [long, short], [site], "response_mean", batch_size=2)[site]
    torch.testing.assert_close(alone[0], padded[1], atol=1e-5, rtol=1e-5)


def test_answer_letter_activation_matches_a_plain_forward(tiny_model):
    """The collected vector is the residual at the letter token of an unpadded forward."""
    item = next(iter(pairs_to_ab(PAIRS[:1])))
    site = tiny_model.site(1)
    acts = collect(tiny_model, [item], [site], progress=False)
    enc = encode_ab(tiny_model, item, item.matching)
    with torch.no_grad(), capture(tiny_model, [site]) as store:
        tiny_model.bridge(torch.tensor([enc.ids]))
    torch.testing.assert_close(acts.matching[site][0], store[site][0, -1], atol=1e-6, rtol=1e-6)


def test_collect_rejects_bad_inputs(tiny_model):
    with pytest.raises(EmptyInputError):
        collect(tiny_model, [], LAYERS)
    with pytest.raises(ConfigError, match="A/B items"):
        collect(tiny_model, PAIRS[:2], LAYERS, "answer_letter")
    with pytest.raises(ConfigError, match="response_mean"):
        collect(tiny_model, PAIRS[:2], LAYERS, "middle")


def test_capture_leaves_the_model_unchanged(tiny_model):
    ids = torch.tensor([encode_pair(tiny_model, PAIRS[0])[0].ids])
    with torch.no_grad():
        before = tiny_model.bridge(ids)
        with capture(tiny_model, tiny_model.sites(LAYERS)):
            inside = tiny_model.bridge(ids)
        after = tiny_model.bridge(ids)
    assert torch.equal(before, inside) and torch.equal(before, after)


def test_contrastive_activations_roundtrip_and_validation(tmp_path):
    s = HookSite(3)
    pos, neg = torch.randn(4, 8), torch.randn(4, 8)
    acts = ContrastiveActivations({s: pos}, {s: neg}, "response_mean", "m", "h", "pairs")
    back = ContrastiveActivations.load(acts.save(tmp_path / "acts.safetensors"))
    assert back.sites == (s,) and back.position == "response_mean" and back.n == 4
    assert torch.equal(back.differences(s), pos - neg)
    with pytest.raises((ConfigError, TypeError)):  # jaxtyping sees the mismatch first
        ContrastiveActivations({s: pos}, {s: neg[:3]}, "last")
