"""The CLI refuses a vector made for another model unless --force-other-model (issue 18
item 9); the library only warns."""

import pytest
import torch
from typer.testing import CliRunner

import steerlab
from steerlab.cli import app
from steerlab.vectors.vector import SteeringVector

runner = CliRunner()


@pytest.fixture
def other_model_vector(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(steerlab, "load_model", lambda *a, **k: tiny_model)
    vec = SteeringVector.from_tensor(
        torch.ones(tiny_model.d_model), 1, model_id="org/other-model", behavior="power-seeking"
    )
    return vec.save(tmp_path / "other.safetensors")


def test_eval_refuses_a_vector_for_another_model_in_one_line(other_model_vector):
    args = ["eval", "likelihood", "-v", str(other_model_vector), "--n-test", "2",
            "--multipliers", "0,1", "--no-progress"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "org/other-model" in lines[0] and "--force-other-model" in lines[0]
    forced = runner.invoke(app, [*args, "--force-other-model"])
    assert forced.exit_code == 0, forced.output
