"""``steerlab run`` and ``steerlab sweep`` through typer's CliRunner: a flag per config
field, bad values reported, and the sweep end to end on the tiny model (resumed)."""

import re

from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.run import RunConfig


def test_cli_has_a_flag_per_setting_and_reports_bad_values():
    runner = CliRunner()
    out = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    for name in RunConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in out, name
    assert "--config" in out
    bad = runner.invoke(app, ["run", "--n-train", "1"], env={"COLUMNS": "200"})
    assert bad.exit_code != 0 and "n_train=1" in bad.output
    sweep_help = runner.invoke(app, ["sweep", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--behavior", "--layers", "--methods", "--out", "--bipo-epochs", "--resume",
                 "--strengths", "--n-neutral"):  # fmt: skip
        assert flag in sweep_help


def test_sweep_command_writes_a_report(tiny_model, tmp_path, monkeypatch):
    """`steerlab sweep` end to end on the tiny model (2 layers), then resumed."""
    import steerlab

    monkeypatch.setattr(steerlab, "load_model", lambda *a, **k: tiny_model)
    out = tmp_path / "sweep"
    args = ["sweep", "--layers", "0,1", "--methods", "caa,bipo", "--multipliers", "-1,0,1",
            "--n-train", "6", "--n-test", "4", "--bipo-epochs", "1", "--out", str(out)]  # fmt: skip
    runner = CliRunner()
    res = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "raw-multiplier slope by margin (not a ranking)" in res.output
    assert "[4/4]" in res.output and "At KL 0.2" in res.output  # the matched leader line
    for name in ("report.html", "results.csv", "effects.csv", "sweep.json", "matched_kl.csv"):
        assert (out / name).is_file(), name
    page = (out / "report.html").read_text()
    assert "Layer sweep: power-seeking" in page and not re.search(r"<script[^>]*\ssrc=", page)
    # the findings open with the matched comparison, raw slopes labelled after it
    assert page.index("At KL 0.2") < page.index("Raw multipliers (lengths differ")
    assert "Matched damage: KL 0.2" in page
    again = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert again.exit_code == 0 and again.output.count("(on disk)") == 4
