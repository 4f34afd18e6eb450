"""``calibrate``: the choice rule on synthetic tables, and a tiny end-to-end run."""

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from steerlab.analysis.calibrate import (
    CalibrateConfig,
    admissible,
    calibrate,
    choose,
    default_layers,
)
from steerlab.errors import ConfigError
from steerlab.steering.strength import recommended_strength
from steerlab.vectors.vector import SteeringVector


def _table(rows):
    return pd.DataFrame(rows, columns=["method", "layer", "strength", "effect", "kl"])


def test_choose_respects_the_cap_and_monotonicity():
    val = _table(
        [
            # caa L8 rises then falls: 0.4 (after the dip) is not admissible
            ("caa", 8, 0.0, 0.0, 0.0),
            ("caa", 8, 0.1, 1.0, 0.05),
            ("caa", 8, 0.2, 0.5, 0.1),
            ("caa", 8, 0.4, 9.0, 0.15),
            # caa L12 rises to 3.0, but its 3.0 point is over the cap
            ("caa", 12, 0.0, 0.0, 0.0),
            ("caa", 12, 0.1, 2.0, 0.1),
            ("caa", 12, 0.2, 3.0, 0.3),
            # bipo never gains: no recommendation
            ("bipo", 8, 0.0, 0.0, 0.0),
            ("bipo", 8, 0.1, -1.0, 0.01),
        ]
    )
    ok = admissible(val, kl_cap=0.2)
    assert ok.tolist() == [False, True, False, False, False, True, False, False, False]
    got = choose(val, kl_cap=0.2).set_index("method")
    assert got.loc["caa", "layer"] == 12 and got.loc["caa", "strength"] == 0.1
    assert got.loc["caa", "val_effect"] == 2.0 and got.loc["caa", "status"] == "ok"
    assert math.isnan(got.loc["bipo", "strength"])
    assert "monotonically under KL 0.2" in got.loc["bipo", "status"]
    # a looser cap admits the larger effect
    assert choose(val, kl_cap=0.5).set_index("method").loc["caa", "strength"] == 0.2


def test_choose_picks_the_learning_rate_with_the_best_admissible_effect():
    """Curves are per (method, lr, layer): bipo at lr 0.05 dips (its later points are
    out), lr 0.01 rises to the best admissible effect; caa has no lr (NaN)."""
    rows = [
        ("caa", 8, math.nan, 0.0, 0.0, 0.0),
        ("caa", 8, math.nan, 0.1, 1.0, 0.05),
        ("bipo", 8, 0.05, 0.0, 0.0, 0.0),
        ("bipo", 8, 0.05, 0.1, 2.0, 0.05),
        ("bipo", 8, 0.05, 0.2, 1.0, 0.1),
        ("bipo", 8, 0.05, 0.4, 9.0, 0.15),
        ("bipo", 8, 0.01, 0.0, 0.0, 0.0),
        ("bipo", 8, 0.01, 0.1, 1.5, 0.05),
        ("bipo", 8, 0.01, 0.2, 3.0, 0.1),
    ]
    val = pd.DataFrame(rows, columns=["method", "layer", "lr", "strength", "effect", "kl"])
    assert admissible(val, kl_cap=0.2).tolist() == [0, 1, 0, 1, 0, 0, 0, 1, 1]
    got = choose(val, kl_cap=0.2).set_index("method")
    assert (got.loc["bipo", "lr"], got.loc["bipo", "strength"]) == (0.01, 0.2)
    assert got.loc["bipo", "val_effect"] == 3.0 and math.isnan(got.loc["caa", "lr"])
    with pytest.raises(ConfigError, match=r"bipo_lrs=\(0.01, -1.0\) needs finite"):
        CalibrateConfig(bipo_lrs=(0.01, -1.0))
    assert CalibrateConfig(bipo_lrs=(0.02, 0.01, 0.02)).learning_rates == (0.02, 0.01)
    assert CalibrateConfig(bipo_lr=0.03).learning_rates == (0.03,)


