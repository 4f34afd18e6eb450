"""Saving/loading SteeringVectors (safetensors) and importing the released BiPO .pt files."""

import os
import re

import pytest
import torch

import steerlab as sl
from steerlab.errors import DModelMismatchError, OutputPathError, VectorFileError
from steerlab.models.sites import HookSite
from steerlab.vectors.io import load_vector, save_vector
from steerlab.vectors.vector import Provenance, SteeringVector


def make_vector(d: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        {
            HookSite(14): torch.randn(d, generator=g).to(dtype),
            HookSite(3, "mlp_out"): torch.randn(d, generator=g).to(dtype),
            HookSite(-1, "resid_pre"): torch.randn(d, generator=g).to(dtype),
        },
        Provenance(
            model_id="embedded:test",
            method="bipo",
            behavior="power-seeking",
            hyperparameters={"lr": 5e-4, "beta": 0.1, "layers": [3, 14], "opt": {"name": "adamw"}},
            dataset_hash="abc123",
        ),
    )


# --- safetensors round trip ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_round_trip_is_exact(tmp_path, dtype):
    v = make_vector(dtype=dtype)
    path = v.save(tmp_path / "v.safetensors")
    w = SteeringVector.load(path)
    assert w.sites == v.sites
    for site, t in v.directions.items():
        assert w.directions[site].dtype == dtype
        assert torch.equal(w.directions[site], t)
    assert w.provenance == v.provenance
    assert w.provenance.to_dict() == v.provenance.to_dict()
    assert w.provenance.hyperparameters["opt"] == {"name": "adamw"}


def test_round_trip_of_a_combination_keeps_nested_provenance(tmp_path):
    v = make_vector(seed=1) - 2.0 * make_vector(seed=2)
    w = sl.load_vector(v.save(tmp_path / "combo.safetensors"))
    assert w.equal(v)
    assert w.provenance.to_dict() == v.provenance.to_dict()
    assert w.provenance.hyperparameters["right"]["hyperparameters"]["scale"] == 2.0


@pytest.mark.parametrize(
    ("name", "expected"),
    [("v", "v.safetensors"), ("v.pt", "v.pt.safetensors"), ("v.safetensors", "v.safetensors")],
)
def test_save_adds_the_suffix_and_returns_the_path(tmp_path, name, expected):
    path = save_vector(make_vector(), tmp_path / name)
    assert path == tmp_path / expected and path.is_file()
    assert load_vector(path).equal(make_vector())


def test_save_creates_parent_directories(tmp_path):
    path = make_vector().save(tmp_path / "a" / "b" / "v.safetensors")
    assert path.is_file()


def test_load_to_device(tmp_path):
    w = SteeringVector.load(make_vector().save(tmp_path / "v"), device="cpu")
    assert all(t.device.type == "cpu" for t in w.directions.values())


# --- atomic writes ----------------------------------------------------------------------


def test_write_leaves_no_temp_file_and_replaces_whole(tmp_path):
    big = make_vector(d=4096, seed=3)
    small = SteeringVector.from_tensor(torch.ones(8), 2, behavior="small")
    path = big.save(tmp_path / "v.safetensors")
    big_size = path.stat().st_size
    small.save(path)
    assert os.listdir(tmp_path) == ["v.safetensors"]
    assert path.stat().st_size < big_size
    w = load_vector(path)
    assert w.equal(small) and w.behavior == "small"


