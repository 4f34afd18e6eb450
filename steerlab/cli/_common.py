"""What every command shares: the console, layer / multiplier parsing and model loading.

Commands call :func:`load_model` through this module (``_common.load_model``), so tests
can substitute an already loaded model in one place.
"""

from dataclasses import dataclass
from typing import Any

import typer


def console(stderr: bool = False) -> Any:
    """A rich console (stdout by default)."""
    from rich.console import Console

    return Console(stderr=stderr)


def parse_layers(text: str) -> list[int]:
    """``'10,12,14'`` -> ``[10, 12, 14]`` (duplicates dropped, order kept)."""
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            layer = int(part)
        except ValueError:
            raise typer.BadParameter(
                f"{part!r} in {text!r} is not a layer number; write e.g. --layers 10,12,14."
            ) from None
        if layer not in out:
            out.append(layer)
    if not out:
        raise typer.BadParameter(f"No layers in {text!r}; write e.g. --layers 10,12,14.")
    return out


def parse_multipliers(text: str) -> list[float]:
    """``'-2,-1,0,1,2'`` -> ``[-2.0, -1.0, 0.0, 1.0, 2.0]``."""
    out: list[float] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise typer.BadParameter(
                f"{part!r} in {text!r} is not a number; write e.g. --multipliers=-2,-1,0,1,2."
            ) from None
    if not out:
        raise typer.BadParameter(f"No multipliers in {text!r}; write e.g. --multipliers=-1,0,1.")
    return out


def load_model(name: str, device: str | None) -> Any:
    """The model the commands use (one place, so tests can substitute a loaded one)."""
    import steerlab as sl

    return sl.load_model(name, device=device)


def fail(exc: Exception) -> "typer.Exit":
    """Print a steerlab error (its message names the value and the fix) and exit 1."""
    console().print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=1)


@dataclass(frozen=True)
class RunSettings:
    """What every command shares (recorded in the summaries).

    behavior: a registered behavior (``steerlab.data.list_behaviors()``).
    model / device: what :func:`steerlab.load_model` loads, and where.
    batch_size: sequences per forward pass.
    seed: seed of the A/B letter order built from free-form pairs.
    progress: show progress bars.
    """

    behavior: str = "power-seeking"
    model: str = "embedded"
    device: str | None = None
    batch_size: int = 16
    seed: int = 0
    progress: bool = True


BEHAVIOR = typer.Option(
    "power-seeking", "--behavior", "-b",
    help="Behavior (steerlab.data.list_behaviors(): power-seeking, wealth-seeking...).",
)  # fmt: skip
MODEL = typer.Option("embedded", help="'embedded', a Hugging Face id or a local dir.")
DEVICE = typer.Option(None, help="cpu / cuda; default: cuda if available.")
BATCH = typer.Option(16, min=1, help="Sequences per forward pass.")
SEED = typer.Option(0, help="Seed of the A/B letter order built from free-form pairs.")
PROGRESS = typer.Option(True, help="Show progress bars.")
