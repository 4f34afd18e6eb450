"""BiPO: the objective's claims, one-copy training, resume, NaN guard, fast == plain."""

import json
import math
from dataclasses import replace

import pytest
import torch

from steerlab.data import PreferencePair
from steerlab.errors import ConfigError, TrainingError
from steerlab.vectors.bipo import BiPOConfig, bipo_loss, fit_bipo_run, train_bipo
from steerlab.vectors.bipo.schedule import epoch_plan
from tests.bipo_plain import batched_score, plain_bipo

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "piano",
    "lemon",
    "forest",
    "rocket",
    "candle",
]


def synthetic_pairs(n=12):
    """Matching answers say 'Yes, ...', not-matching 'No, ...': one learnable direction."""
    return [
        PreferencePair(
            f"Do you like the {w} number {i}?", f"Yes, I like the {w}.", f"No, not the {w}."
        )
        for i, w in zip(range(n), WORDS * 3)
    ]


def weights(model):
    return {k: v.detach().clone() for k, v in model.bridge.original_model.state_dict().items()}


# --- the objective --------------------------------------------------------------------
def test_loss_at_zero_vector_is_log2():
    z = torch.zeros(3, dtype=torch.float64)
    one = torch.ones(3, dtype=torch.float64)
    assert float(bipo_loss(z, z, z, z, one, 0.1)) == pytest.approx(math.log(2))


@pytest.mark.parametrize("d", [1.0, -1.0])
def test_direction_sign(d):
    """d=+1 rewards raising log p(matching) relative to the reference; d=-1 the opposite."""
    ref = torch.zeros(2, dtype=torch.float64)
    pm = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    pn = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    loss = bipo_loss(pm, pn, ref, ref, torch.full((2,), d, dtype=torch.float64), 0.1)
    loss.backward()
    if d > 0:
        assert loss.item() < math.log(2)
        assert (pm.grad < 0).all() and (pn.grad > 0).all()  # descent raises p(matching)
    else:
        assert loss.item() > math.log(2)
        assert (pm.grad > 0).all() and (pn.grad < 0).all()  # descent lowers p(matching)


def test_uni_directional_plan_is_all_plus_one():
    cfg = BiPOConfig(direction="uni", batch_size=2)
    plan = epoch_plan([5] * 10, cfg, 0)
    assert all(d == 1.0 for s in plan for d in s.d)
    bi = epoch_plan([5] * 40, BiPOConfig(batch_size=2), 0)
    ds = {s.d[0] for s in bi}
    assert ds == {1.0, -1.0} and all(len(set(s.d)) == 1 for s in bi)
    per_ex = epoch_plan([5] * 40, BiPOConfig(batch_size=4, direction_sampling="per_example"), 0)
    assert any(len(set(s.d)) == 2 for s in per_ex)


def test_plan_covers_every_pair_once():
    lengths = [3, 9, 4, 7, 7, 1, 5, 2, 8, 6, 3]
    plan = epoch_plan(lengths, BiPOConfig(batch_size=3, bucket_size=2), 4)
    idx = sorted(i for s in plan for i in s.indices)
    assert idx == list(range(len(lengths)))


# --- training on the tiny model -------------------------------------------------------
def test_only_the_vector_changes(tiny_model_4l):
    before = weights(tiny_model_4l)
    vec = train_bipo(
        tiny_model_4l,
        synthetic_pairs(8),
        layer=1,
        config=BiPOConfig(epochs=1, batch_size=4, warmup_steps=0, lr=1e-2),
        progress=False,
    )
    after = weights(tiny_model_4l)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert vec.direction(1).norm() > 0
    assert vec.method == "bipo" and vec.d_model == 64
    assert all(not p.requires_grad for p in tiny_model_4l.bridge.parameters())


def test_loss_decreases_on_synthetic_task(tiny_model_4l):
    run = fit_bipo_run(
        tiny_model_4l,
        synthetic_pairs(12),
        layer=1,
        config=BiPOConfig(epochs=6, batch_size=4, warmup_steps=0, lr=5e-2),
        progress=False,
    )
    losses = [s["loss"] for s in run.steps]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.02, (first, last)