def test_failed_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    v = make_vector(seed=4)
    path = v.save(tmp_path / "v.safetensors")
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr("steerlab.utils.files.os.replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        make_vector(seed=5).save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["v.safetensors"]
    assert path.read_bytes() == before
    assert load_vector(path).equal(v)


# --- released BiPO vectors ----------------------------------------------------------------

# Norms stated in BIPO.md (L2), with tolerant bounds.
BIPO_NORMS = {
    "power-seeking_llama-2": (8.2, 9.5),
    "wealth-seeking_llama-2": (8.2, 9.5),
    "hallucination_llama-2": (6.7, 7.7),
    "jailbreak_llama-2": (6.1, 7.1),
    "power-seeking_mistral": (1.0, 1.8),
    "wealth-seeking_mistral": (1.0, 1.8),
}


def bipo_files(root):
    return sorted((root / "bipo" / "pretrained_vector").glob("*/*.pt"))


def test_all_released_bipo_vectors_are_known(data_root):
    files = bipo_files(data_root)
    assert {f.parent.name for f in files} == set(BIPO_NORMS)


@pytest.mark.parametrize("folder", sorted(BIPO_NORMS))
def test_from_bipo_pt(data_root, folder):
    (path,) = (data_root / "bipo" / "pretrained_vector" / folder).glob("*.pt")
    layer = int(re.search(r"layer(\d+)", path.name).group(1))
    v = SteeringVector.from_bipo_pt(path, layer=layer, behavior=folder.split("_")[0])
    t = v.direction()
    assert v.sites == (HookSite(layer),)
    assert t.shape == (4096,) and t.dtype == torch.float32
    assert bool(torch.isfinite(t).all())
    norm = v.norms()[HookSite(layer)]
    print(f"{folder}: |v| = {norm:.3f}")
    lo, hi = BIPO_NORMS[folder]
    assert lo <= norm <= hi
    assert v.method == "bipo" and v.provenance.d_model == 4096
    assert v.provenance.hyperparameters["source_file"] == str(path)
    # the import matches a plain weights_only load exactly
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(t, raw.float().reshape(-1))


def test_bipo_vector_round_trips_through_safetensors(data_root, tmp_path):
    path = bipo_files(data_root)[0]
    v = SteeringVector.from_bipo_pt(path)
    assert load_vector(v.save(tmp_path / "bipo")).equal(v)


def test_bipo_vector_refused_for_embedded_model(data_root, embedded_model):
    path = bipo_files(data_root)[0]
    with pytest.raises(DModelMismatchError, match=r"4096.*576"):
        SteeringVector.from_bipo_pt(path, model=embedded_model)
    v = SteeringVector.from_bipo_pt(path)
    with pytest.raises(DModelMismatchError, match=r"d_model=4096.*d_model=576"):
        with sl.steer(embedded_model, v):
            pass
    assert not any(hp.fwd_hooks for hp in embedded_model.bridge.hook_dict.values())


def test_bipo_pt_variants(tmp_path, tiny_model):
    """A [1, d] tensor or a one-entry dict are accepted; model= checks size and layer."""
    t = torch.randn(64)
    torch.save(t[None, :], tmp_path / "row.pt")
    torch.save({"vec": t}, tmp_path / "dict.pt")
    for name in ("row.pt", "dict.pt"):
        v = SteeringVector.from_bipo_pt(tmp_path / name, layer=1, model=tiny_model)
        assert torch.equal(v.direction(), t)
    with pytest.raises(sl.SteerlabError, match="out of range for a model with 2 layers"):
        SteeringVector.from_bipo_pt(tmp_path / "row.pt", layer=15, model=tiny_model)


def test_save_onto_a_directory_names_the_path_not_a_temp_file(tmp_path):
    target = tmp_path / "v.safetensors"
    target.mkdir()
    with pytest.raises(OutputPathError, match=r"v\.safetensors'?: it is a directory") as err:
        make_vector().save(target)
    assert ".v.safetensors." not in str(err.value)  # no temporary-file name
    parent_is_file = tmp_path / "file"
    parent_is_file.write_text("x")
    with pytest.raises(OutputPathError, match="Pass a path in a writable directory"):
        make_vector().save(parent_is_file / "v.safetensors")


def test_unknown_format_version_is_refused(tmp_path):
    import json

    from safetensors.torch import save

    v = make_vector()
    meta = {"format": 99, "provenance": v.provenance.to_dict()}
    blob = save(
        {s.key: t.contiguous() for s, t in v.directions.items()},
        metadata={"steerlab": json.dumps(meta, default=str)},
    )
    path = tmp_path / "future.safetensors"
    path.write_bytes(blob)
    with pytest.raises(VectorFileError, match="format 99.*reads format 1.*Upgrade steerlab"):
        load_vector(path)
