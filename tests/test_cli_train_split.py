"""``steerlab train``: the validation pairs that choose the best epoch come from the
training split, never from the test split that ``steerlab eval`` reports on."""

import pytest
from typer.testing import CliRunner

from steerlab.cli import _common, app
from steerlab.cli.train import fit_and_validation
from steerlab.data import load_pairs
from steerlab.errors import ConfigError


def test_fit_and_validation_are_disjoint_slices_of_the_training_pairs():
    pairs = list(range(10))
    assert fit_and_validation(pairs, None, 3) == (list(range(7)), [7, 8, 9])
    assert fit_and_validation(pairs, 4, 3) == ([0, 1, 2, 3], [4, 5, 6])
    assert fit_and_validation(pairs, None, 0) == (pairs, [])
    with pytest.raises(ConfigError, match="--n-train 8 and --n-val 3 need 11 training pairs"):
        fit_and_validation(pairs, 8, 3)
    with pytest.raises(ConfigError, match="--n-val 10 need 11"):
        fit_and_validation(pairs, None, 10)


@pytest.mark.parametrize("objective", ["bipo", "reps"])
def test_train_validates_on_training_pairs_only(tiny_model_4l, monkeypatch, tmp_path, objective):
    import steerlab.vectors.bipo as bipo

    seen = {}

    class Stop(Exception):
        pass

    def fake_run(model, train, **kw):
        seen["train"], seen["val"] = list(train), list(kw["val_pairs"])
        raise Stop

    monkeypatch.setattr(_common, "load_model", lambda name, device: tiny_model_4l)
    monkeypatch.setattr(bipo, "fit_bipo_run", fake_run)
    args = ["train", objective, "--layer", "1", "--n-train", "5", "--n-val", "3",
            "--out", str(tmp_path / "o"), "--model", "tiny"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert isinstance(res.exception, Stop), res.output
    data = load_pairs("power-seeking")
    assert seen["train"] == list(data.train[:5]) and seen["val"] == list(data.train[5:8])
    test = {(p.question, p.matching) for p in data.test}
    assert not test & {(p.question, p.matching) for p in seen["val"]}
