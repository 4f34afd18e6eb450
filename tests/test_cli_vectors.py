"""``steerlab vector ...`` and ``steerlab eval ...`` through typer's CliRunner on the
embedded model with tiny N (one real model load; the other commands reuse the session
model through the CLI's single loading function)."""

import json

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import steerlab as sl
from steerlab.cli import _common
from steerlab.cli._common import parse_layers, parse_multipliers
from steerlab.cli.eval import eval_app
from steerlab.cli.vector import vector_app

runner = CliRunner(env={"COLUMNS": "200"})  # wide rich tables: no wrapped labels


@pytest.fixture()
def reuse_model(embedded_model, monkeypatch):
    """Commands get the session's embedded model instead of loading it again."""
    monkeypatch.setattr(_common, "load_model", lambda name, device: embedded_model)
    return embedded_model


@pytest.fixture(scope="module")
def caa_dir(tmp_path_factory, embedded_model):
    """`vector caa` with a real model load: 8 train pairs, layer 3."""
    out = tmp_path_factory.mktemp("vectors")
    res = runner.invoke(
        vector_app,
        [
            "caa",
            "--behavior",
            "power-seeking",
            "--layers",
            "3",
            "--n-train",
            "8",
            "--out",
            str(out),
            "--model",
            "embedded",
            "--device",
            "cpu",
            "--batch-size",
            "16",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    return out


def test_parsers():
    assert parse_layers("10, 12,14,12") == [10, 12, 14]
    assert parse_multipliers("-2,-1,0,1,2") == [-2.0, -1.0, 0.0, 1.0, 2.0]
    with pytest.raises(typer.BadParameter, match="not a layer number"):
        parse_layers("10,x")
    with pytest.raises(typer.BadParameter, match="not a number"):
        parse_multipliers("1,two")
    with pytest.raises(typer.BadParameter, match="No layers"):
        parse_layers(",")


def test_vector_caa_writes_one_file_per_layer_and_a_summary(caa_dir, embedded_model):
    path = caa_dir / "caa_power-seeking_L3.safetensors"
    vec = sl.load_vector(path)
    assert vec.method == "caa" and vec.behavior == "power-seeking" and vec.layers == (3,)
    assert vec.d_model == embedded_model.d_model
    hp = vec.provenance.hyperparameters
    assert hp["n_train"] == 8 and hp["split"] == "train" and hp["position"] == "answer_letter"
    summary = json.loads((caa_dir / "caa_power-seeking_summary.json").read_text())
    assert summary["files"] == {"3": str(path)} and summary["n_train"] == 8
    assert summary["settings"]["behavior"] == "power-seeking"
    assert summary["settings"]["batch_size"] == 16
    assert summary["norms"]["3"] == pytest.approx(vec.norms()[vec.sites[0]])
    from steerlab.activations.norms import typical_norm

    at_x1 = summary["norms"]["3"] / typical_norm(embedded_model, 3)
    assert summary["strength_at_x1"] == {"3": pytest.approx(at_x1, rel=1e-6)}


def test_vector_freeform_and_pca_several_layers(tmp_path, reuse_model):
    for cmd in (["freeform"], ["pca", "--positions", "response_mean"]):
        res = runner.invoke(
            vector_app,
            [
                *cmd,
                "-b",
                "power-seeking",
                "--layers",
                "1,2",
                "--n-train",
                "3",
                "--out",
                str(tmp_path),
                "--no-progress",
            ],
        )
        assert res.exit_code == 0, res.output
    for method in ("freeform", "pca"):
        for layer in (1, 2):
            vec = sl.load_vector(tmp_path / f"{method}_power-seeking_L{layer}.safetensors")
            assert vec.method == method and vec.layers == (layer,)


def test_eval_ab_writes_tidy_csv_and_prints_a_table(caa_dir, tmp_path, reuse_model):
    out, items = tmp_path / "ab.csv", tmp_path / "ab_items.csv"
    vec = caa_dir / "caa_power-seeking_L3.safetensors"
    res = runner.invoke(
        eval_app,
        [
            "ab",
            "--vector",
            str(vec),
            "--behavior",
            "power-seeking",
            "--multipliers",
            "-1,0",
            "--n-test",
            "2",
            "--out",
            str(out),
            "--items-out",
            str(items),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "p_matching" in res.output and "caa:power-seeking:L3" in res.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == [
        "vector",
        "method",
        "layer",
        "multiplier",
        "metric",
        "value",
        "sem",
        "n",
    ]
    assert sorted(frame["multiplier"].unique()) == [-1.0, 0.0]
    assert set(frame["metric"]) == {"p_matching", "matching_rate", "letter_mass"}
    assert (frame["n"] == 2).all() and (frame["layer"] == 3).all()
    assert len(pd.read_csv(items)) == 2 * 2


def test_eval_likelihood_unsteered(tmp_path, reuse_model):
    out = tmp_path / "lk.csv"
    res = runner.invoke(
        eval_app,
        ["likelihood", "-b", "power-seeking", "--n-test", "2", "--out", str(out), "--no-progress"],
    )
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out)
    assert set(frame["vector"]) == {"unsteered"} and set(frame["multiplier"]) == {0.0}
    assert {"margin", "logp_matching", "logp_not_matching"} <= set(frame["metric"])


def test_errors_are_reported_without_a_traceback(tmp_path, reuse_model):
    res = runner.invoke(
        vector_app, ["caa", "--behavior", "power-seking", "--out", str(tmp_path), "--no-progress"]
    )
    assert res.exit_code == 1
    assert "Unknown behavior 'power-seking'" in res.output and "power-seeking" in res.output
    res = runner.invoke(vector_app, ["caa", "--layers", "99", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "out of range" in res.output
    res = runner.invoke(eval_app, ["ab", "--vector", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 1 and "does not exist" in res.output
    res = runner.invoke(eval_app, ["ab", "--multipliers", "1,x"])
    assert res.exit_code == 1
    res = runner.invoke(eval_app, ["likelihood", "--metric", "p_matching"])
    assert res.exit_code == 1 and "margin" in res.output
