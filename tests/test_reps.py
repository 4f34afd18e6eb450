"""RePS as an objective of the BiPO trainer: the loss's claims, parity with a plain
implementation, training (vector changes, weights don't, held-out margin moves the right
way), registration (fit, sweeps' train entry, CLI)."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from steerlab.errors import ConfigError
from steerlab.vectors.bipo import (
    BiPOConfig,
    RePSConfig,
    fit_bipo_run,
    fit_reps_run,
    reps_loss,
    train_reps,
)
from steerlab.vectors.fitting import METHODS, fit
from tests.reps_plain import plain_reps, reps_term
from tests.test_bipo import synthetic_pairs, weights


def f64(*xs):
    return torch.tensor(xs, dtype=torch.float64)


# --- the objective --------------------------------------------------------------------
@pytest.mark.parametrize("weighting", ["reference", "reference_mean", "none"])
def test_loss_equals_the_plain_terms(weighting):
    g = torch.Generator().manual_seed(0)
    pm, pn = -torch.rand(6, generator=g, dtype=torch.float64) * 20, -torch.rand(6, generator=g, dtype=torch.float64) * 20  # fmt: skip
    rm, rn = pm - 1.5, pn + 0.5
    lm, ln = f64(3, 5, 2, 7, 4, 1), f64(4, 4, 6, 2, 3, 9)
    d = f64(1, -1, 1, -1, 1, -1)
    cfg = RePSConfig(beta=1.7, gamma=0.3, weighting=weighting)
    got = reps_loss(pm, pn, lm, ln, rm, rn, d, cfg.beta, cfg.gamma, cfg.weighting)
    terms = [
        reps_term(pm[i], pn[i], int(lm[i]), int(ln[i]), rm[i], rn[i], float(d[i]), cfg)
        for i in range(6)
    ]
    assert float(got) == pytest.approx(float(torch.stack(terms).mean()), abs=1e-12)


@pytest.mark.parametrize("d", [1.0, -1.0])
def test_direction_sign(d):
    """d=+1: descent raises log p(matching) and lowers log p(not matching); d=-1 the
    opposite (the negatively-steered model prefers the not-matching answer)."""
    pm = f64(-4.0, -6.0).requires_grad_()
    pn = f64(-5.0, -3.0).requires_grad_()
    ones = f64(2, 2)
    loss = reps_loss(pm, pn, ones, ones, pm.detach(), pn.detach(), f64(d, d))
    loss.backward()
    if d > 0:
        assert (pm.grad < 0).all() and (pn.grad > 0).all()
    else:
        assert (pm.grad > 0).all() and (pn.grad < 0).all()


def test_reference_weight_upweights_unlikely_preferred_answers():
    from steerlab.vectors.bipo.loss import reps_weight

    one = f64(1, 1)
    w = reps_weight(f64(-10.0, -2.0), f64(-2.0, -10.0), one, one, "reference")
    assert w.tolist() == [8.0, 1.0]  # max(log p(dis) - log p(pref), 1)
    w = reps_weight(f64(-10.0), f64(-2.0), f64(4.0), f64(1.0), "reference_mean")
    assert w.tolist() == [1.0]  # -2/1 - (-10/4) = 0.5 -> clamped
    assert reps_weight(f64(-10.0), f64(-2.0), f64(1), f64(1), "none").tolist() == [1.0]


def test_config_validation_and_from_bipo():
    with pytest.raises(ConfigError, match="RePSConfig: weighting='sum'.*'reference'"):
        RePSConfig(weighting="sum")
    with pytest.raises(ConfigError, match="direction_sampling='all'.*'both'"):
        RePSConfig(direction_sampling="all")
    with pytest.raises(ConfigError, match="RePSConfig: gamma=nan"):
        RePSConfig(gamma=float("nan"))
    bipo = BiPOConfig(epochs=3, lr=1e-3, batch_size=2, seed=5, beta=0.3)
    reps = RePSConfig.from_bipo(bipo)
    assert (reps.epochs, reps.lr, reps.batch_size, reps.seed) == (3, 1e-3, 2, 5)
    assert (reps.beta, reps.direction_sampling, reps.weighting) == (1.0, "both", "reference")
    assert RePSConfig.from_bipo(reps, gamma=0.5).gamma == 0.5
    assert "objective" not in BiPOConfig().to_dict()  # BiPO's recorded settings unchanged


# --- parity with the plain implementation ---------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"weighting": "none", "gamma": 0.2, "beta": 2.0},
        {"direction_sampling": "per_step", "weighting": "reference_mean"},
    ],
    ids=["both-reference", "none-gamma", "per_step-mean"],
)
def test_fast_equals_plain_on_tiny_model(tiny_model_4l, changes):
    pairs = synthetic_pairs(10)
    cfg = RePSConfig(epochs=2, batch_size=4, warmup_steps=2, lr=2e-2, **changes)
    run = fit_bipo_run(tiny_model_4l, pairs, layer=1, config=cfg, progress=False)
    v_plain, losses_plain = plain_reps(tiny_model_4l, pairs, 1, cfg)
    fast = [s["loss"] for s in run.steps]
    assert len(fast) == len(losses_plain)
    assert fast == pytest.approx(losses_plain, rel=1e-5, abs=1e-4)
    assert torch.allclose(run.vector.direction(1), v_plain.cpu(), atol=1e-4)
    assert float(v_plain.norm()) > 0.01


def test_plain_engine_equals_fast_engine(tiny_model_4l):
    pairs = synthetic_pairs(8)
    cfg = RePSConfig(epochs=1, batch_size=4, warmup_steps=0, lr=2e-2)
    fast = fit_reps_run(tiny_model_4l, pairs, layer=1, config=cfg, progress=False)
    plain = fit_reps_run(tiny_model_4l, pairs, layer=1, config=cfg, progress=False,
                         engine="plain")  # fmt: skip
    a, b = [s["loss"] for s in fast.steps], [s["loss"] for s in plain.steps]
    assert a == pytest.approx(b, rel=1e-5)  # losses of ~40 (w is large); fused attention
    assert torch.allclose(fast.vector.direction(1), plain.vector.direction(1), atol=1e-5)


# --- training on the tiny model -------------------------------------------------------
def test_reps_trains_vector_only_and_moves_the_held_out_margin(tiny_model_4l):
    pairs = synthetic_pairs(16)
    before = weights(tiny_model_4l)
    run = fit_reps_run(
        tiny_model_4l,
        pairs[:12],
        layer=1,
        val_pairs=pairs[12:],
        config=RePSConfig(epochs=6, batch_size=4, warmup_steps=0, lr=5e-2),
        progress=False,
    )
    after = weights(tiny_model_4l)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in tiny_model_4l.bridge.parameters())
    vec = run.vector
    assert vec.method == "reps" and float(vec.direction(1).norm()) > 0
    hp = vec.provenance.hyperparameters
    assert (hp["weighting"], hp["beta"], hp["direction_sampling"]) == ("reference", 1.0, "both")
    losses = [s["loss"] for s in run.steps]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.02, losses
    assert all(s["d"] == 0.0 for s in run.steps)  # both directions every step
    last = run.epochs[-1]  # held-out pairs: +v raises the margin, -v lowers it
    assert last["margin@+1"] > last["margin@0"] > last["margin@-1"], last
    assert run.epochs[-1]["score"] > run.epochs[0]["score"] > 0


def test_same_seed_same_vector_and_resume(tiny_model_4l, tmp_path):
    pairs = synthetic_pairs(8)
    cfg = RePSConfig(epochs=2, batch_size=4, warmup_steps=1, lr=1e-2, seed=3)
    a = train_reps(tiny_model_4l, pairs, layer=2, config=cfg, progress=False)
    b = train_reps(tiny_model_4l, pairs, layer=2, config=cfg, progress=False)
    assert a.equal(b)

    def stop(rec):
        if rec["epoch"] >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_reps_run(tiny_model_4l, pairs, layer=2, config=cfg, out_dir=tmp_path,
                     progress=False, on_step=stop)  # fmt: skip
    resumed = fit_reps_run(tiny_model_4l, pairs, layer=2, config=cfg, out_dir=tmp_path,
                           resume=True, progress=False)  # fmt: skip
    assert resumed.vector.equal(a)


def test_nan_guard_names_reps(tiny_model_4l, monkeypatch):
    import steerlab.vectors.bipo.reps as reps
    from steerlab.errors import TrainingError

    monkeypatch.setattr(
        reps, "reps_loss", lambda *a, **k: torch.tensor(math.nan, requires_grad=True)
    )
    with pytest.raises(TrainingError, match="RePS diverged"):
        fit_reps_run(tiny_model_4l, synthetic_pairs(4), layer=1,
                     config=RePSConfig(epochs=1), progress=False)  # fmt: skip


# --- registration: fit(), sweeps' train entry, the CLI ----------------------------------
def test_registered_method(tiny_model_4l):
    spec = METHODS.get("reps")
    assert spec.trains and "reps" in METHODS.names()
    vec = fit("reps", tiny_model_4l, synthetic_pairs(4), [1], epochs=1, warmup_steps=0,
              progress=False)  # fmt: skip
    assert vec.method == "reps" and vec.layers == (1,)
    # sweeps and calibrate pass one BiPOConfig to every training method
    run = spec.train(tiny_model_4l, synthetic_pairs(4), layer=1,
                     config=BiPOConfig(epochs=1, warmup_steps=0, beta=0.1), progress=False)  # fmt: skip
    hp = run.vector.provenance.hyperparameters
    assert run.vector.method == "reps" and hp["beta"] == 1.0 and hp["epochs"] == 1


def test_cli_train_reps(tiny_model_4l, tmp_path, monkeypatch):
    from steerlab.cli import _common, app

    monkeypatch.setattr(_common, "load_model", lambda name, device: tiny_model_4l)
    runner = CliRunner()
    help_out = runner.invoke(app, ["train", "reps", "--help"], env={"COLUMNS": "200"}).output
    assert "--weighting" in help_out and "--gamma" in help_out
    out = tmp_path / "reps"
    args = ["train", "reps", "--layer", "1", "--epochs", "1", "--n-train", "4", "--n-val",
            "2", "--warmup-steps", "0", "--out", str(out), "--model", "tiny"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == 0 and (out / "vector.safetensors").is_file()
    bad = runner.invoke(app, [*args[:2], "--weighting", "sum", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "weighting='sum'" in bad.output


def test_fast_equals_plain_on_embedded_model(embedded_model):
    from steerlab.data import load_pairs

    pairs = list(load_pairs("power-seeking").train)[:4]
    cfg = RePSConfig(epochs=1, batch_size=2, warmup_steps=0, lr=5e-2)
    run = fit_reps_run(embedded_model, pairs, layer=14, config=cfg, progress=False)
    v_plain, losses_plain = plain_reps(embedded_model, pairs, 14, cfg)
    assert [s["loss"] for s in run.steps] == pytest.approx(losses_plain, rel=1e-5, abs=1e-4)
    assert torch.allclose(run.vector.direction(14), v_plain.cpu(), atol=1e-4)
