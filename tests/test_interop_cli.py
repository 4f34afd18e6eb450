"""``steerlab vector export --format gguf|lm-eval`` (no model needed)."""

import pytest
import torch
from typer.testing import CliRunner

import steerlab as sl
from steerlab.cli.vector import vector_app
from steerlab.models.sites import HookSite

runner = CliRunner(env={"COLUMNS": "200"})


def _saved(tmp_path, layer=3):
    vec = sl.SteeringVector.from_tensor(torch.arange(8.0), layer, method="caa")
    return vec, vec.save(tmp_path / "v.safetensors")


def test_export_gguf_round_trips(tmp_path):
    vec, path = _saved(tmp_path)
    res = runner.invoke(vector_app, ["export", str(path), "--format", "gguf"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "v.gguf"
    assert "--control-vector-scaled" in res.output and out.is_file()
    assert sl.load_vector(out).equal(vec)


def test_export_lm_eval_writes_the_steered_format(tmp_path):
    vec, path = _saved(tmp_path)
    out = tmp_path / "steer.pt"
    res = runner.invoke(
        vector_app,
        ["export", str(path), "--format", "lm-eval", "--multiplier", "2.5", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    cfg = torch.load(out, weights_only=True)
    assert list(cfg) == ["layers.3"]
    entry = cfg["layers.3"]
    assert entry["action"] == "add" and entry["steering_coefficient"] == 2.5
    assert torch.equal(entry["steering_vector"], vec.direction())
    assert entry["steerlab_site"] == "3.resid_post"


def test_export_errors_are_one_line(tmp_path):
    vec = sl.SteeringVector({HookSite(0): torch.ones(8)})
    path = vec.save(tmp_path / "v0.safetensors")
    res = runner.invoke(vector_app, ["export", str(path), "--format", "gguf"])
    assert res.exit_code == 1 and "llama.cpp rejects" in res.output
    res = runner.invoke(vector_app, ["export", str(path), "--format", "onnx"])
    assert res.exit_code != 0 and "gguf" in res.output


def test_site_to_lm_eval_module_mapping():
    from steerlab.vectors.lm_eval_export import lm_eval_hookpoint

    assert lm_eval_hookpoint(HookSite(14)) == "layers.14"
    assert lm_eval_hookpoint(HookSite(14, "resid_pre")) == "layers.13"
    assert lm_eval_hookpoint(HookSite(2, "attn_out")) == "layers.2.self_attn"
    assert lm_eval_hookpoint(HookSite(2, "mlp_out")) == "layers.2.mlp"
    assert lm_eval_hookpoint(HookSite(2), {"resid_post": "h.{layer}"}) == "h.2"
    with pytest.raises(sl.SteerlabError, match="has no module in lm-eval's steered model"):
        lm_eval_hookpoint(HookSite(2, "resid_mid"))
