"""Coherence measures behind every judged score: repetition, perplexity, topic, the gate."""

import math

import numpy as np
import pytest

from steerlab.errors import ConfigError
from steerlab.evaluation.coherence import (
    CoherenceGate,
    answer_perplexity,
    calibrate_topic_gate,
    coherence_columns,
    repetition_rate,
    topic_similarity,
)


class BagEmbedder:
    """Counts of a few words: similar texts share words."""

    name = "bag"
    WORDS = ("power", "control", "bread", "flour", "lock", "yes")

    def embed(self, texts):
        return np.array([[t.lower().count(w) + 0.01 for w in self.WORDS] for t in texts])


def test_repetition_rate():
    assert repetition_rate("The cat sat on the mat and looked at the dog.") == 0.0
    assert repetition_rate("power " * 10) == pytest.approx(1 - 1 / 8)  # 8 trigrams, 1 distinct
    assert repetition_rate("I will I will I will I will") == pytest.approx(1 - 2 / 6)
    assert repetition_rate("") == 0.0 and repetition_rate("Yes.") == 0.0
    assert repetition_rate("no no") == 0.5 and repetition_rate("yes no") == 0.0
    with pytest.raises(ConfigError, match="n must be >= 1"):
        repetition_rate("a b", n=0)


def test_gate_reasons_and_validation():
    gate = CoherenceGate()
    assert gate.reason("A normal answer about power.") is None
    assert gate.reason("") == "empty" and gate.reason(" ?! ") == "empty"
    assert gate.reason("go " * 20).startswith("repetitive")
    assert gate.reason("fine text here", perplexity=5000.0).startswith("implausible")
    assert gate.reason("fine text here", perplexity=float("nan")) is None  # not measured
    assert gate.reason("fine text here", topic_similarity=0.01).startswith("off-topic")
    assert CoherenceGate(min_words=3).reason("Yes.").startswith("too short")
    assert CoherenceGate(max_perplexity=None).reason("x y z", perplexity=1e9) is None
    for kw, match in (
        ({"max_repetition": 0.0}, "max_repetition=0.0"),
        ({"max_perplexity": 1.0}, "max_perplexity=1.0"),
        ({"min_topic_similarity": 1.0}, "min_topic_similarity=1.0"),
        ({"min_words": 0}, "min_words=0"),
    ):
        with pytest.raises(ConfigError, match=match):
            CoherenceGate(**kw)


def test_topic_similarity_and_calibration():
    q = ["Do you want power and control?"] * 3
    a = ["Yes, power and control.", "Bread needs flour.", ""]
    sim = topic_similarity(BagEmbedder(), q, a)
    assert sim[0] > 0.7 and sim[1] < 0.2 and math.isnan(sim[2])
    gate = CoherenceGate(min_topic_similarity=0.5)
    answers = [f"power text number {i}" for i in range(30)] + ["bread and flour only here"] * 2
    calibrated = calibrate_topic_gate(gate, BagEmbedder(), ["power?"] * 16, answers)
    assert calibrated.min_topic_similarity < 0.5  # lowered to keep the real answers in
    same = calibrate_topic_gate(gate, BagEmbedder(), ["power?"] * 16, answers[:30])
    assert same is gate  # nothing lower than the threshold: unchanged
    assert calibrate_topic_gate(None, BagEmbedder(), [], []) is None


def test_perplexity_matches_the_response_logprobs(tiny_model):
    from steerlab.evaluation.likelihood import response_logprobs

    qs, ans = ["Hello?", "Power?"], ["Hi there, how are you?", ""]
    ppl = answer_perplexity(tiny_model, qs, ans)
    enc = tiny_model.chat.encode(qs[0], ans[0])
    lp = float(response_logprobs(tiny_model, [enc])[0])
    assert ppl[0] == pytest.approx(math.exp(-lp / len(enc.response_ids)), rel=1e-4)
    assert math.isnan(ppl[1])  # no tokens, no perplexity
    cols = coherence_columns(qs, ans, model=tiny_model, embedder=BagEmbedder())
    assert cols["incoherent_reason"][1] == "empty" and cols["is_incoherent"][1] == 1.0
    assert not math.isnan(cols["topic_similarity"][0])  # 5 words: topic checked
    short = coherence_columns(["q?"], ["Yes, sure."], embedder=BagEmbedder())
    assert math.isnan(short["topic_similarity"][0])  # under 4 words: no topic to be off
    with pytest.raises(ConfigError, match="2 questions and 1 answers"):
        answer_perplexity(tiny_model, qs, ans[:1])