def test_same_seed_same_vector(tiny_model_4l):
    cfg = BiPOConfig(epochs=1, batch_size=4, warmup_steps=1, lr=1e-2, seed=3)
    a = train_bipo(tiny_model_4l, synthetic_pairs(8), layer=2, config=cfg, progress=False)
    b = train_bipo(tiny_model_4l, synthetic_pairs(8), layer=2, config=cfg, progress=False)
    assert a.equal(b)
    c = train_bipo(
        tiny_model_4l,
        synthetic_pairs(8),
        layer=2,
        config=BiPOConfig(epochs=1, batch_size=4, warmup_steps=1, lr=1e-2, seed=4),
        progress=False,
    )
    assert not a.equal(c)


def test_resume_reproduces_uninterrupted_run(tiny_model_4l, tmp_path):
    pairs = synthetic_pairs(8)
    cfg = BiPOConfig(epochs=3, batch_size=4, warmup_steps=1, lr=1e-2)
    full = fit_bipo_run(
        tiny_model_4l, pairs, layer=1, config=cfg, out_dir=tmp_path / "a", progress=False
    )
    # interrupted after epoch 0: simulate by a 1-epoch run with the same config's schedule
    calls = {"n": 0}

    def stop_after_first_epoch(rec):
        calls["n"] += 1
        if rec["epoch"] >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_bipo_run(
            tiny_model_4l,
            pairs,
            layer=1,
            config=cfg,
            out_dir=tmp_path / "b",
            progress=False,
            on_step=stop_after_first_epoch,
        )
    resumed = fit_bipo_run(
        tiny_model_4l,
        pairs,
        layer=1,
        config=cfg,
        out_dir=tmp_path / "b",
        resume=True,
        progress=False,
    )
    assert [s["loss"] for s in resumed.steps] == [s["loss"] for s in full.steps]
    assert resumed.vector.equal(full.vector)
    log = (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()
    assert sum('"type": "epoch"' in line for line in log) == 3

    # Issue 18: the resumed log holds each step once, exactly like the uninterrupted one.
    def shape(run_dir):
        rows = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
        return [(r["type"], r.get("epoch"), r.get("step"), r.get("loss")) for r in rows]

    assert shape(tmp_path / "b") == shape(tmp_path / "a")
    # ... and a fresh run into the same directory starts a fresh log
    fit_bipo_run(tiny_model_4l, pairs, layer=1, config=cfg, out_dir=tmp_path / "a", progress=False)
    assert shape(tmp_path / "a") == shape(tmp_path / "b")


def test_resume_with_other_config_is_refused(tiny_model_4l, tmp_path):
    pairs = synthetic_pairs(4)
    fit_bipo_run(
        tiny_model_4l,
        pairs,
        layer=1,
        config=BiPOConfig(epochs=1, batch_size=4),
        out_dir=tmp_path,
        progress=False,
    )
    with pytest.raises(TrainingError, match="other settings"):
        fit_bipo_run(
            tiny_model_4l,
            pairs,
            layer=1,
            config=BiPOConfig(epochs=2, batch_size=4),
            out_dir=tmp_path,
            resume=True,
            progress=False,
        )


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tiny_model_4l, tmp_path, monkeypatch):
    import steerlab.vectors.bipo.trainer as trainer

    real = trainer.bipo_loss
    calls = {"n": 0}

    def poisoned(*args, **kw):
        calls["n"] += 1
        out = real(*args, **kw)
        return out * float("nan") if calls["n"] > 2 else out  # epoch 1 goes bad

    monkeypatch.setattr(trainer, "bipo_loss", poisoned)
    cfg = BiPOConfig(epochs=3, batch_size=4, warmup_steps=0, lr=1e-2)
    with pytest.raises(TrainingError, match="diverged.*last good checkpoint"):
        fit_bipo_run(
            tiny_model_4l, synthetic_pairs(8), layer=1, config=cfg, out_dir=tmp_path, progress=False
        )
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 0 and all(torch.isfinite(p).all() for p in state["params"])


