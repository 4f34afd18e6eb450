"""``steerlab run``: RunConfig (defaults < file < flags, quick presets, validation) and the
quick job end to end through the CLI on the embedded model (slow). The CLI's flags and
``steerlab sweep``: tests/test_cli_run.py."""

import json
import re

import numpy as np
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
    raw = results[results["evaluation"] != "judge"]
    assert set(raw["multiplier"]) == {-1.0, 0.0, 1.0} and raw["strength"].isna().all()
    # the open-ended answers are generated at the matched comparison's strengths
    judged = results[results["evaluation"] == "judge"]
    assert set(judged["strength"]) == {0.0, 0.1, 0.4}
    changes = pd.read_csv(out / "judge_changes.csv")
    assert set(changes["method"]) == {"bipo", "caa", "freeform", "pca"}
    kl = pd.read_csv(out / "kl.csv")
    merged = changes.merge(kl, left_on=["method", "strength"], right_on=["vector", "strength"])
    assert len(merged) == len(changes) and (merged["kl_x"] == merged["kl_y"]).all()
    assert (changes.loc[changes["strength"] == 0, "change"] == 0).all()
    assert "judge_score on 2 power-seeking questions" in res.output
    assert set(pd.read_csv(out / "effects.csv")["evaluation"]) == {"margin", "ab"}
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


def _answers(n_questions: int, rise: float) -> pd.DataFrame:
    """Judged answers of two methods at strengths 0 / 0.1 / 0.2 (``rise`` per 0.1)."""
    rng = np.random.default_rng(0)
    base = rng.normal(2.5, 0.4, n_questions)
    rows = []
    for method, slope in (("caa", rise), ("bipo", -rise)):
        for s in (0.0, 0.1, 0.2):
            for q in range(n_questions):
                score = base[q] + slope * s / 0.1 + rng.normal(0, 0.05)
                rows.append({"vector": f"{method}:L3", "method": method, "layer": 3,
                             "multiplier": 7.0 * s, "strength": s, "item": q,
                             "score": score})  # fmt: skip
    return pd.DataFrame(rows)


def test_judged_changes_pair_each_question_and_carry_the_kl():
    """The run's judged table: changes vs strength 0 per question, the matched KL merged
    by method and strength, and a findings line that names a direction only with >= 20
    scored answers and a CI that excludes 0."""
    from steerlab.analysis.matched import MatchedComparison
    from steerlab.run.matched import judged_changes, judged_findings, judged_table

    kl = pd.DataFrame({"vector": ["caa", "caa", "caa", "bipo", "bipo", "bipo"],
                       "strength": [0.0, 0.1, 0.2] * 2,
                       "kl": [0.0, 0.05, 0.2, 0.0, 0.07, 0.3]})  # fmt: skip
    empty = pd.DataFrame()
    comp = MatchedComparison(empty, kl, empty, empty, empty, empty, (0.2,), (0.0, 0.1, 0.2))
    table = judged_changes(_answers(30, 0.5), comp)
    assert len(table) == 6 and (table.loc[table["strength"] == 0, "change"] == 0).all()
    caa = table[(table["method"] == "caa") & (table["strength"] == 0.2)].iloc[0]
    assert caa["kl"] == 0.2 and 0.9 < caa["change"] < 1.1 and caa["change_low"] > 0
    bipo = table[(table["method"] == "bipo") & (table["strength"] == 0.1)].iloc[0]
    assert bipo["kl"] == 0.07 and bipo["change_high"] < 0
    (line,) = judged_findings(table, 30)
    assert "matched strength 0.1" in line and "rises (CI excludes 0)" in line
    assert "falls (CI excludes 0)" in line and "too few" not in line
    shown = judged_table(table)
    assert list(shown["change vs strength 0"])[0] == "-" and shown["KL"].iloc[2] == 0.2
    few = judged_changes(_answers(5, 0.5), None)
    assert few["kl"].isna().all()
    (line,) = judged_findings(few, 5)
    assert "too few for these CIs to hold" in line and "rises" not in line
    lost = few.copy()
    lost.loc[lost["strength"] == 0.1, ["n", "change", "change_low", "change_high"]] = [
        0,
        np.nan,
        np.nan,
        np.nan,
    ]
    assert "caa no paired change (n = 0)" in judged_findings(lost, 5)[0]
    gone = judged_table(lost)[lambda t: t["strength"] == 0.1]
    assert set(gone["judge score [95% CI]"]) == {"-"} and set(gone["change vs strength 0"]) == {"-"}
    flat = judged_findings(judged_changes(_answers(30, 0.0), comp), 30)
    assert "no clear change (CI includes 0)" in flat[0]


def test_multiplier_curves_plot_strengths():
    """A frame at strengths is drawn against them (the run's judged answers)."""
    from steerlab.viz.figures import multiplier_curves

    frame = pd.DataFrame({"method": ["caa"] * 3, "multiplier": [0.0, 9.0, 3.0],
                          "strength": [0.0, 0.3, 0.1], "metric": ["judge_score"] * 3,
                          "value": [2.0, 3.0, 2.5]})  # fmt: skip
    fig = multiplier_curves(frame, "judge_score", x="strength")
    assert list(fig.data[0].x) == [0.0, 0.1, 0.3] and list(fig.data[0].y) == [2.0, 2.5, 3.0]
    assert "strength" in fig.layout.xaxis.title.text
    with pytest.raises(ConfigError, match="x='strength' is not a column"):
        multiplier_curves(frame.drop(columns=["strength"]), "judge_score", x="strength")
