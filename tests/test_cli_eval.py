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
    assert set(summary["direction"]) == {"defence", "none", "attack"}  # x0 added
    rows = [json.loads(x) for x in out.with_name("jb.items.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"completion", "success"} <= set(rows[0])
    assert "jailbreak asr on 2 items, one seed" in r.output  # the paired change vs x0
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


@pytest.mark.parametrize("kind", ["likelihood", "ab"])
def test_eval_prints_means_and_paired_changes_with_cis(cli, tiny_model, tmp_path, kind):
    from steerlab.data import load_pairs
    from steerlab.evaluation import ab_probability, likelihood_margin

    vec = big_vector(tiny_model, scale=3.0)
    vec_path = vec.save(tmp_path / "v.safetensors")
    table, items = tmp_path / "table.csv", tmp_path / "items.csv"
    r = cli("eval", kind, "-v", str(vec_path), "--n-test", "6", "--multipliers=-1,1",
            "--table-out", str(table), "--items-out", str(items), "--no-progress",
            "--n-neutral", "0")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "change vs x0" in r.output and "one seed" in r.output and "bootstrap" in r.output
    assert "n < 20: too few items" in " ".join(r.output.split())  # 6 items
    got = pd.read_csv(table)
    assert "kl" not in got.columns and "KL" not in r.output  # --n-neutral 0: no damage
    assert sorted(got["multiplier"].unique()) == [-1.0, 0.0, 1.0]  # x0 added
    assert (got["low"] <= got["mean"]).all() and (got["mean"] <= got["high"]).all()
    assert (got[got["multiplier"] == 0.0]["change"] == 0.0).all()
    # the numbers are the plain evaluation's (the likelihood goes through the fast path)
    split = load_pairs("power-seeking").split(n_test=6, seed=0)
    if kind == "likelihood":
        plain = likelihood_margin(tiny_model, split.test, vec, [-1, 0, 1], per_item=True,
                                  progress=False)  # fmt: skip
        col = "margin"
    else:
        plain = ab_probability(tiny_model, split.test_ab, vec, [-1, 0, 1], per_item=True,
                               progress=False)  # fmt: skip
        col = "p_matching"
    mine = pd.read_csv(items)
    assert len(mine) == len(plain) == 18
    assert mine[col].to_numpy() == pytest.approx(plain[col].to_numpy(), abs=1e-4)
    row = got[(got["metric"] == col) & (got["multiplier"] == 1.0)].iloc[0]
    per_item = plain[plain["multiplier"] == 1.0][col].to_numpy() - plain[
        plain["multiplier"] == 0.0][col].to_numpy()  # fmt: skip
    assert row["change"] == pytest.approx(per_item.mean(), abs=1e-4)


def test_eval_likelihood_at_matched_strengths(cli, tiny_model, tmp_path):
    """``--strengths``: the vector evaluated in norm units (strength 0 added), the table
    by strength, the numbers those of ``likelihood_margin(strengths=...)``, and the KL
    damage of each strength that of ``kl_damage`` on the first ``--n-neutral`` texts."""
    from steerlab.data import load_pairs
    from steerlab.data.neutral import load_neutral_set
    from steerlab.evaluation import likelihood_margin
    from steerlab.evaluation.damage import kl_damage

    vec_path = big_vector(tiny_model, scale=3.0).save(tmp_path / "v.safetensors")
    table, items = tmp_path / "table.csv", tmp_path / "items.csv"
    r = cli("eval", "likelihood", "-v", str(vec_path), "--n-test", "6", "--strengths=-0.2,0.2",
            "--table-out", str(table), "--items-out", str(items), "--no-progress",
            "--n-neutral", "5")  # fmt: skip
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "matched strengths" in text and "itself at strength 0" in text and "|k v|" in text
    got = pd.read_csv(table)
    assert sorted(got["strength"].unique()) == [-0.2, 0.0, 0.2]
    split = load_pairs("power-seeking").split(n_test=6, seed=0)
    plain = likelihood_margin(tiny_model, split.test, big_vector(tiny_model, scale=3.0),
                              strengths=[-0.2, 0, 0.2], per_item=True, progress=False)  # fmt: skip
    mine = pd.read_csv(items)
    assert list(mine["strength"]) == list(plain["strength"])
    assert mine["margin"].to_numpy() == pytest.approx(plain["margin"].to_numpy(), abs=1e-4)
    assert mine["multiplier"].to_numpy() == pytest.approx(plain["multiplier"].to_numpy())
    row = got[(got["metric"] == "margin") & (got["strength"] == 0.2)].iloc[0]
    at = plain.set_index(["strength", "item"])["margin"]
    assert row["change"] == pytest.approx((at[0.2] - at[0.0]).mean(), abs=1e-4)
    assert "5 neutral texts" in text
    kl = kl_damage(tiny_model, big_vector(tiny_model, scale=3.0), strengths=[-0.2, 0, 0.2],
                   neutral=load_neutral_set(n=5)).set_index("strength")["kl"]  # fmt: skip
    mine_kl = got[got["metric"] == "margin"].set_index("strength")["kl"]
    assert mine_kl[0.0] == 0.0 and mine_kl[0.2] > 0 and mine_kl[-0.2] > 0
    assert mine_kl.sort_index().to_numpy() == pytest.approx(kl.sort_index().to_numpy(), rel=1e-5)


def test_eval_open_adds_x0_and_prints_the_paired_change_of_the_judge_score(cli, tiny_model,
                                                                          tmp_path):  # fmt: skip
    vec_path = big_vector(tiny_model).save(tmp_path / "v.safetensors")
    out = tmp_path / "open.jsonl"
    r = cli("eval", "open", "-v", str(vec_path), "--n", "2", "--max-new-tokens", "3",
            "--multipliers=-1,1", "--judge", "local", "--self-judge", "--out", str(out))  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted({row["multiplier"] for row in rows}) == [-1.0, 0.0, 1.0]
    assert len(rows) == 6
    assert "judge_score on 2 power-seeking questions (n: scored)" in r.output
    assert "change vs x0" in r.output


def test_eval_ab_at_matched_strengths(cli, tiny_model, tmp_path):
    from steerlab.data import load_pairs
    from steerlab.evaluation import ab_probability

    vec = big_vector(tiny_model, scale=3.0)
    vec_path, items = vec.save(tmp_path / "v.safetensors"), tmp_path / "items.csv"
    r = cli("eval", "ab", "-v", str(vec_path), "--n-test", "6", "--strengths=0.3",
            "--items-out", str(items), "--no-progress", "--n-neutral", "0")  # fmt: skip
    assert r.exit_code == 0, r.output
    split = load_pairs("power-seeking").split(n_test=6, seed=0)
    plain = ab_probability(tiny_model, split.test_ab, vec, strengths=[0, 0.3], per_item=True,
                           progress=False)  # fmt: skip
    mine = pd.read_csv(items)
    assert list(mine["strength"]) == list(plain["strength"]) and set(mine["strength"]) == {0, 0.3}
    assert mine["p_matching"].to_numpy() == pytest.approx(plain["p_matching"].to_numpy(), abs=1e-5)


def test_eval_open_at_matched_strengths_with_a_kl_column(cli, tiny_model, tmp_path):
    vec_path = big_vector(tiny_model).save(tmp_path / "v.safetensors")
    out = tmp_path / "open.jsonl"
    r = cli("eval", "open", "-v", str(vec_path), "--n", "2", "--max-new-tokens", "3",
            "--strengths=0.5", "--n-neutral", "3", "--judge", "local", "--self-judge",
            "--out", str(out))  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted({row["strength"] for row in rows}) == [0.0, 0.5] and len(rows) == 4
    assert "at matched strengths" in r.output and "3 neutral texts" in r.output
    assert "strength 0" in r.output and "KL" in r.output
    assert "self-judged" not in r.stdout.split("saved")[0].split("answers in")[1]  # stderr only
    summary = pd.read_csv(out.with_name("open.summary.csv"))
    assert sorted(set(summary["strength"])) == [0.0, 0.5]


def test_benchmarks_at_matched_strengths(cli, tiny_model, tmp_path):
    from steerlab.evaluation.benchmarks import mmlu_accuracy
    from steerlab.steering.strength import in_norm_units, site_multipliers, vector_norms

    vec = big_vector(tiny_model, scale=3.0)
    vec_path = vec.save(tmp_path / "v.safetensors")
    out = tmp_path / "mmlu.csv"
    r = cli("eval", "mmlu", "-v", str(vec_path), "--per-subject", "1", "--strengths=0.5",
            "--n-neutral", "3", "--out", str(out))  # fmt: skip
    assert r.exit_code == 0, r.output
    items = pd.read_json(out.with_name("mmlu.items.jsonl"), lines=True)
    norms = vector_norms(tiny_model, vec)
    plain = mmlu_accuracy(tiny_model, in_norm_units(vec, norms), [0.0, 0.5], 1, per_item=True,
                          progress=False)  # fmt: skip
    assert list(items["strength"]) == list(plain["multiplier"])  # 0 added
    assert items["p_correct"].to_numpy() == pytest.approx(plain["p_correct"].to_numpy(), abs=1e-6)
    (k,) = site_multipliers(vec, 0.5, norms).values()
    summary = pd.read_csv(out)
    acc = summary[summary["metric"] == "accuracy"].set_index("strength")
    assert acc.loc[0.5, "multiplier"] == pytest.approx(k) and acc.loc[0.0, "multiplier"] == 0
    assert {"ci_low", "ci_high", "chance"} <= set(summary.columns)
    # the paired change of every item against itself at strength 0 is printed
    n = len(items) // 2
    assert f"mmlu p_correct on {n} items at matched strengths" in r.output
    p0, p1 = (items[items["strength"] == x]["p_correct"].to_numpy() for x in (0.0, 0.5))
    assert f"{(p1 - p0).mean():+.3f} [" in r.output
    kl = pd.read_csv(out.with_name("mmlu.kl.csv")).set_index("strength")["kl"]
    assert kl[0.0] == 0.0 and kl[0.5] > 0 and "3 neutral texts" in r.output
    assert f"{kl[0.5]:.3f}" in r.output
    jb = tmp_path / "jb.csv"
    r = cli("eval", "jailbreak", "-v", str(vec_path), "--n", "2", "--max-new-tokens", "2",
            "--strengths=-0.5,0.5", "--n-neutral", "0", "--out", str(jb))  # fmt: skip
    assert r.exit_code == 0, r.output
    got = pd.read_csv(jb).drop_duplicates("strength").set_index("strength")["direction"]
    assert got.to_dict() == {-0.5: "defence", 0.0: "none", 0.5: "attack"}
    assert "jailbreak asr on 2 items at matched strengths" in r.output
    assert not jb.with_name("jb.kl.csv").exists() and "KL" not in r.output