def test_config_validation_and_defaults():
    assert CalibrateConfig(strengths=(0.2, 0.1)).strengths == (0.0, 0.1, 0.2)  # 0 added
    with pytest.raises(ConfigError, match="at least one > 0"):
        CalibrateConfig(strengths=(0.0, -0.1))
    with pytest.raises(ConfigError, match=r"CalibrateConfig.strengths=.*finite"):
        CalibrateConfig(strengths=(0.1, float("nan")))
    with pytest.raises(ConfigError, match="kl_cap=0.0 must be > 0"):
        CalibrateConfig(kl_cap=0.0)
    with pytest.raises(ConfigError, match="n_val=0 must be >= 1"):
        CalibrateConfig(n_val=0)
    with pytest.raises(ConfigError, match="no vector method to calibrate"):
        CalibrateConfig(methods=("prompt",))
    assert len(default_layers(30)) == 8 and default_layers(30)[0] == 6
    q = CalibrateConfig.quick(n_test=8)
    assert q.n_test == 8 and q.layers == (10, 14) and q.bipo_epochs == 1


@pytest.fixture(scope="module")
def tiny_result(tiny_model_4l):
    cfg = CalibrateConfig(
        methods=("caa", "freeform", "bipo", "prompt"),
        layers=(1, 2),
        strengths=(0.0, 0.2, 0.5, 1.0),
        kl_cap=5.0,
        n_train=8,
        n_val=6,
        n_test=8,
        n_neutral=2,
        n_boot=100,
        batch_size=4,
        bipo_epochs=1,
    )
    return calibrate(tiny_model_4l, "power-seeking", config=cfg)


def test_calibrate_end_to_end_on_the_tiny_model(tiny_result, tmp_path):
    res = tiny_result
    assert list(res.choices["method"]) == ["caa", "freeform", "bipo"]
    assert set(res.validation["layer"]) == {1, 2}
    assert len(res.validation) == 3 * 2 * 4
    zero = res.validation[res.validation["strength"] == 0.0]
    assert (zero["effect"] == 0).all() and (zero["kl"] == 0).all()
    assert (res.validation[res.validation["strength"] > 0]["kl"] > 0).all()
    assert set(res.training["kind"]) == {"step", "epoch"}
    for r in res.choices[res.choices["status"] == "ok"].itertuples():
        vec = res.vectors[r.method]
        rec = recommended_strength(vec)
        assert rec.strength == r.strength and rec.kl_cap == 5.0
        assert vec.layers == (r.layer,)
    assert res.findings() and all(isinstance(x, str) for x in res.findings())
    # 8 test pairs: a warning first, differences given but no method named ahead
    text = " ".join(res.findings())
    assert res.findings()[0].startswith("Only 8 test pairs: below 20")
    assert " beats " not in text and "cannot be told apart" not in text
    out = res.save(tmp_path / "cal")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["behavior"] == "power-seeking" and summary["findings"]
    for method, rel in summary["vectors"].items():
        back = SteeringVector.load(out / rel)
        assert recommended_strength(back) == recommended_strength(res.vectors[method])
    assert (out / "validation.csv").is_file() and (out / "test_items.csv").is_file()


