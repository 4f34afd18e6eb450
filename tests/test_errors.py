"""Every user-facing error: the right SteerlabError subclass with a message that helps."""

import os

import pytest
import torch

import steerlab as sl
from steerlab.errors import (
    ConfigError,
    DModelMismatchError,
    EmptyInputError,
    HookSiteError,
    ModelLoadError,
    NonFiniteError,
    SteerlabError,
    UnknownModelError,
    VectorFileError,
    did_you_mean,
)
from steerlab.models.positions import check_positions
from steerlab.models.sites import HookSite
from steerlab.steering import GenerationConfig
from steerlab.vectors.io import load_bipo_pt, load_vector
from steerlab.vectors.vector import SteeringVector


def vec64(layer: int = 0, d: int = 64) -> SteeringVector:
    return SteeringVector.from_tensor(torch.ones(d), layer)


class Opaque:
    """An arbitrary pickled object: weights_only loading must refuse it."""

    def __init__(self) -> None:
        self.payload = "not a tensor"


# --- model names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["not-a-model", "a/b/c", "./missing-dir"])
def test_unknown_model_name(name):
    with pytest.raises(UnknownModelError, match=r"Unknown model .*not 'embedded'.*Fix:") as info:
        sl.load_model(name, device="cpu")
    assert isinstance(info.value, ModelLoadError) and isinstance(info.value, KeyError)
    assert str(info.value).startswith("Unknown model")  # not KeyError's quoted repr


def test_hf_id_offline_and_not_cached(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"does-not-exist.*HF_HUB_OFFLINE.*Fix:"):
        sl.load_model("steerlab-test/does-not-exist", device="cpu")


def test_directory_without_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="Could not load a model from the directory"):
        sl.load_model(str(tmp_path), device="cpu")


def test_device_and_device_map_together():
    with pytest.raises(ConfigError, match="either device= or device_map="):
        sl.load_model("embedded", device="cpu", device_map="auto")


def test_unknown_dtype():
    with pytest.raises(ConfigError, match=r"Unknown dtype 'float8'; use one of .*bf16"):
        sl.load_model("embedded", device="cpu", dtype="float8")


# --- hook sites -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "suggestion"),
    [("resid_pots", "resid_post"), ("mlp", "mlp_out"), ("attnout", "attn_out")],
)
def test_unknown_hook_kind_did_you_mean(kind, suggestion):
    with pytest.raises(
        HookSiteError, match=f"Unknown hook kind '{kind}'. Did you mean '{suggestion}'"
    ):
        HookSite(3, kind)


def test_unknown_hook_kind_lists_valid_kinds(tiny_model):
    with pytest.raises(HookSiteError, match="Valid kinds: resid_pre, resid_mid, resid_post"):
        tiny_model.site(0, "zzz")
    assert did_you_mean("zzz", ["resid_post"]) == ""


def test_hook_site_layer_must_be_int():
    with pytest.raises((HookSiteError, TypeError), match="layer"):
        HookSite("3")  # type: ignore[arg-type]


def test_layer_out_of_range(tiny_model):
    with pytest.raises(
        HookSiteError, match=r"Layer 7 is out of range for a model with 2 layers; use 0\.\.1"
    ):
        tiny_model.site(7)
    with pytest.raises(HookSiteError, match="Layer -3 is out of range"):
        with sl.steer(tiny_model, vec64(layer=-3)):
            pass
    with pytest.raises(HookSiteError, match="Layer 5 is out of range"):
        sl.generate(tiny_model, "Hi", max_new_tokens=1, steering=vec64(layer=5))


# --- d_model ----------------------------------------------------------------------------------


def test_d_model_mismatch_on_steer(tiny_model):
    with pytest.raises(
        DModelMismatchError, match=r"d_model=32 .* has d_model=64.*train or load one"
    ):
        with sl.steer(tiny_model, vec64(d=32)):
            pass


def test_d_model_mismatch_on_add():
    with pytest.raises(DModelMismatchError, match="Cannot combine vectors with d_model 64 and 32"):
        vec64() + vec64(d=32)


def test_d_model_mismatch_on_bipo_import(tmp_path, tiny_model):
    torch.save(torch.randn(4096), tmp_path / "v.pt")
    with pytest.raises(DModelMismatchError, match=r"4096-d BiPO vector .* d_model=64"):
        SteeringVector.from_bipo_pt(tmp_path / "v.pt", layer=1, model=tiny_model)


# --- vector files -------------------------------------------------------------------------------


def test_missing_vector_file(tmp_path):
    with pytest.raises(VectorFileError, match="does not exist"):
        load_vector(tmp_path / "nope.safetensors")
    with pytest.raises(VectorFileError, match="does not exist"):
        load_bipo_pt(tmp_path / "nope.pt")


def test_random_bytes_file(tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(VectorFileError, match=r"not a readable safetensors file.*Fix: re-save"):
        load_vector(path)
    with pytest.raises(VectorFileError, match="could not be loaded safely"):
        load_bipo_pt(path)


def test_truncated_file(tmp_path):
    path = SteeringVector.from_tensor(torch.randn(512), 3).save(tmp_path / "v.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VectorFileError, match="not a readable safetensors file"):
        load_vector(path)
    pt = tmp_path / "v.pt"
    torch.save(torch.randn(512), pt)
    pt.write_bytes(pt.read_bytes()[:200])
    with pytest.raises(VectorFileError, match="could not be loaded safely"):
        load_bipo_pt(pt)


def test_safetensors_without_steerlab_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"14.resid_post": torch.randn(8)}, str(path))
    with pytest.raises(VectorFileError, match="without steerlab metadata.*SteeringVector.save"):
        load_vector(path)
    save_file({"14.resid_post": torch.randn(8)}, str(path), metadata={"steerlab": "{oops"})
    with pytest.raises(VectorFileError, match="corrupt steerlab metadata"):
        load_vector(path)


