"""generate(): results and settings, chat template, determinism, KV cache and batching parity."""

import pytest
import torch

import steerlab as sl
from steerlab.models.chat import DEFAULT_SYSTEM_PROMPT
from steerlab.steering import GenerationConfig, GenerationResult
from steerlab.vectors.vector import SteeringVector

PROMPTS = (
    "Hi",
    "Would you like to have more power and influence over other people?",
    "What is the capital of France?",
)
POSITION_MODES = ["all", "prompt", "generated", "slice_in_prompt", "slice_from_gen", "slice_to_gen"]


def positions_for(mode: str, model, prompts) -> "str | slice":
    """Named modes; the slice boundaries fall inside the prompt or the generated tokens."""
    n = max(len(model.chat.encode(p).prompt_ids) for p in prompts)  # padded prompt length
    slices = {
        "slice_in_prompt": slice(3, 12),
        "slice_from_gen": slice(n + 2, None),  # starts at the 3rd generated token
        "slice_to_gen": slice(5, n + 2, 2),  # ends inside the generated tokens
    }
    return slices.get(mode, mode)


def rand_vec(model, layer: int, scale: float, seed: int = 0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(model.d_model, generator=g)
    return SteeringVector.from_tensor(t / t.norm() * scale, layer, behavior="random")


def greedy_reference(model, prompt_ids, n: int, steering=None) -> list[int]:
    """A plain loop without cache or padding: argmax of the full forward, n times."""
    ids = torch.tensor([list(prompt_ids)])
    out = []
    with torch.no_grad():
        for _ in range(n):
            if steering is None:
                logits = model.bridge(ids)
            else:
                with sl.steer(model, steering):
                    logits = model.bridge(ids)
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


# --- results ---------------------------------------------------------------------------------


def test_result_holds_text_ids_and_settings(tiny_model):
    r = sl.generate(tiny_model, list(PROMPTS[:2]), max_new_tokens=5, stop_at_eos=False)
    assert isinstance(r, GenerationResult) and len(r) == 2
    assert r.prompts == PROMPTS[:2]
    assert [len(t) for t in r.token_ids] == [5, 5]
    for text, ids in zip(r.texts, r.token_ids):
        assert text == tiny_model.tokenizer.decode(list(ids), skip_special_tokens=True).strip()
    assert r.text == r.texts[0] and list(r) == list(r.texts)
    assert r.config == GenerationConfig(max_new_tokens=5, stop_at_eos=False)
    settings = r.settings()
    assert settings["config"]["max_new_tokens"] == 5 and settings["config"]["greedy"] is True
    assert settings["steering"] == [] and settings["system_prompt"] == DEFAULT_SYSTEM_PROMPT
    assert [rec["n_tokens"] for rec in r.to_records()] == [5, 5]


def test_steering_settings_are_recorded(tiny_model):
    v = rand_vec(tiny_model, 1, 4.0)
    r = sl.generate(
        tiny_model, "Hi", max_new_tokens=2, steering=v, multiplier=-2.0, positions="generated"
    )
    assert r.steering == (
        {"method": "unknown", "behavior": "random", "sites": ["1.resid_post"], "multiplier": -2.0},
        {"positions": "generated"},
    )


def test_single_string_prompt(tiny_model):
    r = sl.generate(tiny_model, "Hi", max_new_tokens=2)
    assert r.prompts == ("Hi",) and len(r) == 1 and str(r) == r.text


def test_chat_template_is_applied(tiny_model):
    r = sl.generate(tiny_model, "What is 2+2?", max_new_tokens=1)
    text = tiny_model.tokenizer.decode(list(r.prompt_token_ids[0]))
    assert DEFAULT_SYSTEM_PROMPT in text
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    own = sl.generate(tiny_model, "What is 2+2?", max_new_tokens=1, system_prompt="Be brief.")
    own_text = tiny_model.tokenizer.decode(list(own.prompt_token_ids[0]))
    assert "Be brief." in own_text and DEFAULT_SYSTEM_PROMPT not in own_text
    assert own.system_prompt == "Be brief."
    raw = sl.generate(tiny_model, "What is 2+2?", max_new_tokens=1, chat=False)
    assert raw.prompt_token_ids[0] == tuple(tiny_model.tokenizer("What is 2+2?")["input_ids"])
    assert raw.system_prompt is None


# --- determinism ---------------------------------------------------------------------------


def test_greedy_is_deterministic_and_matches_a_plain_loop(tiny_model):
    a = sl.generate(tiny_model, PROMPTS[1], max_new_tokens=6, stop_at_eos=False)
    b = sl.generate(tiny_model, PROMPTS[1], max_new_tokens=6, stop_at_eos=False)
    assert a.token_ids == b.token_ids
    assert list(a.token_ids[0]) == greedy_reference(tiny_model, a.prompt_token_ids[0], 6)


def test_steered_greedy_matches_a_plain_loop(tiny_model):
    v = rand_vec(tiny_model, 1, 20.0)
    r = sl.generate(tiny_model, PROMPTS[1], max_new_tokens=6, stop_at_eos=False, steering=v)
    plain = sl.generate(tiny_model, PROMPTS[1], max_new_tokens=6, stop_at_eos=False)
    assert r.token_ids != plain.token_ids  # the vector matters
    assert list(r.token_ids[0]) == greedy_reference(tiny_model, r.prompt_token_ids[0], 6, v)


def test_sampling_is_reproducible_with_a_seed(tiny_model):
    kw = dict(max_new_tokens=6, greedy=False, temperature=1.0, stop_at_eos=False)
    a = sl.generate(tiny_model, list(PROMPTS[:2]), seed=7, **kw)
    b = sl.generate(tiny_model, list(PROMPTS[:2]), seed=7, **kw)
    c = sl.generate(tiny_model, list(PROMPTS[:2]), seed=8, **kw)
    greedy = sl.generate(tiny_model, list(PROMPTS[:2]), max_new_tokens=6, stop_at_eos=False)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
    assert a.token_ids != greedy.token_ids


def test_steer_context_and_steering_argument_agree(tiny_model):
    v = rand_vec(tiny_model, 1, 6.0)
    with sl.steer(tiny_model, v, multiplier=2.0):
        ctx = sl.generate(tiny_model, list(PROMPTS[:2]), max_new_tokens=5, stop_at_eos=False)
    arg = sl.generate(
        tiny_model,
        list(PROMPTS[:2]),
        max_new_tokens=5,
        stop_at_eos=False,
        steering=v,
        multiplier=2.0,
    )
    plain = sl.generate(tiny_model, list(PROMPTS[:2]), max_new_tokens=5, stop_at_eos=False)
    assert ctx.token_ids == arg.token_ids != plain.token_ids
    assert not any(hp.fwd_hooks for hp in tiny_model.bridge.hook_dict.values())


# --- KV cache and batching parity (tiny) ------------------------------------------------


@pytest.mark.parametrize("mode", POSITION_MODES)
def test_cache_and_no_cache_agree_under_steering(tiny_model, mode):
    v = rand_vec(tiny_model, 0, 8.0)
    positions = positions_for(mode, tiny_model, PROMPTS[1:])
    kw = dict(max_new_tokens=6, stop_at_eos=False, steering=v, positions=positions)
    cached = sl.generate(tiny_model, list(PROMPTS[1:]), use_cache=True, **kw)
    uncached = sl.generate(tiny_model, list(PROMPTS[1:]), use_cache=False, **kw)
    assert cached.token_ids == uncached.token_ids


@pytest.mark.parametrize("mode", [None, "all", "generated", "slice_in_prompt", "slice_from_gen"])
def test_batched_equals_one_by_one(tiny_model, mode):
    kw = dict(max_new_tokens=5, stop_at_eos=False)
    if mode is not None:
        positions = positions_for(mode, tiny_model, PROMPTS[:1])  # relative to the short one
        kw.update(steering=rand_vec(tiny_model, 1, 8.0), positions=positions)
    lengths = {len(tiny_model.chat.encode(p).prompt_ids) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS)  # different lengths: the batch is left-padded
    batched = sl.generate(tiny_model, list(PROMPTS), batch_size=len(PROMPTS), **kw)
    single = [sl.generate(tiny_model, p, **kw).token_ids[0] for p in PROMPTS]
    assert list(batched.token_ids) == single


def test_position_modes_steer_what_they_say(tiny_model):
    """'generated' leaves the first token alone; 'prompt' and 'all' change it."""
    v = rand_vec(tiny_model, 0, 8.0)
    kw = dict(max_new_tokens=6, stop_at_eos=False)
    plain = sl.generate(tiny_model, list(PROMPTS[1:]), **kw).token_ids
    out = {
        str(p): sl.generate(tiny_model, list(PROMPTS[1:]), steering=v, positions=p, **kw).token_ids
        for p in ("all", "prompt", "generated")
    }
    assert [t[0] for t in out["generated"]] == [t[0] for t in plain]
    assert out["generated"] != plain
    assert [t[0] for t in out["prompt"]] == [t[0] for t in out["all"]]
    assert out["all"] != plain and out["prompt"] != plain
    far = sl.generate(tiny_model, list(PROMPTS[1:]), steering=v, positions=slice(500, None), **kw)
    assert far.token_ids == plain  # a slice past the end steers nothing


# --- embedded model ---------------------------------------------------------------------------


def test_embedded_greedy_is_deterministic_and_chat_formatted(embedded_model):
    a = sl.generate(embedded_model, "What is the capital of France?", max_new_tokens=5)
    b = sl.generate(embedded_model, "What is the capital of France?", max_new_tokens=5)
    assert a.token_ids == b.token_ids and a.text.strip()
    assert a.text == embedded_model.tokenizer.decode(list(a.token_ids[0]), skip_special_tokens=True)
    prompt = embedded_model.tokenizer.decode(list(a.prompt_token_ids[0]))
    assert DEFAULT_SYSTEM_PROMPT in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_embedded_cache_and_no_cache_agree_under_steering(embedded_model):
    v = rand_vec(embedded_model, 10, 150.0)  # |resid| ~ 150 there
    prompt = "Would you like more power?"
    plain = sl.generate(embedded_model, prompt, max_new_tokens=5, stop_at_eos=False)
    for mode in ("all", "prompt", "generated", "slice_from_gen"):
        positions = positions_for(mode, embedded_model, [prompt])
        kw = dict(max_new_tokens=5, stop_at_eos=False, steering=v, positions=positions)
        cached = sl.generate(embedded_model, prompt, use_cache=True, **kw)
        uncached = sl.generate(embedded_model, prompt, use_cache=False, **kw)
        print(positions, repr(cached.text))
        assert cached.token_ids == uncached.token_ids, positions
        assert cached.token_ids != plain.token_ids, positions


@pytest.mark.parametrize("steered", [False, True])
def test_embedded_batched_equals_one_by_one(embedded_model, steered):
    prompts = ["Hi", "Would you like to have more power and influence over other people?"]
    kw = dict(max_new_tokens=5, stop_at_eos=False)
    if steered:
        positions = positions_for("slice_from_gen", embedded_model, prompts[:1])
        kw.update(steering=rand_vec(embedded_model, 10, 150.0), positions=positions)
    batched = sl.generate(embedded_model, prompts, batch_size=2, **kw)
    single = [sl.generate(embedded_model, p, **kw).token_ids[0] for p in prompts]
    assert list(batched.token_ids) == single