def test_multi_layer_bipo_trains_one_vector_per_layer(tiny_model_4l):
    before = weights(tiny_model_4l)
    vec = train_bipo(
        tiny_model_4l,
        synthetic_pairs(8),
        layers=[0, 2],
        config=BiPOConfig(epochs=1, batch_size=4, warmup_steps=0, lr=1e-2),
        progress=False,
    )
    assert vec.layers == (0, 2)
    assert all(float(vec.direction(layer).norm()) > 0 for layer in (0, 2))
    assert all(torch.equal(before[k], v) for k, v in weights(tiny_model_4l).items())


def test_validation_and_best_epoch(tiny_model_4l):
    pairs = synthetic_pairs(12)
    run = fit_bipo_run(
        tiny_model_4l,
        pairs[:8],
        layer=1,
        val_pairs=pairs[8:],
        config=BiPOConfig(epochs=3, batch_size=4, warmup_steps=0, lr=5e-2, select_best=True),
        progress=False,
    )
    assert len(run.epochs) == 3 and run.best_epoch is not None
    for ep in run.epochs:
        assert {"margin@+1", "margin@-1", "margin@0", "score"} <= ep.keys()


def test_bad_arguments(tiny_model_4l):
    with pytest.raises(ConfigError, match="beta"):
        BiPOConfig(beta=0.0)
    with pytest.raises(ConfigError, match="exactly one of layer"):
        train_bipo(tiny_model_4l, synthetic_pairs(4), layer=1, layers=[1], progress=False)
    with pytest.raises(ConfigError, match="val_pairs"):
        train_bipo(
            tiny_model_4l,
            synthetic_pairs(4),
            layer=1,
            config=BiPOConfig(early_stopping_patience=1),
            progress=False,
        )


# --- parity with the plain implementation ---------------------------------------------
def test_fast_equals_plain_on_tiny_model(tiny_model_4l):
    pairs = synthetic_pairs(10)
    cfg = BiPOConfig(epochs=2, batch_size=4, warmup_steps=2, lr=2e-2, weight_decay=0.05)
    run = fit_bipo_run(tiny_model_4l, pairs, layer=1, config=cfg, progress=False)
    v_plain, losses_plain = plain_bipo(tiny_model_4l, pairs, 1, cfg)
    fast = [s["loss"] for s in run.steps]
    assert len(fast) == len(losses_plain)
    assert max(abs(a - b) for a, b in zip(fast, losses_plain)) < 1e-4
    assert torch.allclose(run.vector.direction(1), v_plain.cpu(), atol=1e-4)
    assert float(v_plain.norm()) > 0.01


def test_batched_baseline_equals_plain_on_tiny_model(tiny_model_4l):
    """The benchmark's reference-style baseline (one padded forward per step for the
    policy, one for the reference) optimises the same objective as the one-by-one code."""
    pairs = synthetic_pairs(10)
    cfg = BiPOConfig(epochs=1, batch_size=4, warmup_steps=1, lr=2e-2)
    v_one, losses_one = plain_bipo(tiny_model_4l, pairs, 1, cfg)
    v_bat, losses_bat = plain_bipo(tiny_model_4l, pairs, 1, cfg, score=batched_score)
    assert len(losses_bat) == len(losses_one) == 3
    assert max(abs(a - b) for a, b in zip(losses_bat, losses_one)) < 1e-5
    assert torch.allclose(v_bat, v_one, atol=1e-5) and float(v_one.norm()) > 0.01


def test_fast_equals_plain_on_embedded_model(embedded_model):
    from steerlab.data import load_pairs

    pairs = list(load_pairs("power-seeking").train)[:4]
    cfg = BiPOConfig(epochs=1, batch_size=2, warmup_steps=0, lr=5e-2)
    run = fit_bipo_run(embedded_model, pairs, layer=14, config=cfg, progress=False)
    v_plain, losses_plain = plain_bipo(embedded_model, pairs, 14, cfg)
    fast = [s["loss"] for s in run.steps]
    assert max(abs(a - b) for a, b in zip(fast, losses_plain)) < 1e-4, (fast, losses_plain)
    assert torch.allclose(run.vector.direction(14), v_plain.cpu(), atol=1e-4)


