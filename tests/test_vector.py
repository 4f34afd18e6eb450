"""SteeringVector as a frozen value: validation, arithmetic (with hypothesis), dtype moves."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steerlab.errors import ConfigError, DModelMismatchError, EmptyInputError, NonFiniteError
from steerlab.models.sites import HookSite
from steerlab.vectors.vector import Provenance, SteeringVector, _check_direction


def vec(values, layer: int = 3, behavior: str = "toy", **prov) -> SteeringVector:
    t = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=torch.float64)
    return SteeringVector.from_tensor(t, layer, behavior=behavior, **prov)


def close(a: SteeringVector, b: SteeringVector, atol: float = 1e-9) -> bool:
    return set(a.directions) == set(b.directions) and all(
        torch.allclose(t, b.directions[s], rtol=1e-9, atol=atol) for s, t in a.directions.items()
    )


# --- construction / immutability ----------------------------------------------------------


def test_from_tensor_fills_provenance_and_facts():
    v = vec([1.0, 2.0, 2.0], layer=5, method="caa", model_id="m")
    assert v.sites == (HookSite(5),) and v.layers == (5,)
    assert v.d_model == 3 and v.provenance.d_model == 3
    assert v.method == "caa" and v.behavior == "toy"
    assert v.norms() == {HookSite(5): pytest.approx(3.0)}
    assert torch.equal(v.direction(), torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64))
    assert torch.equal(v.direction(5), v.direction(HookSite(5)))


def test_vector_copies_its_input_and_is_read_only():
    t = torch.tensor([1.0, 2.0])
    v = vec(t)
    t[0] = 100.0  # mutating the source must not change the vector
    assert v.direction()[0] == 1.0
    with pytest.raises(TypeError):
        v.directions[HookSite(0)] = torch.zeros(2)  # type: ignore[index]
    with pytest.raises(AttributeError):
        v.provenance = Provenance()  # type: ignore[misc]
    with pytest.raises(TypeError):
        v.provenance.hyperparameters["lr"] = 1.0  # type: ignore[index]


def test_sites_are_sorted_and_multi_site_direction_needs_a_site():
    v = SteeringVector({HookSite(7): torch.ones(4), HookSite(2): torch.zeros(4)})
    assert v.sites == (HookSite(2), HookSite(7))
    with pytest.raises(ConfigError, match="has 2 sites .*pass site="):
        v.direction()
    with pytest.raises(ConfigError, match="No direction at 5.resid_post"):
        v.direction(5)


@pytest.mark.parametrize(
    ("directions", "error", "pattern"),
    [
        ({}, EmptyInputError, "at least one"),
        ({HookSite(0): torch.ones(3), HookSite(1): torch.ones(4)}, DModelMismatchError, "size 4"),
        ({HookSite(0): torch.tensor([1.0, float("nan")])}, NonFiniteError, "1 NaN/inf"),
        ({HookSite(0): torch.tensor([float("inf"), -float("inf")])}, NonFiniteError, "2 NaN/inf"),
    ],
)
def test_invalid_directions(directions, error, pattern):
    with pytest.raises(error, match=pattern):
        SteeringVector(directions)


# Wrong shapes/dtypes are refused by __post_init__ (ConfigError) or, under pytest's
# jaxtyping/beartype hook, by the signature check first (a TypeError subclass).
@pytest.mark.parametrize(
    ("tensor", "pattern"),
    [
        (torch.ones(2, 3), r"must be 1-D \[d_model\], got shape \(2, 3\)"),
        (torch.arange(3), "must be floating point, got torch.int64"),
    ],
)
def test_wrong_shape_or_dtype(tensor, pattern):
    with pytest.raises((ConfigError, TypeError)):
        SteeringVector({HookSite(0): tensor})
    with pytest.raises(ConfigError, match=pattern):
        _check_direction(HookSite(0), tensor, None)


def test_provenance_d_model_must_match():
    with pytest.raises(DModelMismatchError, match="d_model=8 but the directions have size 4"):
        SteeringVector({HookSite(0): torch.ones(4)}, Provenance(d_model=8))


# --- arithmetic ---------------------------------------------------------------------------


def test_add_sub_neg_scale_values():
    a, b = vec([1.0, 2.0, 3.0]), vec([0.5, -1.0, 4.0])
    assert torch.equal((a + b).direction(), torch.tensor([1.5, 1.0, 7.0], dtype=torch.float64))
    assert torch.equal((a - b).direction(), torch.tensor([0.5, 3.0, -1.0], dtype=torch.float64))
    assert torch.equal((-a).direction(), -a.direction())
    assert torch.equal((2.0 * a).direction(), (a * 2.0).direction())
    assert torch.equal((a * 2.0).direction(), torch.tensor([2.0, 4.0, 6.0], dtype=torch.float64))
    assert torch.equal((a / 2.0).direction(), a.direction() * 0.5)


def test_arithmetic_returns_new_objects_and_leaves_operands_alone():
    a, b = vec([1.0, 2.0]), vec([3.0, 4.0])
    before_a, before_b = a.direction().clone(), b.direction().clone()
    results = [a + b, a - b, a * 3.0, -a, a.normalized(), a.to(dtype=torch.float32)]
    for r in results:
        assert r is not a and r is not b
    assert torch.equal(a.direction(), before_a) and torch.equal(b.direction(), before_b)


def test_add_keeps_sites_present_in_one_operand():
    a = SteeringVector({HookSite(1): torch.ones(2), HookSite(2): torch.ones(2)})
    b = SteeringVector({HookSite(2): torch.ones(2), HookSite(3, "mlp_out"): torch.ones(2)})
    s = a - b
    assert s.sites == (HookSite(1), HookSite(2), HookSite(3, "mlp_out"))
    assert torch.equal(s.direction(1), torch.ones(2))
    assert torch.equal(s.direction(2), torch.zeros(2))
    assert torch.equal(s.direction(HookSite(3, "mlp_out")), -torch.ones(2))


def test_combination_and_scale_provenance():
    a, b = vec([1.0, 0.0], behavior="power"), vec([0.0, 1.0], behavior="wealth")
    s = a - b
    assert s.method == "combination" and s.behavior == "power-wealth"
    assert s.provenance.hyperparameters["operation"] == "-"
    assert s.provenance.hyperparameters["left"]["behavior"] == "power"
    assert (a + a).behavior == "power"
    scaled = (a * 2.0) * 3.0
    assert scaled.provenance.hyperparameters["scale"] == 6.0
    assert "scale" not in a.provenance.hyperparameters


def test_add_d_model_mismatch():
    with pytest.raises(DModelMismatchError, match="d_model 3 and 2"):
        vec([1.0, 2.0, 3.0]) + vec([1.0, 2.0])


def test_normalized_norms_are_one_per_site():
    v = SteeringVector(
        {HookSite(0): torch.tensor([3.0, 4.0]), HookSite(1): torch.tensor([0.0, -0.5])}
    )
    n = v.normalized()
    assert n.norms() == {HookSite(0): pytest.approx(1.0), HookSite(1): pytest.approx(1.0)}
    assert torch.allclose(n.direction(0), torch.tensor([0.6, 0.8]))
    assert n.provenance.hyperparameters["normalized"] is True
    with pytest.raises(ConfigError, match="zero direction at 0.resid_post"):
        vec([0.0, 0.0], layer=0).normalized()


def test_cosine_known_values():
    a = vec([1.0, 0.0])
    assert a.cosine(a) == pytest.approx(1.0)
    assert a.cosine(-a) == pytest.approx(-1.0)
    assert a.cosine(vec([0.0, 2.0])) == pytest.approx(0.0)
    assert a.cosine(vec([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(ConfigError, match="No shared hook sites"):
        a.cosine(vec([1.0, 0.0], layer=4))


def test_cosine_by_site_only_shared_sites():
    a = SteeringVector({HookSite(0): torch.tensor([1.0, 0.0]), HookSite(1): torch.ones(2)})
    b = SteeringVector({HookSite(0): torch.tensor([-1.0, 0.0]), HookSite(2): torch.ones(2)})
    assert a.cosine_by_site(b) == {HookSite(0): pytest.approx(-1.0)}


def test_at_site_and_moved_to():
    v = SteeringVector({HookSite(0): torch.ones(2), HookSite(1): torch.zeros(2)})
    one = v.at_site(0)
    assert one.sites == (HookSite(0),) and torch.equal(one.direction(), torch.ones(2))
    moved = one.moved_to(HookSite(5, "resid_pre"))
    assert moved.sites == (HookSite(5, "resid_pre"),)
    assert torch.equal(moved.direction(), torch.ones(2))
    assert moved.provenance.hyperparameters["moved_from"] == "0.resid_post"


# --- dtype / equality -----------------------------------------------------------------------


def test_to_dtype_returns_new_object():
    v = vec([1.0, 2.5, -3.0])
    h = v.to(dtype=torch.float16)
    assert h is not v
    assert h.direction().dtype == torch.float16 and v.direction().dtype == torch.float64
    assert torch.equal(h.direction().double(), v.direction())  # exactly representable values
    assert h.provenance == v.provenance
    same = v.to("cpu")
    assert same is not v and same.equal(v)


def test_equal_is_exact():
    a = vec([1.0, 2.0])
    assert a.equal(vec([1.0, 2.0]))
    assert not a.equal(vec([1.0, 2.0 + 1e-12]))
    assert not a.equal(vec([1.0, 2.0], layer=4))


# --- properties ---------------------------------------------------------------------------

finite = st.floats(min_value=-100.0, max_value=100.0, allow_nan=False, allow_infinity=False)
scalars = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, allow_infinity=False)


@st.composite
def vector_pairs(draw, nonzero: bool = False):
    d = draw(st.integers(min_value=1, max_value=8))
    elems = st.lists(finite, min_size=d, max_size=d)
    xs, ys = draw(elems), draw(elems)
    if nonzero:
        xs = [x if abs(x) > 1e-3 else 1.0 for x in xs]
        ys = [y if abs(y) > 1e-3 else -1.0 for y in ys]
    return vec(xs), vec(ys)


@settings(max_examples=60, deadline=None)
@given(vector_pairs())
def test_prop_add_then_sub_is_identity(pair):
    a, b = pair
    assert close((a + b) - b, a, atol=1e-9)
    assert (a + b).equal(b + a)
    neg = -a
    assert (-neg).equal(a)
    assert close(a - b, a + (-b))


@settings(max_examples=60, deadline=None)
@given(vector_pairs(), scalars)
def test_prop_scaling_distributes(pair, k):
    a, b = pair
    assert close(k * (a + b), k * a + k * b, atol=1e-9)
    assert close((2.0 * a) - a, a)


@settings(max_examples=60, deadline=None)
@given(vector_pairs(nonzero=True), scalars.filter(lambda k: abs(k) > 1e-3))
def test_prop_normalized_and_cosine(pair, k):
    a, b = pair
    assert a.normalized().norms()[HookSite(3)] == pytest.approx(1.0, abs=1e-9)
    assert a.cosine(a) == pytest.approx(1.0, abs=1e-9)
    assert a.cosine(-a) == pytest.approx(-1.0, abs=1e-9)
    c = a.cosine(b)
    assert -1.0 - 1e-9 <= c <= 1.0 + 1e-9
    assert c == pytest.approx(b.cosine(a), abs=1e-12)
    assert (k * a).cosine(b) == pytest.approx(math.copysign(1.0, k) * c, abs=1e-9)
