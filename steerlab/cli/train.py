"""``steerlab train bipo`` / ``steerlab train reps``: train a BiPO or RePS vector
(checkpointed, resumable; RePS is the same trainer with its own objective)."""

import json
from pathlib import Path
from typing import Any

import typer

from steerlab.cli import _common

train_app = _common.new_app("Train steering vectors.")

# Options the BiPO and RePS commands share (same flags, defaults and help).
BEHAVIOR = typer.Option("power-seeking", help="Behavior (see steerlab.data.list_behaviors()).")
N_TRAIN = _common.count_option(None, help="Use the first N training pairs (default all).")
N_VAL = _common.count_option(
    50, help="Held-out pairs for per-epoch validation (0: no validation).", minimum=0
)
BATCH_SIZE = _common.count_option(4, help="Pairs per step.")
WARMUP_STEPS = _common.count_option(100, help="Warm-up steps of the cosine schedule.", minimum=0)
SEED = typer.Option(0, help="Seed (same seed, same vector).")
BF16 = typer.Option(False, help="bf16 autocast above the steering layer.")
RESUME = typer.Option(False, help="Resume from OUT/checkpoint.pt.")
MODEL = typer.Option("embedded", help="'embedded', an HF id or a local dir.")
DEVICE = typer.Option(None, help="cpu / cuda.")


@train_app.command("bipo")
def train_bipo_cmd(
    behavior: str = BEHAVIOR,
    layer: str = typer.Option(
        "14", help="Steering layer, or several comma-separated (multi-layer BiPO)."
    ),
    epochs: int = _common.count_option(3, help="Epochs (paper: 20 for personas)."),
    n_train: int | None = N_TRAIN,
    n_val: int = N_VAL,
    lr: float = typer.Option(5e-4, help="AdamW learning rate."),
    beta: float = typer.Option(0.1, help="BiPO beta."),
    batch_size: int = BATCH_SIZE,
    warmup_steps: int = WARMUP_STEPS,
    direction: str = typer.Option("bi", help="'bi' (BiPO) or 'uni' (ablation: d=+1)."),
    seed: int = SEED,
    bf16: bool = BF16,
    resume: bool = RESUME,
    model: str = MODEL,
    device: str | None = DEVICE,
    out: Path = typer.Option(Path("runs/bipo"), help="Output directory."),
) -> None:
    """Train a BiPO vector; writes vector.safetensors, train_log.jsonl, checkpoint.pt."""
    from steerlab.vectors.bipo import BiPOConfig

    cfg = _config(BiPOConfig, epochs, lr, batch_size, warmup_steps, direction, seed, bf16, n_val,
                  beta=beta)  # fmt: skip
    _fit_and_summarise(cfg, behavior, layer, n_train, n_val, resume, model, device, out)


def _config(
    cls: Any,
    epochs: int,
    lr: float,
    batch_size: int,
    warmup_steps: int,
    direction: str,
    seed: int,
    bf16: bool,
    n_val: int,
    **own: Any,
) -> Any:
    """A ``cls`` (BiPOConfig or RePSConfig) from the options both commands share, plus
    the objective's ``own`` settings; the best epoch is kept when there is validation."""
    return cls(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        warmup_steps=warmup_steps,
        direction=direction,
        seed=seed,
        autocast_bf16=bf16,
        select_best=n_val > 0,
        **own,
    )


def _fit_and_summarise(
    cfg: Any,
    behavior: str,
    layer: str,
    n_train: int | None,
    n_val: int,
    resume: bool,
    model: str,
    device: str | None,
    out: Path,
) -> None:
    """Train with ``cfg`` (BiPO or RePS), write ``summary.json`` and print it."""
    from steerlab.data import load_pairs
    from steerlab.vectors.bipo import fit_bipo_run

    layers = _common.check_layers(model, _common.parse_layers(layer, "--layer"), "--layer")
    _common.check_out_dir(out)
    data = load_pairs(_common.check_behavior(behavior))
    train = data.train[:n_train] if n_train else data.train
    val = data.test[:n_val] if n_val else None
    m = _common.load_model(model, device)
    run = fit_bipo_run(
        m,
        train,
        layer=layers[0] if len(layers) == 1 else None,
        layers=layers if len(layers) > 1 else None,
        config=cfg,
        val_pairs=val,
        out_dir=out,
        resume=resume,
        behavior=behavior,
    )
    summary = {
        "vector": str(out / "vector.safetensors"),
        "seconds": run.seconds,
        "cache_seconds": run.cache_seconds,
        "cache_mb": run.cache_bytes / 2**20,
        "best_epoch": run.best_epoch,
        "epochs": run.epochs,
        "norms": {str(k): v for k, v in run.vector.norms().items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    typer.echo(json.dumps(summary, indent=2))


@train_app.command("reps")
def train_reps_cmd(
    behavior: str = BEHAVIOR,
    layer: str = typer.Option(
        "14", help="Steering layer, or several comma-separated (multi-layer RePS)."
    ),
    epochs: int = _common.count_option(3, help="Epochs (BiPO's paper: 20 for personas)."),
    n_train: int | None = N_TRAIN,
    n_val: int = N_VAL,
    lr: float = typer.Option(5e-4, help="AdamW learning rate (BiPO's default)."),
    beta: float = typer.Option(1.0, help="Scale of the length-normalised margin."),
    gamma: float = typer.Option(0.0, help="Target margin inside the sigmoid."),
    weighting: str = typer.Option(
        "reference", help="Preferred-answer weight: reference, reference_mean or none."
    ),
    direction_sampling: str = typer.Option(
        "both", help="'both' (each pair at +v and -v), 'per_step' or 'per_example'."
    ),
    batch_size: int = BATCH_SIZE,
    warmup_steps: int = WARMUP_STEPS,
    direction: str = typer.Option("bi", help="'bi' (both directions) or 'uni' (d=+1 only)."),
    seed: int = SEED,
    bf16: bool = BF16,
    resume: bool = RESUME,
    model: str = MODEL,
    device: str | None = DEVICE,
    out: Path = typer.Option(Path("runs/reps"), help="Output directory."),
) -> None:
    """Train a RePS vector (the BiPO trainer, RePS objective); writes vector.safetensors,
    train_log.jsonl, checkpoint.pt."""
    from steerlab.vectors.bipo import RePSConfig

    cfg = _config(RePSConfig, epochs, lr, batch_size, warmup_steps, direction, seed, bf16, n_val,
                  beta=beta, gamma=gamma, weighting=weighting,
                  direction_sampling=direction_sampling)  # fmt: skip
    _fit_and_summarise(cfg, behavior, layer, n_train, n_val, resume, model, device, out)
