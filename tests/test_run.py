"""``steerlab run``: RunConfig (defaults < file < flags, quick presets, validation) and the
quick job end to end through the CLI on the embedded model (slow). The CLI's flags and
``steerlab sweep``: tests/test_cli_run.py."""

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.errors import ConfigError
from steerlab.run import QUICK, RunConfig, read_config_file


def test_run_config_defaults_and_validation():
    cfg = RunConfig()
    assert (cfg.model, cfg.behavior, cfg.layer) == ("embedded", "power-seeking", 14)
    assert cfg.multipliers == (-2.0, -1.0, 0.0, 1.0, 2.0) and cfg.methods[-1] == "bipo"
    assert str(cfg.out_dir) == "runs/power-seeking-L14"
    parsed = RunConfig.build(overrides={"methods": "caa, pca", "multipliers": "-1,0,1"})
    assert parsed.methods == ("caa", "pca") and parsed.multipliers == (-1.0, 0.0, 1.0)
    with pytest.raises(ConfigError, match="n_train=1 must be >= 2"):
        RunConfig(n_train=1)
    with pytest.raises(ConfigError, match="Did you mean 'bipo'"):
        RunConfig(methods=("caa", "bpo"))
    with pytest.raises(ConfigError, match="multipliers="):
        RunConfig.build(overrides={"multipliers": "a,b"})
    assert RunConfig.build(overrides={"strengths": "0.4,0.1"}).strengths == (0.0, 0.1, 0.4)
    with pytest.raises(ConfigError, match="strengths="):
        RunConfig.build(overrides={"strengths": "0,-0.1"})  # nothing > 0
    with pytest.raises(ConfigError, match="strengths="):
        RunConfig.build(overrides={"strengths": "x"})
    assert RunConfig(n_neutral=0).n_neutral == 0  # 0 skips the matched comparison
    assert set(RunConfig.help()) == {f for f in RunConfig.__dataclass_fields__}
    assert all(RunConfig.help().values())


def test_run_config_precedence_file_flags_quick(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'layer = 10\nn_test = 5\nmultipliers = [-1, 0, 1]\nbehavior = "wealth-seeking"\n'
    )
    cfg = RunConfig.build(toml, {"layer": 12, "quick": True, "model": None})
    assert cfg.layer == 12  # the flag wins over the file
    assert cfg.n_test == 5 and cfg.behavior == "wealth-seeking"  # the file wins over quick
    assert cfg.n_train == QUICK["n_train"] and cfg.bipo_epochs == 1  # quick fills the rest
    assert cfg.model == "embedded"  # None = flag not given
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"run": {"layer": 3}}))
    assert read_config_file(js) == {"layer": 3}
    bad = tmp_path / "bad.toml"
    bad.write_text("layr = 3\n")
    with pytest.raises(ConfigError, match="Did you mean 'layer'"):
        RunConfig.build(bad)
    with pytest.raises(ConfigError, match=r"\.toml or \.json"):
        RunConfig.build(tmp_path / "x.yaml") if (tmp_path / "x.yaml").write_text("a: 1") else None


@pytest.mark.slow
def test_quick_run_end_to_end(embedded_model, tmp_path, monkeypatch):
    """`steerlab run --quick` through the CLI (the session's model is reused)."""
    import steerlab

    monkeypatch.setattr(steerlab, "load_model", lambda *a, **k: embedded_model)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    for name in ("report.html", "results.csv", "results.json", "effects.csv", "config.json",
                 "generations.csv", "judge.json", "logs/run.log", "bipo/train_log.jsonl"):  # fmt: skip
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "vectors").iterdir()) == [
        f"{m}-L14.safetensors" for m in ("bipo", "caa", "freeform", "pca")
    ]
    results = pd.read_csv(out / "results.csv")
    assert set(results["evaluation"]) == {"margin", "ab", "judge"}
    assert set(results["multiplier"]) == {-1.0, 0.0, 1.0}
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["quick"] is True and meta["timings"]["total"] > 0
    prov = meta["provenance"]
    assert prov["model"]["d_model"] == 576 and len(prov["data"]["train_hash"]) == 64
    assert 0.0 <= prov["judge"]["heldout_accuracy"] <= 1.0 and "torch" in prov["versions"]
    page = (out / "report.html").read_text()
    assert not re.search(r"<script[^>]*\ssrc=", page)
    assert "Open-ended answers" in page and "held-out accuracy" in page
    assert "Matched damage" in page and (out / "matched_kl.csv").is_file()
    # The saved vectors say which pairs they saw; the saved judge which pairs it was fitted
    # on: a later `eval open --judge classifier` can check them, and finds no overlap.
    from steerlab.evaluation.judges.judge_pairs import judge_overlaps
    from steerlab.vectors.vector import SteeringVector

    vecs = [SteeringVector.load(p) for p in sorted((out / "vectors").iterdir())]
    assert all(v.provenance.hyperparameters["train_hash"] == prov["data"]["train_hash"]
               for v in vecs)  # fmt: skip
    record = json.loads((out / "judge.json").read_text())["pairs"]
    assert judge_overlaps(record, vecs, [v.method for v in vecs]) == ([], [])
    gens = pd.read_csv(out / "generations.csv").fillna("")
    assert "judge_warning" not in gens or set(gens["judge_warning"]) == {""}


def test_run_leads_with_the_matched_comparison(tiny_model, tmp_path):
    """The findings open with the methods at matched KL; raw multipliers come after,
    labelled as not a ranking; the matched tables are written."""
    from steerlab.run import run_pipeline

    cfg = RunConfig(layer=1, methods=("caa", "freeform"), n_train=4, n_test=6,
                    multipliers=(-1.0, 0.0, 1.0), strengths=(0.0, 0.5, 2.0), n_neutral=2,
                    open_ended=0, batch_size=4, out=str(tmp_path / "run"))  # fmt: skip
    res = run_pipeline(cfg, model=tiny_model)
    assert res.matched is not None and set(res.matched.vectors) == {"caa", "freeform"}
    assert res.matched.n_items == 6
    from steerlab.run.pipeline import _findings

    text = _findings(res)
    first, raw = text.index("KL 0.2"), text.index("Raw multipliers")
    assert first < raw  # matched first
    assert "moves the margin furthest" not in text  # 6 pairs < MIN_ITEMS: no winner named
    kl = pd.read_csv(tmp_path / "run" / "kl.csv")
    assert (kl.loc[kl["strength"] == 0.0, "kl"] == 0).all()
    assert (tmp_path / "run" / "matched_kl.csv").is_file()
    skipped = run_pipeline(
        RunConfig(**{**cfg.to_dict(), "n_neutral": 0, "out": str(tmp_path / "r2")}),
        model=tiny_model,
    )
    assert skipped.matched is None and not (tmp_path / "r2" / "matched_kl.csv").exists()


def test_a_failed_run_says_why_in_its_log(tiny_model, tmp_path):
    """Issue 18: a failed run must not leave an empty logs/ behind."""
    from steerlab.run import run_pipeline

    cfg = RunConfig(layer=99, out=str(tmp_path / "run"))  # the tiny model has 2 layers
    with pytest.raises(Exception, match="99"):
        run_pipeline(cfg, model=tiny_model)
    log = (tmp_path / "run" / "logs" / "run.log").read_text()
    assert "run failed" in log and "99" in log
