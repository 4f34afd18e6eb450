"""The flat public API: every name in ``steerlab.__all__`` resolves, and importing steerlab
loads no heavy later-stage dependency (plotly, scikit-learn) until it is used."""

import subprocess
import sys

import steerlab


def test_every_public_name_resolves():
    for name in steerlab.__all__:
        assert getattr(steerlab, name) is not None, name


def test_lazy_names_are_the_library_objects():
    import steerlab.analysis
    import steerlab.reports

    assert steerlab.sweep is steerlab.analysis.sweep
    assert steerlab.report is steerlab.reports.report
    import steerlab.evaluation.judges as judges
    import steerlab.evaluation.open_ended as open_ended

    assert steerlab.run_open_ended is open_ended.run_open_ended
    for name in ("make_judge", "ClassifierJudge", "fit_split_judge", "judge_overlaps"):
        assert getattr(steerlab, name) is getattr(judges, name), name
    assert steerlab.pair_accuracy is judges.pair_accuracy
    try:
        steerlab.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("unknown attribute did not raise")


def test_import_does_not_load_plotly_or_sklearn():
    code = (
        "import sys, steerlab; print(sorted(m for m in ('plotly', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
