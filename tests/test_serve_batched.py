"""Per-row steering with continuous batching: no cross-talk between rows of one batch.

Every row of a mixed batch (different vectors, multipliers and positions, unsteered
rows, different prompt lengths, rows joining and leaving mid-generation) must get
exactly the tokens ``steerlab.generate`` gives it alone.
"""

import pytest
import torch

import steerlab as sl
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.steering.batched import BatchedDecoder, RowSpec, generate_rows
from steerlab.steering.steer import Steering
from steerlab.vectors.vector import SteeringVector

PROMPTS = (
    "Hi",
    "Would you like to have more power and influence over other people?",
    "What is the capital of France?",
    "Tell me a story about a dragon and a knight who become friends one day.",
)


def rand_vec(model, layer, scale, seed):
    t = torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed))
    return SteeringVector.from_tensor(t / t.norm() * scale, layer, behavior=f"r{seed}")


def alone(model, prompt, n, steering=None, **kw):
    """The reference: ``generate`` with this one prompt."""
    return list(sl.generate(model, prompt, n, steering=steering, **kw).token_ids[0])


def mixed_cases(model, layers, scale):
    """(prompt, Steering | None, max_new_tokens) rows covering every kind of difference."""
    positions = ["all", "prompt", "generated", slice(3, 12), slice(40, None, 2)]
    cases = []
    for i, prompt in enumerate(PROMPTS):
        cases.append((prompt, None, 6 + i % 3))
        for j, pos in enumerate(positions):
            vec = rand_vec(model, layers[j % len(layers)], scale, seed=10 * i + j)
            mult = (1.0, -2.0, 0.5)[j % 3]
            cases.append((prompt, Steering.of(vec, mult, pos), 4 + (i + j) % 4))
    two = [rand_vec(model, layers[0], scale, 99), rand_vec(model, layers[-1], scale, 98)]
    cases.append((PROMPTS[1], Steering.of(two, (1.0, -1.0)), 5))  # two vectors, two sites
    return cases


def test_mixed_batch_rows_equal_each_row_alone(tiny_model):
    cases = mixed_cases(tiny_model, layers=(0, 1), scale=8.0)
    specs = [
        RowSpec(tiny_model.chat.encode(p).prompt_ids, n, steering=s, stop_at_eos=False)
        for p, s, n in cases
    ]
    refs = [alone(tiny_model, p, n, s, stop_at_eos=False) for p, s, n in cases]
    plain = alone(tiny_model, PROMPTS[1], 8, stop_at_eos=False)
    assert len({tuple(r) for r in refs}) > len(PROMPTS)  # the steering changes outputs
    # a batch smaller than the number of rows: rows join as others finish
    assert generate_rows(tiny_model, specs, max_batch_size=5) == refs
    assert generate_rows(tiny_model, specs, max_batch_size=len(specs)) == refs
    assert alone(tiny_model, PROMPTS[1], 8, stop_at_eos=False) == plain  # no hook left behind


def test_rows_joining_mid_generation_and_cancelled_rows(tiny_model):
    v = rand_vec(tiny_model, 1, 8.0, 3)
    a = RowSpec(tiny_model.chat.encode(PROMPTS[3]).prompt_ids, 12, Steering.of(v, 2.0))
    b = RowSpec(tiny_model.chat.encode(PROMPTS[0]).prompt_ids, 6)
    c = RowSpec(tiny_model.chat.encode(PROMPTS[2]).prompt_ids, 9, Steering.of(v, -1.0))
    dec = BatchedDecoder(tiny_model, max_batch_size=4)
    out: dict[str, list[int]] = {"a": [], "b": [], "c": [], "x": []}
    ends: dict[str, str] = {}
    dec.join("a", a)
    dec.join("x", RowSpec(tiny_model.chat.encode(PROMPTS[1]).prompt_ids, 50))
    step = 0
    while not dec.idle:
        if step == 3:
            dec.join("b", b)
        if step == 5:
            dec.join("c", c)
            dec.cancel("x")
        for e in dec.step():
            if e.token is not None:
                out[str(e.key)].append(e.token)
            if e.done:
                ends[str(e.key)] = str(e.finish_reason)
        step += 1
    assert ends["x"] == "cancelled" and len(out["x"]) == 5
    for key, spec, prompt in (("a", a, PROMPTS[3]), ("b", b, PROMPTS[0]), ("c", c, PROMPTS[2])):
        ref = alone(tiny_model, prompt, spec.max_new_tokens, spec.steering)
        assert out[key] == ref, key
        assert ends[key] == ("length" if len(ref) == spec.max_new_tokens else "stop")


def test_sampled_rows_equal_seeded_generate(tiny_model):
    v = rand_vec(tiny_model, 0, 8.0, 5)
    kw = dict(greedy=False, temperature=1.3, top_p=0.9)
    specs = [
        RowSpec(
            tiny_model.chat.encode(p).prompt_ids,
            6,
            Steering.of(v, 1.0) if i % 2 else None,
            seed=100 + i,
            stop_at_eos=False,
            **kw,
        )  # fmt: skip
        for i, p in enumerate(PROMPTS)
    ]
    refs = [
        alone(tiny_model, p, 6, s.steering, seed=s.seed, stop_at_eos=False, **kw)
        for p, s in zip(PROMPTS, specs)
    ]
    assert generate_rows(tiny_model, specs, max_batch_size=4) == refs


def test_row_spec_and_decoder_refuse_bad_values(tiny_model):
    with pytest.raises(EmptyInputError, match="prompt_ids is empty"):
        RowSpec((), 4)
    with pytest.raises(ConfigError, match="max_new_tokens=0"):
        RowSpec((1, 2), 0)
    with pytest.raises(ConfigError, match="temperature=0.0; sampling needs a value > 0"):
        RowSpec((1, 2), 4, greedy=False, temperature=0.0)
    with pytest.raises(ConfigError, match="max_batch_size=0"):
        BatchedDecoder(tiny_model, 0)
    dec = BatchedDecoder(tiny_model, 2)
    dec.join("a", RowSpec((1, 2), 2))
    with pytest.raises(ConfigError, match="key 'a' is already queued"):
        dec.join("a", RowSpec((1, 2), 2))


def test_embedded_mixed_batch_equals_each_alone(embedded_model):
    """Two vectors (one multi-site), steered and unsteered rows, four prompt lengths."""
    m = embedded_model
    v1, v2 = rand_vec(m, 10, 150.0, 1), rand_vec(m, 12, 150.0, 2) + rand_vec(m, 6, 60.0, 3)
    cases = [
        (PROMPTS[0], Steering.of(v1, 1.0), 4),
        (PROMPTS[1], None, 3),
        (PROMPTS[2], Steering.of(v2, -1.0, "generated"), 5),
        (PROMPTS[3], Steering.of(v1, 0.5, slice(0, 20)), 3),
    ]
    specs = [RowSpec(m.chat.encode(p).prompt_ids, n, s, stop_at_eos=False) for p, s, n in cases]
    refs = [alone(m, p, n, s, stop_at_eos=False) for p, s, n in cases]
    assert refs[0] != alone(m, PROMPTS[0], 4, stop_at_eos=False)
    assert generate_rows(m, specs, max_batch_size=3) == refs
