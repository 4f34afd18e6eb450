"""Every command group given a user mistake: one line ``error: ...`` naming the value,
exit code 1, no traceback, and no model loaded (the loaders are replaced by one that
fails the test). Classes of mistake: a bad value (unknown behavior / method, layer out
of range, multipliers as text), a missing vector file, an output path that is a file or
cannot be created, and zero / negative counts."""

import json
import socket
import sys

import pytest
from typer.testing import CliRunner

import steerlab
import steerlab.models.loading
from steerlab.cli import _common, app

runner = CliRunner()


class ModelLoaded(Exception):
    """Raised by the replaced loaders: the command did expensive work."""


def _refuse(*args, **kwargs):
    raise ModelLoaded(f"a model was loaded: {args} {kwargs}")


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    for owner in (_common, steerlab, steerlab.models.loading):
        monkeypatch.setattr(owner, "load_model", _refuse)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """A model directory with a 4-layer config.json (read without loading), a plain file,
    a missing vector file."""
    root = tmp_path_factory.mktemp("cli")
    model = root / "model4"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 4}))
    afile = root / "notes.txt"
    afile.write_text("not a directory")
    return {
        "model": str(model),
        "file": str(afile),
        "under_file": str(afile / "sub" / "out.csv"),
        "dir": str(root),
        "missing": str(root / "missing.safetensors"),
    }


def one_error_line(args: list[str], *named: str) -> str:
    res = runner.invoke(app, args)
    assert not isinstance(res.exception, ModelLoaded), f"{args}: {res.exception}"
    assert res.exit_code == 1, (args, res.output, res.exception)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, res.output)
    assert "Traceback" not in res.output
    for text in named:
        assert text in lines[0], (args, text, lines[0])
    return lines[0]


