"""``steerlab train bipo`` / ``steerlab train reps``: train a BiPO or RePS vector
(checkpointed, resumable; RePS is the same trainer with its own objective).

Both commands are built from one option list (:meth:`_Objective.command`): the options
they share, with each objective's own (``--beta``, RePS's ``--gamma`` ...) after ``--lr``.
"""

import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from steerlab.cli import _common
from steerlab.cli._config import options, with_signature
from steerlab.errors import ConfigError

train_app = _common.new_app("Train steering vectors.")

# Options both commands share (same flags, defaults and help).
BEHAVIOR = typer.Option("power-seeking", help="Behavior (see steerlab.data.list_behaviors()).")
N_TRAIN = _common.count_option(
    None, help="Fit on the first N training pairs (default: all but the --n-val after them)."
)
N_VAL = _common.count_option(
    50,
    help="Training pairs held out (the ones after those fitted on) for per-epoch validation "
    "and the choice of the best epoch; the test split is never used (0: no validation).",
    minimum=0,
)
BATCH_SIZE = _common.count_option(4, help="Pairs per step.")
WARMUP_STEPS = _common.count_option(100, help="Warm-up steps of the cosine schedule.", minimum=0)
SEED = typer.Option(0, help="Seed (same seed, same vector).")
BF16 = typer.Option(
    None,
    "--bf16/--no-bf16",
    help="bf16 autocast above the steering layer (default: on for CUDA GPUs with bf16, "
    "off on CPUs, so a CPU run gives the same vector to fp32 rounding on every CPU; on one "
    "with native bf16 --bf16 trains in 0.65-0.72x the time, measured on a Zen 4).",
)
RESUME = typer.Option(False, help="Resume from OUT/checkpoint.pt.")
PRESET = typer.Option(
    "default",
    help="'default' (the options' defaults) or 'reference': BiPO's reference code's settings "
    "(BiPOConfig.reference(): 20 epochs, no weight decay, gradient clipping 1.0, random "
    "batches, EOS scored); options given on the command line still apply.",
)
MODEL = typer.Option("embedded", help="'embedded', an HF id or a local dir.")
DEVICE = typer.Option(None, help="cpu / cuda.")


@dataclass(frozen=True)
class _Objective:
    """What ``train bipo`` and ``train reps`` do not share: the command name (also the
    default output directory ``runs/NAME``), the config class in
    :mod:`steerlab.vectors.bipo`, the docstring, a few help texts and the objective's
    own options (``name=(type, typer.Option(...))``, passed to the config as they are)."""

    name: str
    config: str
    doc: str
    label: str
    epochs_help: str
    lr_help: str
    direction_help: str
    own: dict[str, tuple[Any, Any]]

    def command(self) -> Any:
        def command(**kw: Any) -> None:
            _train(self, **kw)

        command.__name__, command.__doc__ = f"train_{self.name}_cmd", self.doc
        layer_help = f"Steering layer, or several comma-separated (multi-layer {self.label})."
        out = typer.Option(Path(f"runs/{self.name}"), help="Output directory.")
        ctx = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        return with_signature(
            command,
            [ctx]
            + options(
                behavior=(str, BEHAVIOR),
                layer=(str, typer.Option("14", help=layer_help)),
                epochs=(int, _common.count_option(3, help=self.epochs_help)),
                n_train=(int | None, N_TRAIN),
                n_val=(int, N_VAL),
                lr=(float, typer.Option(5e-4, help=self.lr_help)),
                **self.own,
                batch_size=(int, BATCH_SIZE),
                warmup_steps=(int, WARMUP_STEPS),
                direction=(str, typer.Option("bi", help=self.direction_help)),
                seed=(int, SEED),
                bf16=(bool | None, BF16),
                preset=(str, PRESET),
                resume=(bool, RESUME),
                model=(str, MODEL),
                device=(str | None, DEVICE),
                out=(Path, out),
            ),
        )