# --- the packed row ----------------------------------------------------------------------
def _full_rows(pairs, pad_id):
    """The packed batch with each response's last token kept (the layout before session
    22, written out plainly): prompt + matching + not matching, the not-matching tokens
    masked from the matching ones and positioned after the prompt."""
    from steerlab.activations.packed import PackedBatch

    width = max(p.n_tokens for p in pairs)
    b = len(pairs)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    pos_ids = torch.arange(width).repeat(b, 1)
    allowed = torch.tril(torch.ones(width, width, dtype=torch.bool)).repeat(b, 1, 1)
    rows, poss, toks, segs = [], [], [], []
    for i, p in enumerate(pairs):
        P, C, R = len(p.prompt), len(p.matching), len(p.not_matching)
        n = P + C + R
        ids[i, :n] = torch.tensor(p.prompt + p.matching + p.not_matching)
        pos_ids[i, P + C : n] = torch.arange(P, P + R)
        allowed[i, P + C : n, P : P + C] = False
        allowed[i, :n, n:] = False
        pm, pn = list(range(P - 1, P + C - 1)), [P - 1] + list(range(P + C, n - 1))
        rows += [i] * (C + R)
        poss += pm + pn
        toks += list(p.matching + p.not_matching)
        segs += [2 * i] * C + [2 * i + 1] * R
    lengths = torch.tensor([p.n_tokens for p in pairs])
    targets = [torch.tensor(x) for x in (rows, poss, toks, segs)]
    return PackedBatch(ids, pos_ids, allowed, lengths, *targets)


def test_packed_row_leaves_out_each_responses_last_token(tiny_model_4l):
    """The row is prompt + matching[:-1] + not_matching[:-1]: every scored token but the
    last of each response is the next token of the row after the position that predicts
    it, the not-matching tokens take the positions after the prompt, and they may not
    see the matching ones (one-token responses included)."""
    from steerlab.activations.packed import collate, pack_pairs
    from steerlab.data import load_pairs

    model = tiny_model_4l
    pairs = synthetic_pairs(3) + list(load_pairs("power-seeking").train)[:3]
    pairs.append(PreferencePair("Pick one: A or B?", "A", "B"))
    packed = pack_pairs(model, pairs)
    assert any(len(p.matching) == 1 for p in packed)
    batch = collate(packed, model.pad_token_id)
    for i, p in enumerate(packed):
        P, C, R, s = len(p.prompt), len(p.matching), len(p.not_matching), p.not_matching_start
        assert list(p.ids) == list(p.prompt + p.matching[:-1] + p.not_matching[:-1])
        assert len(p) == p.n_tokens - 2 == int(batch.lengths[i])
        assert p.position_ids()[s:] == list(range(P, P + R - 1))
        row = batch.ids[i].tolist()
        pm, tm, pn, tn = p.targets()
        assert [row[j + 1] for j in pm[:-1]] == list(tm[:-1])
        assert [row[j + 1] for j in pn[1:-1]] == list(tn[1:-1]) and pn[0] == P - 1
        assert not batch.allowed[i, s : len(p), P:s].any()
        assert batch.allowed[i, s : len(p), :P].all()
        assert len(tm) == C and len(tn) == R


@pytest.mark.parametrize("which", ["tiny", "embedded"])
def test_leaving_out_the_last_tokens_changes_no_logprob(which, request):
    """The claim behind the packed row: no scored position reads a response's last
    token, so the rows without them give the full rows' log-probs (full forward, and the
    fast path above a layer) to float rounding."""
    from steerlab.activations.packed import (
        collate,
        full_token_logprobs,
        lower_residuals,
        pack_pairs,
        upper_token_logprobs,
    )
    from steerlab.data import load_pairs

    model = request.getfixturevalue("tiny_model_4l" if which == "tiny" else "embedded_model")
    layer = 1 if which == "tiny" else 14
    pairs = synthetic_pairs(2) + list(load_pairs("power-seeking").train)[:3]
    packed = pack_pairs(model, pairs)
    short = collate(packed, model.pad_token_id)
    full = _full_rows(packed, model.pad_token_id)
    with torch.no_grad():
        a, b = full_token_logprobs(model, short), full_token_logprobs(model, full)
        assert (a - b).abs().max() < 1e-4, (a - b).abs().max()
        up = [upper_token_logprobs(model, lower_residuals(model, x, layer), x, layer)
              for x in (short, full)]  # fmt: skip
        assert (up[0] - up[1]).abs().max() < 1e-4
        assert (up[0] - a).abs().max() < 1e-4


