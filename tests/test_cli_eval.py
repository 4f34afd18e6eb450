"""``steerlab eval open|mmlu|truthfulqa|jailbreak`` through typer's CliRunner on the tiny
model: the commands are registered and write their results."""

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from steerlab.vectors.vector import SteeringVector


def big_vector(model, layer=1, scale=30.0, seed=0):
    t = torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed))
    return SteeringVector.from_tensor(t / t.norm() * scale, layer, behavior="power-seeking")


@pytest.fixture
def cli(tiny_model, monkeypatch):
    from steerlab.cli import _common, app

    monkeypatch.setattr(_common, "load_model", lambda model, device: tiny_model)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), catch_exceptions=False)


def test_cli_registers_and_saves_results(cli, tiny_model, tmp_path):
    assert "serve" in cli("--help").output
    for cmd in ("open", "mmlu", "truthfulqa", "jailbreak"):
        assert cli("eval", cmd, "--help").exit_code == 0
    vec_path = big_vector(tiny_model).save(tmp_path / "v.safetensors")
    out = tmp_path / "jb.csv"
    r = cli(
        "eval",
        "jailbreak",
        "-v",
        str(vec_path),
        "--n",
        "2",
        "--max-new-tokens",
        "3",
        "--multipliers=-1,1",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    summary = pd.read_csv(out)
    assert set(summary["direction"]) == {"defence", "attack"}
    rows = [json.loads(x) for x in out.with_name("jb.items.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {"completion", "success"} <= set(rows[0])
    out = tmp_path / "open.jsonl"
    r = cli(
        "eval",
        "open",
        "--n",
        "2",
        "--max-new-tokens",
        "3",
        "--multipliers",
        "0",
        "--judge",
        "local",
        "--self-judge",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 2
    assert "judge_score" in (tmp_path / "open.summary.csv").read_text()