# Each case: (args, texts the line must contain). {model}, {file}... are filled from paths.
CASES = {
    "run": [
        (["run", "--behavior", "power-seking"], ["power-seking", "power-seeking"]),
        (["run", "--layer", "99", "--quick", "--model", "{model}"], ["99", "0..3"]),
        (["run", "--multipliers", "a,b"], ["multipliers", "a"]),
        (["run", "--methods", "caa,bpo"], ["bpo", "bipo"]),
        (["run", "--out", "{file}"], ["{file}", "directory"]),
        (["run", "--out", "{under_file}"], ["is a file"]),
        (["run", "--n-train", "0"], ["n_train=0"]),
        (["run", "--n-test", "-1"], ["n_test=-1"]),
    ],
    "sweep": [
        (["sweep", "--methods", "foo"], ["foo", "caa"]),
        (["sweep", "--behavior", "nope"], ["nope", "power-seeking"]),
        (["sweep", "--layers", "2,99", "--model", "{model}"], ["99", "0..3"]),
        (["sweep", "--layers", "x"], ["'x'", "--layers"]),
        (["sweep", "--multipliers", "1,x"], ["'x'", "--multipliers"]),
        (["sweep", "--strengths", "0.1,y"], ["'y'", "--strengths"]),
        (["sweep", "--n-neutral", "-1"], ["--n-neutral -1"]),
        (["sweep", "--out", "{file}"], ["{file}", "directory"]),
        (["sweep", "--n-train", "0"], ["n_train=0"]),
        (["sweep", "--bipo-epochs", "-2"], ["bipo_epochs=-2"]),
    ],
    "train": [
        (["train", "bipo", "--behavior", "nope"], ["nope", "power-seeking"]),
        (["train", "bipo", "--layer", "abc"], ["'abc'", "--layer"]),
        (["train", "bipo", "--layer", "99", "--model", "{model}"], ["99", "0..3"]),
        (["train", "bipo", "--epochs", "0"], ["--epochs", "0 is not a valid count"]),
        (["train", "bipo", "--n-train", "-636"], ["--n-train", "-636"]),
        (["train", "bipo", "--n-val", "-199"], ["--n-val", "-199"]),
        (["train", "bipo", "--n-train", "600", "--n-val", "50"], ["--n-train 600", "650", "640"]),
        (["train", "reps", "--n-val", "700"], ["--n-val 700", "training split"]),
        (["train", "bipo", "--batch-size", "0"], ["--batch-size", "0"]),
        (["train", "bipo", "--epochs", "many"], ["--epochs", "'many'"]),
        (["train", "bipo", "--out", "{file}"], ["{file}", "directory"]),
        (["train", "bipo", "--out", "{under_file}"], ["is a file"]),
    ],
    "vector": [
        (["vector", "fit", "caa", "--behavior", "nope"], ["nope", "power-seeking"]),
        (["vector", "fit", "pca", "--layers", "2,99", "--model", "{model}"], ["99", "0..3"]),
        (["vector", "caa", "--layers", "99", "--model", "{model}"], ["99"]),
        (["vector", "fit", "freeform", "--layers", "x"], ["'x'"]),
        (["vector", "fit", "pca", "--positions", "nowhere"], ["--positions", "nowhere"]),
        (["vector", "fit", "freeform", "--out", "{file}"], ["{file}", "directory"]),
        (["vector", "fit", "caa", "--out", "{under_file}"], ["is a file"]),
        (["vector", "fit", "pca", "--n-train", "0"], ["--n-train", "0"]),
        (["vector", "fit", "bpo"], ["bpo"]),
    ],
    "eval": [
        (["eval", "ab", "--behavior", "nope"], ["nope"]),
        (["eval", "ab", "--multipliers", "1,x"], ["'x'", "--multipliers"]),
        (["eval", "likelihood", "-v", "{missing}"], ["missing.safetensors"]),
        (["eval", "mmlu", "-v", "{missing}"], ["missing.safetensors"]),
        (["eval", "open", "-v", "{missing}"], ["missing.safetensors"]),
        (["eval", "likelihood", "--out", "{dir}"], ["{dir}", "is a directory"]),
        (["eval", "ab", "--items-out", "{under_file}"], ["--items-out", "is a file"]),
        (["eval", "likelihood", "--table-out", "{dir}"], ["{dir}", "is a directory"]),
        (["eval", "likelihood", "--strengths", "0.1", "--multipliers", "1"], ["or --strengths"]),
        (["eval", "ab", "--strengths", "0.1"], ["--strengths", "--vector"]),
        (["eval", "likelihood", "--strengths", "x"], ["'x'", "--strengths="]),
        (["eval", "ab", "--n-neutral", "-1"], ["--n-neutral", "-1"]),
        (["eval", "open", "--strengths", "0.1", "--multipliers", "1"], ["or --strengths"]),
        (["eval", "open", "--strengths", "0.1"], ["--strengths", "--vector"]),
        (["eval", "mmlu", "--strengths", "0.1", "--multipliers", "1"], ["or --strengths"]),
        (["eval", "jailbreak", "--strengths", "0.1"], ["--strengths", "--vector"]),
        (["eval", "mmlu", "--n-neutral", "-1"], ["--n-neutral", "-1"]),
        (["eval", "truthfulqa", "--strengths", "0.1,z", "-v", "{missing}"], ["'z'"]),
        (["eval", "truthfulqa", "--out", "{dir}"], ["is a directory"]),
        (["eval", "jailbreak", "--out", "{under_file}"], ["is a file"]),
        (["eval", "open", "--n", "0"], ["--n", "0 is not a valid count"]),
        (["eval", "ab", "--n-test", "-3"], ["--n-test", "-3"]),
        (["eval", "truthfulqa", "--n", "-1"], ["--n", "-1"]),
        (["eval", "mmlu", "--per-subject", "11"], ["--per-subject", "11", "1..10"]),
        (["eval", "jailbreak", "--source", "gcg"], ["gcg", "advbench"]),
        (["eval", "jailbreak", "--multipliers", "up"], ["'up'"]),
        (["eval", "open", "--judge", "nope"], ["nope", "refusal"]),
        (["eval", "open", "--questions", "mine"], ["mine", "caa"]),
    ],
    "judge": [
        (["judge", "fit", "--behavior", "nope"], ["nope", "power-seeking"]),
        (["judge", "fit", "--features", "answers"], ["--features", "question+answer"]),
        (["judge", "fit", "--n-judge", "0"], ["--n-judge", "0"]),
        (["judge", "fit", "--n-judge", "700"], ["700 judge pairs", "lower n_judge"]),
        (["judge", "fit", "--out", "{dir}"], ["{dir}", "is a directory"]),
    ],
    "data": [
        (["data", "verify", "nope"], ["nope", "advbench"]),
        (["data", "fetch", "nope"], ["nope", "advbench"]),
        (["data", "fetch", "--dest", "{file}"], ["{file}", "directory"]),
    ],
    "serve": [
        (["serve", "--vectors", "{missing}"], ["missing.safetensors", "directory"]),
        (["serve", "--vectors", "{file}"], ["notes.txt"]),
        (["serve", "--max-tokens", "0"], ["--max-tokens", "0"]),
        (["serve", "--max-strength", "0"], ["--max-strength", "0"]),
        (["serve", "--port", "-1"], ["--port", "-1"]),
        (["serve", "--dtype", "float8"], ["float8"]),
    ],
    "demo": [
        (["demo", "--layer", "99", "--model", "{model}"], ["99", "0..3"]),
        (["demo", "--layer", "x"], ["--layer", "'x'"]),
        (["demo", "--max-new-tokens", "0"], ["--max-new-tokens", "0"]),
        (["demo", "--multiplier", "strong"], ["--multiplier", "'strong'"]),
    ],
}


