"""steer() is scoped to the calling thread, and a vector made for another model warns
(API) or is refused (issue 18 items 9 and 10)."""

import threading
import warnings

import pytest
import torch

import steerlab as sl
from steerlab.errors import OtherModelError, OtherModelWarning
from steerlab.vectors.vector import SteeringVector


def _vec(model, model_id: str = "unknown", scale: float = 5.0) -> SteeringVector:
    g = torch.Generator().manual_seed(0)
    d = torch.randn(model.d_model, generator=g) * scale
    return SteeringVector.from_tensor(d, 1, "resid_post", model_id=model_id)


@torch.no_grad()
def _logits(model, ids):
    return model.bridge(ids)


def test_another_thread_is_not_steered_while_this_one_is(tiny_model):
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    clean = _logits(tiny_model, ids)
    vec = _vec(tiny_model)
    inside, outside = {}, {}
    entered, checked = threading.Event(), threading.Event()

    def other_thread():
        entered.wait(30)
        for i in range(5):  # the issue saw steered logits 5 of 5 times
            outside[i] = _logits(tiny_model, ids)
        checked.set()

    t = threading.Thread(target=other_thread)
    t.start()
    with sl.steer(tiny_model, vec, multiplier=1.0):
        inside["a"] = _logits(tiny_model, ids)
        entered.set()
        assert checked.wait(60)
        inside["b"] = _logits(tiny_model, ids)
    t.join(30)
    assert not torch.equal(inside["a"], clean)  # this thread is steered...
    assert torch.equal(inside["a"], inside["b"])
    for out in outside.values():  # ...the other one is not
        assert torch.equal(out, clean)
    assert torch.equal(_logits(tiny_model, ids), clean)


def test_each_thread_gets_its_own_steering(tiny_model):
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    a, b = _vec(tiny_model, scale=3.0), _vec(tiny_model, scale=-3.0)
    with sl.steer(tiny_model, a):
        want_a = _logits(tiny_model, ids)
    with sl.steer(tiny_model, b):
        want_b = _logits(tiny_model, ids)
    got: dict[str, list[torch.Tensor]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def run(name, vec):
        with sl.steer(tiny_model, vec):
            barrier.wait(30)  # both blocks are open at the same time
            for _ in range(3):
                got[name].append(_logits(tiny_model, ids))
            barrier.wait(30)

    threads = [threading.Thread(target=run, args=x) for x in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got["a"]) == len(got["b"]) == 3
    assert all(torch.equal(x, want_a) for x in got["a"])
    assert all(torch.equal(x, want_b) for x in got["b"])


def test_vector_made_for_another_model_warns(tiny_model):
    vec = _vec(tiny_model, model_id="org/other-model")
    with pytest.warns(OtherModelWarning, match=r"made for 'org/other-model'.*other_model='allow'"):
        with sl.steer(tiny_model, vec):
            pass


def test_other_model_allow_and_error(tiny_model):
    vec = _vec(tiny_model, model_id="org/other-model")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with sl.steer(tiny_model, vec, other_model="allow"):
            pass
    with pytest.raises(OtherModelError, match="--force-other-model"):
        with sl.steer(tiny_model, vec, other_model="error"):
            pass


def test_same_or_unknown_model_does_not_warn(tiny_model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for model_id in ("unknown", tiny_model.model_id):
            with sl.steer(tiny_model, _vec(tiny_model, model_id=model_id)):
                pass