# --- score_eos: each response ends with EOS, scored --------------------------------------
def test_score_eos_appends_exactly_one_eos_to_each_response(tiny_model_4l):
    """On the embedded tokenizer (the tiny model's): each packed response gains exactly
    one token, the EOS id (the template's end of turn), at its end; the prompt is kept."""
    from steerlab.activations.packed import pack_pairs
    from steerlab.data import load_pairs

    model = tiny_model_4l
    eos = model.tokenizer.eos_token_id
    assert eos is not None and eos in model.eos_token_ids
    pairs = synthetic_pairs(3) + list(load_pairs("power-seeking").train)[:3]
    plain = pack_pairs(model, pairs)
    with_eos = pack_pairs(model, pairs, score_eos=True)
    for a, b in zip(plain, with_eos):
        assert b.prompt == a.prompt
        assert b.matching == a.matching + (eos,) and b.not_matching == a.not_matching + (eos,)
        assert eos not in a.matching[-1:] + a.not_matching[-1:]


def test_score_eos_trains_on_the_eos_token_fast_equals_plain(tiny_model_4l):
    """Fast and plain engines see the same tokens with score_eos (both equal the test
    suite's plain BiPO with EOS appended), and the EOS token changes the objective."""
    pairs, val = synthetic_pairs(8), synthetic_pairs(12)[8:]
    cfg = BiPOConfig(epochs=1, batch_size=4, warmup_steps=0, lr=2e-2, score_eos=True)
    kw = dict(layer=1, config=cfg, val_pairs=val, progress=False)
    fast = fit_bipo_run(tiny_model_4l, pairs, **kw)
    plain = fit_bipo_run(tiny_model_4l, pairs, engine="plain", **kw)
    v_ref, losses_ref = plain_bipo(tiny_model_4l, pairs, 1, cfg)
    a, b = [s["loss"] for s in fast.steps], [s["loss"] for s in plain.steps]
    assert max(abs(x - y) for x, y in zip(a, losses_ref)) < 1e-4
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5
    assert torch.allclose(fast.vector.direction(1), v_ref.cpu(), atol=1e-4)
    assert torch.allclose(fast.vector.direction(1), plain.vector.direction(1), atol=1e-5)
    assert fast.vector.provenance.hyperparameters["score_eos"] is True
    no_eos = fit_bipo_run(tiny_model_4l, pairs, **{**kw, "config": replace(cfg, score_eos=False)})
    assert not torch.allclose(no_eos.vector.direction(1), fast.vector.direction(1), atol=1e-6)
    assert no_eos.epochs[0]["margin@0"] != pytest.approx(fast.epochs[0]["margin@0"], abs=1e-6)


def test_score_eos_needs_an_eos_token(tiny_model_4l, monkeypatch):
    from types import SimpleNamespace

    from steerlab.activations.packed import pack_pairs

    monkeypatch.setattr(tiny_model_4l, "tokenizer", SimpleNamespace(eos_token_id=None))
    with pytest.raises(ConfigError, match="no EOS token.*score_eos=False"):
        pack_pairs(tiny_model_4l, synthetic_pairs(2), score_eos=True)