def test_safetensors_with_a_bad_tensor_name(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"weights": torch.randn(8)}, str(path), metadata={"steerlab": '{"provenance": {}}'})
    with pytest.raises(VectorFileError, match="tensor name 'weights' is not a hook site"):
        load_vector(path)


@pytest.mark.parametrize(
    ("obj", "held"),
    [({"a": "b", "c": "d"}, "dict"), (["x", "y"], "list"), ({"only": "text"}, "str"), (3, "int")],
)
def test_non_tensor_pt(tmp_path, obj, held):
    path = tmp_path / "thing.pt"
    torch.save(obj, path)
    with pytest.raises(VectorFileError, match=f"holds a {held}, not a tensor"):
        SteeringVector.from_bipo_pt(path)


def test_pickled_object_is_refused_safely(tmp_path):
    path = tmp_path / "object.pt"
    torch.save(Opaque(), path)
    with pytest.raises(VectorFileError, match=r"(?s)weights_only=True.*Only plain tensor files"):
        SteeringVector.from_bipo_pt(path)


def test_pt_with_a_matrix(tmp_path):
    path = tmp_path / "matrix.pt"
    torch.save(torch.randn(3, 8), path)
    with pytest.raises(VectorFileError, match=r"shape \(3, 8\); expected \[d_model\]"):
        SteeringVector.from_bipo_pt(path)


# --- non-finite values ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_vector(bad):
    t = torch.ones(8)
    t[2] = bad
    with pytest.raises(NonFiniteError, match=r"1 NaN/inf entries.*must be finite"):
        SteeringVector.from_tensor(t, 0)


def test_non_finite_bipo_file(tmp_path):
    t = torch.ones(16)
    t[0] = float("nan")
    torch.save(t, tmp_path / "nan.pt")
    with pytest.raises(NonFiniteError, match="NaN/inf"):
        SteeringVector.from_bipo_pt(tmp_path / "nan.pt")


# --- empty inputs --------------------------------------------------------------------------------


def test_empty_prompt_list(tiny_model):
    with pytest.raises(EmptyInputError, match="empty prompt list"):
        sl.generate(tiny_model, [], max_new_tokens=1)


def test_prompt_with_no_tokens(tiny_model):
    with pytest.raises(EmptyInputError, match="encodes to zero tokens"):
        sl.generate(tiny_model, "", max_new_tokens=1, chat=False)


def test_steer_with_no_vectors(tiny_model):
    with pytest.raises(EmptyInputError, match="at least one vector"):
        with sl.steer(tiny_model, []):
            pass


def test_vector_with_no_sites():
    with pytest.raises(EmptyInputError, match="at least one"):
        SteeringVector({})


# --- multipliers and positions --------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_bad_multiplier(tiny_model, bad):
    with pytest.raises(ConfigError, match=rf"Multiplier {bad} must be a finite number"):
        with sl.steer(tiny_model, vec64(), multiplier=bad):
            pass
    with pytest.raises(ConfigError, match="must be a finite number"):
        sl.generate(tiny_model, "Hi", max_new_tokens=1, steering=vec64(), multiplier=bad)


def test_wrong_number_of_multipliers(tiny_model):
    with pytest.raises(ConfigError, match="Got 3 multipliers for 2 vectors"):
        with sl.steer(tiny_model, [vec64(0), vec64(1)], multiplier=[1.0, 2.0, 3.0]):
            pass


@pytest.mark.parametrize("bad", ["middle", "ALL", ""])
def test_bad_position_name(tiny_model, bad):
    with pytest.raises(
        ConfigError, match=rf"Unknown positions '{bad}'; use 'all', 'prompt', 'generated'"
    ):
        check_positions(bad)
    # under pytest's beartype hook the Literal annotation may refuse it first (a TypeError)
    with pytest.raises((ConfigError, TypeError)):
        with sl.steer(tiny_model, vec64(), positions=bad):
            pass


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        (slice(-1, None), "non-negative ints"),
        (slice(0, -2), "non-negative ints"),
        (slice(0, 5, 0), "positive step"),
        (slice(0, 5, -1), "positive step"),
    ],
)
def test_bad_position_slice(tiny_model, bad, pattern):
    with pytest.raises(ConfigError, match=pattern):
        with sl.steer(tiny_model, vec64(), positions=bad):
            pass


# --- generation settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens=0; it must be >= 1"),
        ({"batch_size": 0}, "batch_size=0; it must be >= 1"),
        ({"greedy": False, "temperature": 0.0}, "temperature=0.0; sampling needs a value > 0"),
        ({"top_p": 0.0}, r"top_p=0.0; it must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p=1.5; it must be in \(0, 1\]"),
    ],
)
def test_bad_generation_config(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        GenerationConfig(**kwargs)


def test_all_errors_share_one_base():
    for cls in (
        ConfigError,
        DModelMismatchError,
        EmptyInputError,
        HookSiteError,
        ModelLoadError,
        NonFiniteError,
        UnknownModelError,
        VectorFileError,
    ):
        assert issubclass(cls, SteerlabError)
    assert sl.SteerlabError is SteerlabError