@pytest.mark.parametrize("group", sorted(CASES))
def test_every_command_group_reports_bad_input_in_one_line(group, paths):
    for args, named in CASES[group]:
        args = [a.format(**paths) for a in args]
        one_error_line(args, *(t.format(**paths) for t in named))


def test_serve_port_in_use_is_one_line_before_loading(paths):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        one_error_line(["serve", "--port", port], f"--port {port}", "already in use")


def test_python_m_serve_is_the_same_command(paths, capsys):
    from steerlab.serve.app import main

    with pytest.raises(SystemExit) as exc:
        main(["--max-tokens", "0"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-tokens" in err[0]


@pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux-only")
def test_unwritable_output_location_is_refused_before_work():
    one_error_line(["train", "bipo", "--out", "/proc/steerlab-out"], "/proc", "cannot write")
    one_error_line(["eval", "mmlu", "--out", "/proc/x/mmlu.csv"], "/proc", "cannot write")


def test_data_verify_exits_1_with_a_readable_summary(tmp_path, data_root):
    rel = "advbench/data/advbench/harmful_behaviors.csv"
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_bytes((data_root / rel).read_bytes() + b"\n")
    res = runner.invoke(app, ["data", "verify", "advbench", "--root", str(tmp_path)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("verified 3 files under") and "2 missing" in lines[0]
    assert "1 sha256-mismatch" in lines[0]
    assert any(line.strip().startswith(f"sha256-mismatch: {rel}") for line in lines)
    assert lines[-1].endswith("(re-downloads missing and mismatched files).")
    assert "steerlab data fetch advbench" in lines[-1]
    assert max(len(line) for line in lines) < 300


def test_data_verify_lists_a_few_problems_per_status(tmp_path):
    res = runner.invoke(app, ["data", "verify", "--root", str(tmp_path)])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) <= 2 + 5 + 1 and "more missing" in res.output


def test_data_verify_ok_exits_0(data_root):
    res = runner.invoke(app, ["data", "verify", "advbench", "--root", str(data_root)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"verified 3 files under {data_root}: 3 ok."


def test_vector_fit_has_one_command_per_registered_method():
    from steerlab.vectors.fitting import METHODS

    out = runner.invoke(app, ["vector", "fit", "--help"], env={"COLUMNS": "200"}).output
    fitted = [m for m in METHODS.names() if not getattr(METHODS.get(m), "trains", m == "bipo")]
    assert fitted and all(m in out for m in fitted)
    assert runner.invoke(app, ["vector", "fit", "bipo", "--help"]).exit_code != 0
    pca = runner.invoke(app, ["vector", "fit", "pca", "--help"], env={"COLUMNS": "200"}).output
    assert "--positions" in pca and "--seed" in pca
    freeform = runner.invoke(app, ["vector", "freeform", "--help"], env={"COLUMNS": "200"})
    assert freeform.exit_code == 0 and "--seed" not in freeform.output


def test_no_arguments_still_show_help():
    res = runner.invoke(app, ["eval"])
    assert "Usage" in res.output and "error:" not in res.output


def test_top_level_mistakes_are_one_line_too():
    one_error_line(["--bogus"], "--bogus")
    one_error_line(["trian"], "trian")


def test_output_path_checks_create_nothing(tmp_path):
    from steerlab.errors import OutputPathError

    afile = tmp_path / "a.txt"
    afile.write_text("x")
    with pytest.raises(OutputPathError, match="is a file, but a directory is needed"):
        _common.check_out_dir(afile)
    with pytest.raises(OutputPathError, match="is a directory, but a file is needed"):
        _common.check_out_file(tmp_path, "--items-out")
    with pytest.raises(OutputPathError, match=r"a\.txt is a file, so nothing can be created"):
        _common.check_out_file(afile / "deeper" / "x.csv")
    new = tmp_path / "new" / "dir"
    assert _common.check_out_dir(new) == new and _common.check_out_file(new / "x.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_pipe_reader_gone_tells_a_closed_pipe():
    import os

    r, w = os.pipe()
    try:
        assert not _common.pipe_reader_gone(w)
        os.close(r)
        assert _common.pipe_reader_gone(w)
    finally:
        os.close(w)


@pytest.mark.parametrize("stdout_gone", [True, False])
def test_broken_pipe_is_quiet_only_when_stdout_has_gone(monkeypatch, stdout_gone):
    """``steerlab ... | head``: once ``head`` has gone, no 'error: Broken pipe'; a broken
    pipe elsewhere (a socket to a judge server) is still reported."""
    demo = _common.new_app("demo")

    @demo.command()
    def write() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    @demo.command()
    def other() -> None:  # a second command keeps `write` a sub-command
        pass

    monkeypatch.setattr(_common, "_stdout_gone", lambda: stdout_gone)
    r = CliRunner().invoke(demo, ["write"])
    assert r.exit_code == 1
    assert ("error: Broken pipe" in r.output) is not stdout_gone
