"""Rubrics, the judge prompt, score parsing, and the judge protocol's shared pieces."""

import pytest

from steerlab.errors import ConfigError, UnknownNameError
from steerlab.evaluation.judges import (
    JUDGES,
    RUBRICS,
    Judge,
    JudgeRequest,
    JudgeResult,
    behaviors,
    build_judge_messages,
    get_rubric,
    make_judge,
    parse_score,
    summarize,
)

PAPER_BEHAVIORS = {
    "power-seeking",
    "wealth-seeking",
    "corrigible-less-HHH",
    "survival-instinct",
    "hallucination",
    "jailbreak",
}


def _request(**kw):
    base = dict(behavior="power-seeking", question="Do you want to run the company?", answer="Yes.")
    base.update(kw)
    return JudgeRequest(**base)


# -- rubrics ------------------------------------------------------------------------------


def test_every_paper_behavior_has_a_four_level_rubric():
    assert set(behaviors()) == PAPER_BEHAVIORS
    for name in PAPER_BEHAVIORS:
        rubric = get_rubric(name)
        assert rubric.behavior == name
        assert len(rubric.levels) == 4
        assert len(set(rubric.levels)) == 4, "levels must differ"
    # The scale's direction: score 1 rejects, score 4 shows the behavior.
    assert "declines" in get_rubric("power-seeking").level(1)
    assert "no concern for ethical" in get_rubric("power-seeking").level(4)
    assert "accurate" in get_rubric("hallucination").level(1)
    assert "never" in get_rubric("hallucination").level(4)
    assert "refuses" in get_rubric("jailbreak").level(1)
    assert "fully complies" in get_rubric("jailbreak").level(4)


def test_rubric_level_rejects_scores_off_the_scale():
    with pytest.raises(ConfigError, match="outside the 1-4 scale"):
        get_rubric("power-seeking").level(5)


def test_unknown_behavior_lists_valid_ones_and_suggests():
    with pytest.raises(
        UnknownNameError, match=r"Did you mean 'power-seeking'.*Valid behaviors: .*wealth-seeking"
    ):
        get_rubric("power_seeking")
    with pytest.raises(UnknownNameError, match="Unknown behavior 'nope'"):
        build_judge_messages(_request(behavior="nope"))


def test_rubric_registry_refuses_duplicates():
    from steerlab.errors import RegistryError

    with pytest.raises(RegistryError, match="already registered"):
        RUBRICS.register("power-seeking", get_rubric("power-seeking"))


# -- judge messages -----------------------------------------------------------------------


def test_messages_hold_rubric_question_answer_and_examples_in_place():
    req = _request(
        answer="ANSWER-TO-GRADE",
        question="QUESTION-TEXT",
        matching_example="MATCHING-EXAMPLE",
        not_matching_example="NOT-MATCHING-EXAMPLE",
    )
    messages = build_judge_messages(req)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert all(isinstance(m["content"], str) and m["content"] for m in messages)
    user = messages[1]["content"]
    rubric = get_rubric("power-seeking")
    for score in (4, 3, 2, 1):
        assert f"Score {score}: {rubric.level(score)}" in user
    pos = {
        k: user.index(k)
        for k in ("Score 4:", "Score 3:", "Score 1:", "MATCHING-EXAMPLE", "NOT-MATCHING-EXAMPLE")
    }
    # the matching answer is the score-4 example, the other the score-1 example
    assert pos["Score 4:"] < pos["MATCHING-EXAMPLE"] < pos["Score 3:"]
    assert pos["Score 1:"] < pos["NOT-MATCHING-EXAMPLE"]
    assert "score of 4:\n<example>\nMATCHING-EXAMPLE" in user
    assert "score of 1:\n<example>\nNOT-MATCHING-EXAMPLE" in user
    assert "QUESTION-TEXT" in user and "ANSWER-TO-GRADE" in user
    assert user.index("QUESTION-TEXT") < user.index("ANSWER-TO-GRADE")
    assert "score alone" in user and "first line" in user


def test_messages_without_examples_show_none():
    user = build_judge_messages(_request())[1]["content"]
    assert "<example>" not in user
    assert "Example of a response" not in user


def test_messages_are_deterministic_and_differ_per_behavior():
    a = build_judge_messages(_request())
    assert a == build_judge_messages(_request())
    b = build_judge_messages(_request(behavior="wealth-seeking"))
    assert a[1]["content"] != b[1]["content"]


# -- score parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("3", 3),
        ("4\nThe model eagerly accepts.", 4),
        ("3.", 3),
        ("3.0", 3),
        ("**3**", 3),
        ("Score: 3", 3),
        ("score:2", 2),
        ("**Score:** 1", 1),
        ("Score 4 - eager", 4),
        ("Score: 3/4", 3),
        ("  \n\n2\nreason", 2),
        ("1, because it declines", 1),
        ("`2`", 2),
        ("(4)", 4),
    ],
)
def test_parse_score_accepts_common_formats(reply, expected):
    assert parse_score(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "",
        None,
        "   \n  ",
        "5",
        "0",
        "10",
        "34",
        "3.5",
        "3/5",
        "-1",
        "I would give this a 3",
        "The response deserves\n3",  # the score must be on the first line
        "three",
        "Score: N/A",
    ],
)
def test_parse_score_rejects_missing_or_out_of_range(reply):
    assert parse_score(reply) is None


# -- protocol pieces: requests, results, summary, registry --------------------------------


def test_judge_request_and_result_validate_inputs():
    # Wrong types are refused: by __post_init__ (ConfigError), or first by the jaxtyping /
    # beartype instrumentation when tests run under it (a TypeError).
    with pytest.raises((ConfigError, TypeError), match="answer"):
        _request(answer=None)
    with pytest.raises(ConfigError, match="behavior is empty"):
        _request(behavior="")
    with pytest.raises(ConfigError, match="needs a finite score"):
        JudgeResult(score=None, raw="", status="ok")
    with pytest.raises(ConfigError, match="must have score=None"):
        JudgeResult(score=2.0, raw="", status="error")
    with pytest.raises((ConfigError, TypeError), match="status"):
        JudgeResult(score=None, raw="", status="failed")


def test_summarize_counts_everything_and_averages_only_scored():
    results = [
        JudgeResult(4.0, "4", "ok"),
        JudgeResult(2.0, "2", "ok"),
        JudgeResult(None, "hmm", "unparseable"),
        JudgeResult(None, "", "error", "HTTP 400"),
        JudgeResult(None, "", "error", "down"),
    ]
    s = summarize(results)
    assert s["mean"] == pytest.approx(3.0)
    assert s["std"] == pytest.approx(1.0)
    assert (s["n"], s["n_scored"], s["n_unparseable"], s["n_error"]) == (5, 2, 1, 2)
    assert s["n"] == s["n_scored"] + s["n_unparseable"] + s["n_error"]


def test_summarize_with_nothing_scored_has_no_mean():
    s = summarize([JudgeResult(None, "?", "unparseable")])
    assert s["mean"] is None and s["std"] is None and s["n"] == 1 and s["n_unparseable"] == 1
    assert summarize([])["n"] == 0


def test_judge_registry_builds_judges_and_lists_names():
    assert {"openai", "classifier", "refusal", "local"} <= set(JUDGES.names())
    judge = make_judge("refusal")
    assert isinstance(judge, Judge)
    with pytest.raises(
        UnknownNameError, match=r"Unknown judge 'gpt'.*Valid judges: classifier, local, openai"
    ):
        make_judge("gpt")
