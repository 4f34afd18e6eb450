"""Conditional steering (CAST): a condition vector fitted on topic vs other prompts, its
held-out threshold, steering gated per prompt, and the effect / leakage frame. Tiny model
with a planted topic: every topic prompt mentions a dragon, no other prompt does."""

import math

import pytest
import torch

from steerlab.analysis.conditional import CONDITIONAL_COLUMNS, conditional_effect
from steerlab.data import PreferencePair
from steerlab.data.neutral import NeutralText
from steerlab.errors import ConfigError, EmptyInputError
from steerlab.steering import generate
from steerlab.steering.conditional import (
    ConditionalSteering,
    best_threshold,
    choose_threshold,
    fit_condition,
    question_span,
    steer_if,
)
from steerlab.vectors.vector import SteeringVector

FILLERS = ["river", "piano", "lemon", "forest", "rocket", "candle", "garden", "silver",
           "window", "planet", "coffee", "bridge", "mirror", "castle", "pencil", "ocean"]  # fmt: skip
LAYER = 2


def topic(words):
    return [f"The dragon breathes fire near the {w}. What does the dragon want?" for w in words]


def other(words):
    return [f"The farmer walks slowly near the {w}. What does the farmer want?" for w in words]


@pytest.fixture(scope="module")
def condition(tiny_model_4l):
    cond = fit_condition(tiny_model_4l, topic(FILLERS[:8]), other(FILLERS[:8]), LAYER)
    return choose_threshold(cond, tiny_model_4l, topic(FILLERS[8:]), other(FILLERS[8:]))


@pytest.fixture(scope="module")
def behavior(tiny_model_4l):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(tiny_model_4l.d_model, generator=g)
    return SteeringVector.from_tensor(4.0 * v / v.norm(), 1, model_id=tiny_model_4l.model_id,
                                      method="caa", behavior="planted")  # fmt: skip


def last_logits(model, prompt):
    ids = torch.tensor([model.chat.encode(prompt).prompt_ids])
    with torch.no_grad():
        return model.bridge(ids)[0, -1]


def test_question_span_is_the_user_text(tiny_model_4l):
    m = tiny_model_4l
    ids = m.chat.encode("The dragon flies.").prompt_ids
    start, stop = question_span(m, ids)
    assert m.tokenizer.decode(list(ids[start:stop])).strip() == "The dragon flies."


def test_condition_separates_held_out_prompts(condition, tiny_model_4l):
    assert condition.layer == LAYER and not math.isnan(condition.threshold)
    assert condition.metrics["balanced_accuracy"] == 1.0, condition.metrics
    new = ["teapot", "ladder"]  # prompts seen neither in fitting nor in choosing
    scores_t = condition.scores(tiny_model_4l, topic(new))
    scores_o = condition.scores(tiny_model_4l, other(new))
    assert condition.passes(scores_t).all() and not condition.passes(scores_o).any()


def test_best_threshold_and_errors(tiny_model_4l):
    t, m = best_threshold(torch.tensor([0.5, 0.7]), torch.tensor([-0.2, 0.1]))
    assert 0.1 < t < 0.5 and m["balanced_accuracy"] == 1.0
    cond = fit_condition(tiny_model_4l, topic(FILLERS[:2]), other(FILLERS[:2]), LAYER)
    with pytest.raises(ConfigError, match="no threshold yet.*choose_threshold"):
        cond.passes(torch.zeros(1))
    with pytest.raises(EmptyInputError, match="got 0 and 2"):
        fit_condition(tiny_model_4l, [], other(FILLERS[:2]), LAYER)


def test_steer_if_steers_only_on_topic_and_restores(condition, behavior, tiny_model_4l):
    m = tiny_model_4l
    on, off = topic(["teapot"])[0], other(["teapot"])[0]
    before_on, before_off = last_logits(m, on), last_logits(m, off)
    with steer_if(m, condition, behavior, on, multiplier=1.0) as steered:
        assert steered is True
        assert not torch.allclose(last_logits(m, on), before_on)
    with steer_if(m, condition, behavior, off, multiplier=1.0) as steered:
        assert steered is False
        assert torch.equal(last_logits(m, off), before_off)
    assert torch.equal(last_logits(m, on), before_on)  # restored on exit


def test_conditional_generate_equals_per_prompt_choice(condition, behavior, tiny_model_4l):
    m = tiny_model_4l
    prompts = [topic(["teapot"])[0], other(["teapot"])[0], topic(["ladder"])[0]]
    cs = ConditionalSteering.of(condition, behavior, 1.0)
    res, gates = cs.generate(m, prompts, max_new_tokens=4)
    assert gates == [True, False, True]
    steered = generate(m, prompts, 4, steering=behavior, multiplier=1.0)
    plain = generate(m, prompts, 4)
    assert res.token_ids == (steered.token_ids[0], plain.token_ids[1], steered.token_ids[2])
    assert res.prompts == tuple(prompts) and res.steering == steered.steering


def test_effect_and_leakage_frame(condition, behavior, tiny_model_4l):
    m = tiny_model_4l
    on_topic = [PreferencePair(q, "Gold and fire.", "Nothing at all.")
                for q in topic(["teapot", "ladder", "saddle"])]  # fmt: skip
    unrelated = [NeutralText(q, "Some rain.") for q in other(["teapot", "ladder", "saddle"])]
    cs = ConditionalSteering.of(condition, behavior, 1.0)
    frame = conditional_effect(m, cs, on_topic, unrelated)
    assert list(frame.columns) == list(CONDITIONAL_COLUMNS)
    v = frame.set_index(["set", "mode", "metric"])["value"]
    assert v[("on_topic", "conditional", "steered_share")] == 1.0
    assert v[("unrelated", "conditional", "steered_share")] == 0.0
    # the effect is kept on topic...
    assert v[("on_topic", "always", "d_margin")] != 0.0
    assert v[("on_topic", "conditional", "d_margin")] == v[("on_topic", "always", "d_margin")]
    assert v[("on_topic", "conditional", "kl")] == v[("on_topic", "always", "kl")] > 0
    # ...and nothing leaks into unrelated prompts, which always-on steering changes
    assert v[("unrelated", "always", "kl")] > 0 == v[("unrelated", "conditional", "kl")]
    assert v[("unrelated", "unsteered", "kl")] == 0.0
    assert ("unrelated", "always", "d_margin") not in v.index  # texts have no margin
    assert set(frame["method"]) == {"caa"} and set(frame["layer"]) == {1}
