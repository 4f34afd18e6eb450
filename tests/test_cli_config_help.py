"""Options generated from config dataclasses carry each field's whole docstring entry."""

from dataclasses import fields

import pytest
from typer.testing import CliRunner

from steerlab.analysis.calibrate import CalibrateConfig
from steerlab.analysis.sweep_plan import SweepConfig
from steerlab.cli import app
from steerlab.cli._config import _doc_of
from steerlab.run.config import RunConfig
from steerlab.serve.config import ServeConfig
from steerlab.serve.schema import ServeLimits


@pytest.mark.parametrize("cls", [RunConfig, SweepConfig, CalibrateConfig, ServeLimits, ServeConfig])
def test_every_field_has_its_whole_entry(cls):
    for f in fields(cls):
        text = f.metadata.get("help") or _doc_of(cls, f.name)
        assert text, f"{cls.__name__}.{f.name} has no help"
        assert ":data:" not in text and ":func:" not in text and "``" not in text
        assert not text.endswith(("(", ",", " of", " a", " the")), (f.name, text)


def test_multi_line_entries_are_joined_and_stop_at_the_next_field():
    text = _doc_of(SweepConfig, "rescale")
    assert text.startswith("None (default, as the paper)")
    assert text.endswith("(the multiplier then reads as a multiple of that fraction).")
    assert "out_dir" not in text
    assert _doc_of(SweepConfig, "metrics").startswith(
        "judge-free metrics to compute (keys of METRICS:"
    )


def test_sweep_help_shows_the_continuation():
    out = CliRunner().invoke(app, ["sweep", "--help"], env={"COLUMNS": "250"}).output
    assert "equal relative strength" in " ".join(out.split())


def test_printed_tables_are_wide_in_logs(monkeypatch, capsys):
    """Written to a file or a pipe, the console is LOG_WIDTH wide (rich alone takes 80 and
    folds every label); COLUMNS still wins."""
    from steerlab.cli import _common

    monkeypatch.delenv("COLUMNS", raising=False)
    assert _common.console().width == _common.LOG_WIDTH  # pytest's captured stdout: a pipe
    monkeypatch.setenv("COLUMNS", "93")
    assert _common.console(stderr=True).width == 93