def test_learning_rate_chosen_on_validation(tiny_result, tiny_model_4l, tmp_path):
    """With bipo_lrs every trained method is trained at each lr; every variant is in the
    validation table, the chosen lr is the best admissible one and is recorded in the
    choices and the vector; at bipo_lr the numbers equal a run without bipo_lrs."""
    from steerlab.reports.calibrate import calibration_report

    cfg = replace(tiny_result.config, methods=("caa", "bipo"), bipo_lrs=(2e-2, 2e-1))
    res = calibrate(tiny_model_4l, "power-seeking", config=cfg)
    val = res.validation
    bipo = val[val["method"] == "bipo"]
    assert set(bipo["lr"]) == {2e-2, 2e-1} and val[val["method"] == "caa"]["lr"].isna().all()
    assert len(val) == (1 + 2) * 2 * 4  # (caa + bipo x 2 lrs) x 2 layers x 4 strengths
    assert set(res.training["base_lr"]) == {2e-2, 2e-1}
    choice = res.choices.set_index("method")
    assert math.isnan(choice.loc["caa", "lr"])
    ok = bipo[admissible(val, cfg.kl_cap)[bipo.index]]
    best = ok.sort_values(["effect", "kl"], ascending=[False, True]).iloc[0]
    assert choice.loc["bipo", "lr"] == best["lr"] and choice.loc["bipo", "layer"] == best["layer"]
    vec = res.vectors["bipo"]
    assert vec.provenance.hyperparameters["lr"] == best["lr"]
    assert (
        f"learning rate {best['lr']:g} chosen among 0.02, 0.2"
        in recommended_strength(vec).criterion
    )
    calibration_report(res).save(tmp_path / "r.html", plotlyjs="cdn")  # a line per chosen lr
    cols = ["method", "layer", "strength", "effect", "kl"]
    same_lr = val[val["lr"].isna() | (val["lr"] == 2e-2)][cols].reset_index(drop=True)
    before = tiny_result.validation
    before = before[before["method"].isin(["caa", "bipo"])][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(same_lr, before, check_exact=True)


def test_validation_skips_only_what_the_choice_cannot_use(tiny_result, tiny_model_4l):
    """By default the validation margins stop at each vector's largest strength within
    the KL cap: the choices equal a full-grid run's, and every scored point equals the
    full grid's (lr variants at one layer keep their labels when scored apart)."""
    val = tiny_result.validation
    kls = val.loc[val["strength"] > 0, "kl"]
    cap = float(kls.quantile(0.4))  # cuts some curves, not all
    cfg = replace(tiny_result.config, methods=("caa", "bipo"), kl_cap=cap,
                  bipo_lrs=(2e-2, 2e-1))  # fmt: skip
    short = calibrate(tiny_model_4l, "power-seeking", config=cfg)
    full = calibrate(tiny_model_4l, "power-seeking", config=replace(cfg, full_validation=True))
    pd.testing.assert_frame_equal(short.choices, full.choices)
    keys = ["method", "lr", "layer", "strength"]
    merged = short.validation.merge(full.validation, on=keys, suffixes=("", "_full"))
    assert len(merged) == len(short.validation) < len(full.validation)
    np.testing.assert_array_equal(merged["effect"], merged["effect_full"])
    dropped = full.validation.merge(short.validation[keys], on=keys, how="left", indicator=True)
    dropped = dropped[dropped["_merge"] == "left_only"]
    for r in dropped.itertuples():  # only points above the cap, after the last within it
        curve = full.validation[(full.validation["method"] == r.method)
                                & (full.validation["layer"] == r.layer)
                                & (full.validation["lr"].fillna(-1) == (r.lr if r.lr == r.lr else -1))]  # fmt: skip
        later = curve[curve["strength"] >= r.strength]
        assert (later["kl"] > cap).all()
    pd.testing.assert_frame_equal(short.test, full.test)


def test_prompting_baseline_beside_the_calibrated_vectors(tiny_result, tiny_model_4l, tmp_path):
    """Prompting is scored, not calibrated: its row equals a direct computation, and each
    vector is compared with it at prompting's own KL, per test pair."""
    from steerlab.analysis.calibrate import _split
    from steerlab.analysis.reliability import curves, strength_at_kl
    from steerlab.data import load_pairs
    from steerlab.evaluation.prompting import prompt_likelihood_margin

    res = tiny_result
    assert "prompt" not in set(res.choices["method"]) and "prompt" not in res.vectors
    row = res.prompting.iloc[0]
    assert row["method"] == "prompt" and row["n"] == 8 and row["kl"] > 0
    _, _, test = _split(load_pairs("power-seeking"), res.config)
    direct = prompt_likelihood_margin(tiny_model_4l, test, "power-seeking", (0, 1), per_item=True)
    by_sign = direct.pivot_table(index="item", columns="multiplier", values="margin")
    effect = (by_sign[1.0] - by_sign[0.0]).to_numpy()
    assert row["effect"] == pytest.approx(effect.mean(), abs=1e-6)
    assert row["effect_low"] <= row["effect"] <= row["effect_high"]
    assert row["wrong_way_share"] == pytest.approx((effect < 0).mean())
    chosen = set(res.vectors)
    assert set(res.versus_prompt["method"]) == chosen
    val = res.validation
    for c in curves(res.test_items, "strength", "margin"):
        v = res.versus_prompt.set_index("method").loc[c.method]
        curve = val[(val["method"] == c.method) & (val["layer"] == v["layer"])]
        curve = curve.sort_values("strength")
        s = strength_at_kl(curve["strength"].to_numpy(), curve["kl"].to_numpy(), row["kl"])
        assert v["strength"] == pytest.approx(s, nan_ok=True)
        if math.isnan(v["strength"]):
            assert math.isnan(v["difference"])
            continue
        want = (c.effects_at(v["strength"]) - effect).mean()
        assert v["difference"] == pytest.approx(want, abs=1e-6)
        assert v["low"] <= v["difference"] <= v["high"]
    text = " ".join(res.findings())
    assert "Prompting (the eliciting instruction" in text
    out = res.save(tmp_path / "cal")
    assert (out / "prompting.csv").is_file() and (out / "versus_prompt.csv").is_file()
    assert json.loads((out / "summary.json").read_text())["prompting"][0]["method"] == "prompt"


def test_calibration_report_builds(tiny_result, tmp_path):
    from steerlab.reports.calibrate import calibration_report

    path = calibration_report(tiny_result).save(tmp_path / "r.html", plotlyjs="cdn")
    text = path.read_text()
    assert "Findings" in text and "Effect vs damage" in text
    # BiPO's loss / norm curves and the per-epoch validation margins that pick its epoch
    assert "Training curves" in text and "Validation margins per training epoch" in text


def test_cli_calibrate_quick_with_a_substituted_model(tiny_model_4l, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from steerlab.cli import _common, app

    monkeypatch.setattr(_common, "load_model", lambda model, device: tiny_model_4l)
    monkeypatch.setattr(_common, "check_layers", lambda model, layers, flag="--layers": layers)
    args = [
        "calibrate",
        "--quick",
        "--methods",
        "caa,pca",
        "--layers",
        "1,2",
        "--n-test",
        "6",
        "--n-train",
        "6",
        "--n-val",
        "4",
        "--n-neutral",
        "2",
        "--strengths",
        "0,0.3,1",
        "--kl-cap",
        "5",
        "--kl-levels",
        "0.5,1",
        "--bipo-lrs",
        "5e-3,2e-2",
        "--out",
        str(tmp_path / "o"),
        "--plotlyjs",
        "cdn",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "report.html").is_file()
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["config"]["kl_levels"] == [0.5, 1.0]
    assert summary["config"]["bipo_lrs"] == [5e-3, 2e-2]
    bad = CliRunner().invoke(app, ["calibrate", "--kl-levels", "a,b", "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "comma-separated list of numbers" in bad.output


def test_a_paired_difference_names_a_winner_only_on_enough_pairs():
    from steerlab.analysis.calibrate_findings import _versus

    assert "bipo beats caa by +1.00" in _versus("At 0.2", "bipo", "caa", 1.0, 0.5, 1.5, 20)
    assert "caa beats bipo by +1.00" in _versus("At 0.2", "bipo", "caa", -1.0, -1.5, -0.5, 50)
    assert "cannot be told apart" in _versus("At 0.2", "bipo", "caa", 1.0, -0.5, 1.5, 50)
    few = _versus("At 0.2", "bipo", "caa", 1.0, 0.5, 1.5, 19)
    assert "n = 19 test pairs is too few" in few and "beats" not in few