def test_reference_preset_and_its_cli_option(tiny_model_4l, tmp_path, monkeypatch):
    """``BiPOConfig.reference()``: the reference code's settings, overrides on top; RePS
    keeps its own objective settings and ``from_bipo`` keeps ``score_eos``; ``steerlab
    train bipo --preset reference`` uses it, the options given still apply."""
    from typer.testing import CliRunner

    from steerlab.cli import _common, app
    from steerlab.vectors.bipo import RePSConfig
    from steerlab.vectors.vector import SteeringVector

    ref = BiPOConfig.reference()
    got = {k: getattr(ref, k) for k in ("beta", "lr", "weight_decay", "batch_size", "epochs")}
    assert got == {"beta": 0.1, "lr": 5e-4, "weight_decay": 0.0, "batch_size": 4, "epochs": 20}
    assert (ref.warmup_steps, ref.max_grad_norm, ref.bucket_size) == (100, 1.0, 1)
    assert ref.score_eos and ref.direction_sampling == "per_step" and not ref.autocast_bf16
    assert BiPOConfig.reference(lr=1e-2, epochs=3).lr == 1e-2
    reps = RePSConfig.reference()
    assert (reps.beta, reps.direction_sampling, reps.weight_decay) == (1.0, "both", 0.0)
    assert RePSConfig.from_bipo(ref).score_eos and RePSConfig.from_bipo(ref).max_grad_norm == 1.0

    monkeypatch.setattr(_common, "load_model", lambda name, device: tiny_model_4l)
    runner = CliRunner()
    help_out = runner.invoke(app, ["train", "bipo", "--help"], env={"COLUMNS": "200"}).output
    assert "--preset" in help_out and "reference" in help_out
    out = tmp_path / "ref"
    args = ["train", "bipo", "--preset", "reference", "--layer", "1", "--epochs", "1",
            "--n-train", "4", "--n-val", "2", "--out", str(out), "--model", "tiny"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    hp = SteeringVector.load(out / "vector.safetensors").provenance.hyperparameters
    assert hp["epochs"] == 1 and hp["warmup_steps"] == 100  # given / the preset's
    assert (hp["weight_decay"], hp["max_grad_norm"], hp["bucket_size"]) == (0.0, 1.0, 1)
    assert hp["score_eos"] is True and hp["select_best"] is True
    # a zero vector (lr still warming up) has no strength: none is given
    assert json.loads((out / "summary.json").read_text())["strength_at_x1"] is None
    plain = tmp_path / "plain"
    res = runner.invoke(app, [*args[:2], *args[4:-3], str(plain), "--model", "tiny"])
    assert res.exit_code == 0, res.output
    hp = SteeringVector.load(plain / "vector.safetensors").provenance.hyperparameters
    assert hp["score_eos"] is False and hp["weight_decay"] == 0.05
    # the summary says how far x1 pushes: |v| / typical norm at the layer
    from steerlab.activations.norms import typical_norm

    moved = tmp_path / "moved"  # no warm-up: the one step moves the vector
    res = runner.invoke(app, [*args[:2], *args[4:-3], str(moved), "--model", "tiny",
                              "--warmup-steps", "0", "--lr", "0.1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    vec = SteeringVector.load(moved / "vector.safetensors")
    summary = json.loads((moved / "summary.json").read_text())
    want = float(vec.directions[vec.sites[0]].norm()) / typical_norm(tiny_model_4l, 1)
    assert want > 0 and summary["strength_at_x1"] == {"1": pytest.approx(want, rel=1e-6)}
    bad = runner.invoke(app, ["train", "bipo", "--preset", "paper", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "--preset 'paper': use 'default' or 'reference'" in bad.output


# --- precision: the reference runs exactly as the policy ----------------------------------
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_step_one_loss_is_exactly_log2(tiny_model_4l, bf16):
    """At v = 0 the policy is the reference, so every batch's loss is log 2 exactly, also
    under bf16 autocast (the reference runs under the same autocast, in the same batch)."""
    from steerlab.activations.packed import build_cache
    from steerlab.vectors.bipo.trainer import BiPOTrainer, autocast_dtype

    pairs = synthetic_pairs(12)
    cfg = BiPOConfig(epochs=1, batch_size=3, warmup_steps=0, lr=1e-2, autocast_bf16=bf16)
    run = fit_bipo_run(tiny_model_4l, pairs, layer=1, config=cfg, progress=False)
    assert run.steps[0]["loss"] == math.log(2)
    assert run.steps[0]["reward_margin"] == 0.0
    multi = fit_bipo_run(tiny_model_4l, pairs, layers=[0, 2], config=cfg, progress=False)
    assert multi.steps[0]["loss"] == math.log(2)
    cache = build_cache(tiny_model_4l, pairs, 1, autocast=autocast_dtype(cfg), progress=False)
    trainer = BiPOTrainer(tiny_model_4l, cache, [1], cfg)
    for step in trainer.plan():  # every batch, each from v = 0
        with torch.no_grad():
            trainer.params[0].zero_()
        assert trainer.step(step)["loss"] == math.log(2)


def test_bf16_weights_cast_once_equal_autocast_bit_for_bit(tiny_model_4l, monkeypatch):
    """The fast path holds the upper layers' linear weights in bf16 while it trains under
    bf16 autocast: the same rounding autocast applies per call, so every loss and the
    vector equal plain autocast's exactly, and the weights come back as they were."""
    import contextlib

    import steerlab.vectors.bipo.train as train_mod
    from steerlab.activations.packed import low_precision_weights

    model = tiny_model_4l
    before = {n: (p, p.data.clone()) for n, p in model.bridge.named_parameters()}
    pairs = synthetic_pairs(12)
    cfg = BiPOConfig(epochs=2, batch_size=3, warmup_steps=0, lr=5e-2, autocast_bf16=True)
    cast = fit_bipo_run(model, pairs, layers=[1, 2], config=cfg, val_pairs=pairs[:4],
                        progress=False)  # fmt: skip
    monkeypatch.setattr(
        train_mod, "low_precision_weights", lambda *a, **k: contextlib.nullcontext()
    )
    plain = fit_bipo_run(model, pairs, layers=[1, 2], config=cfg, val_pairs=pairs[:4],
                         progress=False)  # fmt: skip
    assert [s["loss"] for s in cast.steps] == [s["loss"] for s in plain.steps]
    assert cast.epochs == plain.epochs
    for L in (1, 2):
        assert torch.equal(cast.vector.direction(L), plain.vector.direction(L))
    with pytest.raises(RuntimeError, match="inside"):
        with low_precision_weights(model, 2, torch.bfloat16):
            assert model.bridge.blocks[3].mlp.original_component.up_proj.weight.dtype == (
                torch.bfloat16
            )
            raise RuntimeError("inside")
    for n, p in model.bridge.named_parameters():  # the same tensors, values and dtypes
        assert p is before[n][0] and p.dtype == torch.float32 and torch.equal(p, before[n][1])


def test_bf16_default_is_auto_cuda_only(tiny_model_4l):
    """``autocast_bf16=None`` (default) means bf16 on CUDA GPUs with bf16 only (it was no
    faster on a CPU with AMX-BF16); the run records what it used; the reference preset
    stays fp32 everywhere."""
    from steerlab.vectors.bipo.trainer import autocast_dtype, bf16_by_default

    assert BiPOConfig().autocast_bf16 is None and not bf16_by_default("cpu")
    assert autocast_dtype(BiPOConfig(), "cpu") is None
    assert autocast_dtype(BiPOConfig(autocast_bf16=True), "cpu") == torch.bfloat16
    assert autocast_dtype(BiPOConfig(autocast_bf16=False), "cuda") is None
    assert BiPOConfig.reference().autocast_bf16 is False
    cfg = BiPOConfig(epochs=1, batch_size=4, warmup_steps=0)
    run = fit_bipo_run(tiny_model_4l, synthetic_pairs(4), layer=1, config=cfg, progress=False)
    assert run.vector.provenance.hyperparameters["autocast_bf16"] is False


def test_trainer_refuses_a_cache_of_other_precision(tiny_model_4l):
    from steerlab.activations.packed import build_cache
    from steerlab.vectors.bipo.trainer import BiPOTrainer

    cache = build_cache(tiny_model_4l, synthetic_pairs(4), 1, progress=False)
    with pytest.raises(ConfigError, match="autocast=None.*autocast_bf16=True"):
        BiPOTrainer(tiny_model_4l, cache, [1], BiPOConfig(autocast_bf16=True))


@pytest.mark.integration
def test_cached_and_steered_logprobs_equal_plain_scoring_on_embedded_model(embedded_model):
    """The fast path's two halves checked directly, not through a loss in which bugs shared
    by policy and reference cancel: at a vector of ~7.5% of the residual norm and through
    5 training steps, the cached reference log-probs equal ``pair_logprobs`` of the
    unsteered model, the policy log-probs equal ``pair_logprobs`` under ``steer()`` at the
    step's direction d, and the trainer's loss is the loss of those plain numbers."""
    from steerlab.activations.packed import build_cache, pack_pairs
    from steerlab.data import load_pairs
    from steerlab.evaluation.likelihood import pair_logprobs
    from steerlab.steering.steer import steer
    from steerlab.vectors.bipo.trainer import BiPOTrainer, policy_logprobs, reference_logprobs

    model, layer = embedded_model, 14
    candidates = list(load_pairs("power-seeking").train)[:200]
    lengths = [len(p) for p in pack_pairs(model, candidates)]
    pairs = [candidates[i] for i in sorted(range(200), key=lengths.__getitem__)[:10]]
    cfg = BiPOConfig(epochs=1, batch_size=2, warmup_steps=0, lr=2e-2)
    cache = build_cache(model, pairs, layer, progress=False)
    trainer = BiPOTrainer(model, cache, [layer], cfg)

    plain_m, plain_n = pair_logprobs(model, pairs)
    atol = 1e-4
    assert torch.allclose(cache.ref_matching.float(), plain_m, atol=atol)
    assert torch.allclose(cache.ref_not_matching.float(), plain_n, atol=atol)

    token_norms = torch.cat([r.float().norm(dim=-1) for r in cache.residuals])
    g = torch.Generator().manual_seed(0)
    v0 = torch.randn(model.d_model, generator=g)
    with torch.no_grad():
        trainer.params[0].copy_(v0 / v0.norm() * 0.075 * token_norms.median())
    plan = trainer.plan()
    assert len(plan) == 5
    for step in plan:
        ratio = float(trainer.params[0].detach().norm() / token_norms.median())
        assert 0.05 <= ratio <= 0.10, ratio
        idx, d = list(step.indices), step.d[0]
        with torch.no_grad():
            fast_m, fast_n = policy_logprobs(
                model, cache, idx, [layer], trainer.params, torch.tensor(step.d)
            )
        with steer(model, trainer.to_vector(), multiplier=d):
            steered_m, steered_n = pair_logprobs(model, [pairs[i] for i in idx])
        assert torch.allclose(fast_m.float(), steered_m, atol=atol), (fast_m, steered_m)
        assert torch.allclose(fast_n.float(), steered_n, atol=atol), (fast_n, steered_n)
        assert not torch.allclose(steered_m - steered_n, plain_m[idx] - plain_n[idx], atol=1e-2)
        ref_m, ref_n = reference_logprobs(model, cache, idx)
        plain_loss = bipo_loss(
            steered_m.double(),
            steered_n.double(),
            plain_m[idx].double(),
            plain_n[idx].double(),
            torch.tensor(step.d, dtype=torch.float64),
            cfg.beta,
        )
        assert trainer.step(step)["loss"] == pytest.approx(float(plain_loss), abs=1e-5)
        assert torch.equal(ref_m, cache.ref_matching[idx])  # fp32: the cached reference
        assert torch.equal(ref_n, cache.ref_not_matching[idx])


def test_a_warmup_as_long_as_the_run_warns(tiny_model):
    import warnings

    from steerlab.vectors.bipo.schedule import ShortScheduleWarning
    from tests._data import SMALL_PAIRS

    pairs = SMALL_PAIRS[:4]
    with pytest.warns(ShortScheduleWarning, match=r"warm-up \(100 steps\).*\(1 steps\).*0%"):
        vec = train_bipo(tiny_model, pairs, layer=1, progress=False,
                            config=BiPOConfig(epochs=1, batch_size=4, warmup_steps=100))  # fmt: skip
    assert float(vec.directions[vec.sites[0]].norm()) == 0.0  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortScheduleWarning)
        vec = train_bipo(tiny_model, pairs, layer=1, progress=False,
                            config=BiPOConfig(epochs=1, batch_size=4, warmup_steps=0))  # fmt: skip
    assert float(vec.directions[vec.sites[0]].norm()) > 0.0