def _train(
    objective: _Objective,
    *,
    ctx: Any,  # click's context (typer passes it for the typer.Context parameter)
    behavior: str,
    layer: str,
    epochs: int,
    n_train: int | None,
    n_val: int,
    lr: float,
    batch_size: int,
    warmup_steps: int,
    direction: str,
    seed: int,
    bf16: bool | None,
    preset: str,
    resume: bool,
    model: str,
    device: str | None,
    out: Path,
    **own: Any,
) -> None:
    """Train with the objective's config built from the options (the best epoch is kept
    when there is validation), write ``summary.json`` and print it. With ``--preset
    reference`` the config is ``reference()`` and only the options given on the command
    line override it."""
    import steerlab.vectors.bipo as bipo
    from steerlab.data import load_pairs

    settings = {
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "warmup_steps": warmup_steps,
        "direction": direction,
        "seed": seed,
        "bf16": bf16,
        **own,
    }
    cls = getattr(bipo, objective.config)
    if preset not in ("default", "reference"):
        raise typer.BadParameter(f"--preset {preset!r}: use 'default' or 'reference'.")
    if preset == "reference":
        given = {
            k for k in settings if getattr(ctx.get_parameter_source(k), "name", "") != "DEFAULT"
        }
        settings = {k: v for k, v in settings.items() if k in given}
        build = cls.reference
    else:
        build = cls
    if "bf16" in settings:
        settings["autocast_bf16"] = settings.pop("bf16")
    cfg = build(select_best=n_val > 0, **settings)
    layers = _common.check_layers(model, _common.parse_layers(layer, "--layer"), "--layer")
    _common.check_out_dir(out)
    data = load_pairs(_common.check_behavior(behavior))
    train, val = fit_and_validation(data.train, n_train, n_val)
    m = _common.load_model(model, device)
    run = bipo.fit_bipo_run(
        m,
        train,
        layer=layers[0] if len(layers) == 1 else None,
        layers=layers if len(layers) > 1 else None,
        config=cfg,
        val_pairs=val or None,
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
        "strength_at_x1": _common.strength_at_x1(m, run.vector),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    typer.echo(json.dumps(summary, indent=2))


def fit_and_validation(
    pairs: Sequence[Any], n_train: int | None, n_val: int
) -> tuple[list[Any], list[Any]]:
    """(pairs to fit on, validation pairs), both from the training split: the first
    ``n_train`` (default: all but the last ``n_val``) and the ``n_val`` after them. The
    best epoch is chosen on the validation pairs, so they must not be test pairs that
    ``steerlab eval`` later reports on."""
    pairs = list(pairs)
    n_fit = len(pairs) - n_val if n_train is None else n_train
    if n_fit < 1 or n_fit + n_val > len(pairs):
        raise ConfigError(
            f"--n-train {n_train if n_train is not None else 'all'} and --n-val {n_val} need "
            f"{max(n_fit, 1) + n_val} training pairs; this behavior has {len(pairs)}. Lower "
            "--n-train or --n-val (validation pairs come from the training split)."
        )
    return pairs[:n_fit], pairs[n_fit : n_fit + n_val]


_BIPO = _Objective(
    name="bipo",
    config="BiPOConfig",
    doc="Train a BiPO vector; writes vector.safetensors, train_log.jsonl, checkpoint.pt.",
    label="BiPO",
    epochs_help="Epochs (paper: 20 for personas).",
    lr_help="AdamW learning rate (the paper's 5e-4 goes with 20 epochs; for short runs "
    "`steerlab calibrate` chooses the rate on validation pairs).",
    direction_help="'bi' (BiPO) or 'uni' (ablation: d=+1).",
    own={"beta": (float, typer.Option(0.1, help="BiPO beta."))},
)
_REPS = _Objective(
    name="reps",
    config="RePSConfig",
    doc="Train a RePS vector (the BiPO trainer, RePS objective); writes vector.safetensors, "
    "train_log.jsonl, checkpoint.pt.",
    label="RePS",
    epochs_help="Epochs (BiPO's paper: 20 for personas).",
    lr_help="AdamW learning rate (BiPO's default).",
    direction_help="'bi' (both directions) or 'uni' (d=+1 only).",
    own={
        "beta": (float, typer.Option(1.0, help="Scale of the length-normalised margin.")),
        "gamma": (float, typer.Option(0.0, help="Target margin inside the sigmoid.")),
        "weighting": (str, typer.Option(
            "reference", help="Preferred-answer weight: reference, reference_mean or none."
        )),
        "direction_sampling": (str, typer.Option(
            "both", help="'both' (each pair at +v and -v), 'per_step' or 'per_example'."
        )),
    },
)  # fmt: skip
train_app.command("bipo")(_BIPO.command())
train_app.command("reps")(_REPS.command())
