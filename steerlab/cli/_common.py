"""What every command shares: the error handler, the console, layer / multiplier
parsing, checks of output paths and layers that run before any expensive work, and
model loading.

Commands call :func:`load_model` through this module (``_common.load_model``), so tests
can substitute an already loaded model (or a loader that fails) in one place.
"""

import json
import os
import select
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from steerlab.errors import OutputPathError, SteerlabError

try:  # typer >= 0.2x vendors its own click
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover - older typer on the click package
    from click import exceptions as _click_errors  # type: ignore[no-redef]

_UsageError: Any = _click_errors.UsageError
_NoArgsIsHelp: Any = getattr(_click_errors, "NoArgsIsHelpError", ())

# --- the one error handler ------------------------------------------------------------------


def one_line(text: str) -> str:
    """``text`` with its whitespace (newlines included) collapsed to single spaces."""
    return " ".join(str(text).split())


def _exit_with(message: str) -> NoReturn:
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code=1)


def pipe_reader_gone(fd: int) -> bool:
    """True when ``fd`` is a pipe whose reading end has been closed (``steerlab ... |
    head`` after ``head`` exited). False where that cannot be told (no ``poll``)."""
    if not hasattr(select, "poll"):  # pragma: no cover - Windows
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _stdout_gone() -> bool:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests capture it)
        return False
    return pipe_reader_gone(fd)


def _quiet_exit() -> NoReturn:
    """Stop without a message: the reader of stdout has gone, as after ``| head``. Later
    writes (Python flushes stdout at exit) go to /dev/null instead of failing again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file: nothing to flush into
        pass
    raise typer.Exit(code=1)


def _given_value(exc: Any, args: list[str]) -> str | None:
    """The command-line text given to the option ``exc`` is about, if any."""
    opts = getattr(getattr(exc, "param", None), "opts", None) or []
    for i, arg in enumerate(args):
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(opt + "="):
                return arg[len(opt) + 1 :]
    return None


def _usage_message(exc: Any, args: list[str]) -> str:
    text = exc.format_message().rstrip()
    value = _given_value(exc, args)
    if value is not None and repr(value) not in text and f" {value} " not in f" {text} ":
        text = text.rstrip(".") + f" (got {value!r})"
    text += "" if text.endswith((".", "!", "?")) else "."
    if exc.ctx is not None:
        text += f" See '{exc.ctx.command_path} --help'."
    return text


class CliGroup(TyperGroup):
    """A command group whose sub-commands never print a traceback for a user mistake.

    A :class:`~steerlab.errors.SteerlabError` (its message names the value and the fix),
    a bad parameter (click's usage errors: wrong type, out of range, unknown option) or
    an ``OSError`` on a user's path becomes one line ``error: ...`` on stderr and exit
    code 1. Running with no arguments still shows the help.
    """

    def make_context(self, info_name: Any, args: list[str], parent: Any = None, **kw: Any) -> Any:
        if parent is not None:  # a sub-group: its parent's invoke reports the error
            return super().make_context(info_name, args, parent=parent, **kw)
        try:
            return super().make_context(info_name, args, parent=parent, **kw)
        except _NoArgsIsHelp:
            raise
        except _UsageError as exc:  # options of the top-level command itself
            _exit_with(_usage_message(exc, list(args)))

    def invoke(self, ctx: Any) -> Any:
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except _NoArgsIsHelp:
            raise
        except _UsageError as exc:
            _exit_with(_usage_message(exc, args))
        except SteerlabError as exc:
            _exit_with(str(exc))
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) and _stdout_gone():
                _quiet_exit()
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            _exit_with(f"{exc.strerror or exc}{where}")


def new_app(help: str, **kwargs: Any) -> typer.Typer:
    """A typer app (command group) that reports errors through :class:`CliGroup`."""
    kwargs.setdefault("no_args_is_help", True)
    return typer.Typer(cls=CliGroup, help=help, **kwargs)


#: Columns of the printed tables when the output is a file or a pipe and COLUMNS is not
#: set (rich would take 80 and fold every vector label and CI in logs).
LOG_WIDTH = 120


def console(stderr: bool = False) -> Any:
    """A rich console (stdout by default); :data:`LOG_WIDTH` wide when writing to a file or
    a pipe without COLUMNS set, else as wide as the terminal (or COLUMNS)."""
    import os
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    piped = not (getattr(stream, "isatty", lambda: False)() or os.environ.get("COLUMNS"))
    return Console(stderr=stderr, width=LOG_WIDTH if piped else None)


# --- parsing --------------------------------------------------------------------------------


def parse_layers(text: str, flag: str = "--layers") -> list[int]:
    """``'10,12,14'`` -> ``[10, 12, 14]`` (duplicates dropped, order kept)."""
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            layer = int(part)
        except ValueError:
            raise typer.BadParameter(
                f"{part!r} in {text!r} is not a layer number; write e.g. {flag} 10,12,14."
            ) from None
        if layer not in out:
            out.append(layer)
    if not out:
        raise typer.BadParameter(f"No layers in {text!r}; write e.g. {flag} 10,12,14.")
    return out


def parse_multipliers(text: str, flag: str = "--multipliers") -> list[float]:
    """``'-2,-1,0,1,2'`` -> ``[-2.0, -1.0, 0.0, 1.0, 2.0]`` (``flag`` names the option in
    errors, e.g. ``--strengths``)."""
    out: list[float] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise typer.BadParameter(
                f"{part!r} in {text!r} is not a number; write e.g. {flag}=-1,0,0.5,1."
            ) from None
    if not out:
        raise typer.BadParameter(f"No numbers in {text!r}; write e.g. {flag}=-1,0,1.")
    return out


def strength_list(multipliers: str | None, strengths: str | None,
                   vector: list[Path] | None) -> list[float] | None:  # fmt: skip
    """The parsed ``--strengths`` (None without them); errors for both flags or no vector."""
    if strengths is None:
        return None
    if multipliers is not None:
        raise typer.BadParameter(
            "Pass --multipliers or --strengths, not both (strengths are |k v| / mean "
            "||h|| at the vector's site, e.g. --strengths=-0.1,0,0.1)."
        )
    values = parse_multipliers(strengths, flag="--strengths")
    if not vector:
        raise typer.BadParameter("--strengths scales vectors: give at least one --vector.")
    return values


def count_option(
    default: int | None,
    *decls: str,
    help: str,
    minimum: int = 1,
    maximum: int | None = None,
    what: str = "count",
) -> Any:
    """A typer option holding a count: values below ``minimum`` (or above ``maximum``)
    are refused, never read as "all" or sliced from the end; ``None`` (leaving the
    option out) means all where the default is None."""

    def check(value: int | None) -> int | None:
        if value is None:
            return value
        if value < minimum or (maximum is not None and value > maximum):
            valid = f"{minimum} or more" if maximum is None else f"{minimum}..{maximum}"
            all_hint = " (leave it out for all)" if default is None else ""
            raise typer.BadParameter(f"{value} is not a valid {what}; use {valid}{all_hint}.")
        return value

    return typer.Option(default, *decls, help=help, callback=check)


def parse_names(text: str) -> list[str]:
    """``'caa, pca'`` -> ``['caa', 'pca']``."""
    return [x.strip() for x in text.split(",") if x.strip()]


# --- checks before any expensive work -------------------------------------------------------


def _nearest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")


def _probe_writable(folder: Path, flag: str, path: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputPathError(
            f"{flag} {path}: cannot write in {folder} ({exc.strerror or exc}); "
            "choose a writable location."
        ) from None


def _check_parent(path: Path, flag: str) -> None:
    anc = _nearest_existing(path.parent)
    if not anc.is_dir():
        raise OutputPathError(
            f"{flag} {path}: {anc} is a file, so nothing can be created under it; "
            "choose another path."
        )
    _probe_writable(anc, flag, path)


def check_out_dir(path: Path | str, flag: str = "--out") -> Path:
    """``path`` if it is (or can be created as) a writable directory, else OutputPathError.
    Creates nothing."""
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise OutputPathError(
                f"{flag} {path}: is a file, but a directory is needed; "
                "give a directory path (or move the file away)."
            )
        _probe_writable(path, flag, path)
        return path
    _check_parent(path, flag)
    return path


def check_out_file(path: Path | str, flag: str = "--out") -> Path:
    """``path`` if it is (or can be created as) a writable file, else OutputPathError.
    Creates nothing."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputPathError(
            f"{flag} {path}: is a directory, but a file is needed; "
            f"give a file path such as {path / 'results.csv'}."
        )
    _check_parent(path, flag)
    return path


def model_layers(name: str) -> int | None:
    """The layer count of model ``name`` read from its ``config.json`` without loading
    weights; None when it is not on disk (the loaded model checks the layers then)."""
    from steerlab.models.embedded import embedded_cache_dir
    from steerlab.models.loading import EMBEDDED_NAMES

    config: Path | None = None
    if name in EMBEDDED_NAMES:
        config = embedded_cache_dir() / "config.json"
    elif Path(name).expanduser().is_dir():
        config = Path(name).expanduser() / "config.json"
    elif name.count("/") == 1:
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(name, "config.json")
            config = Path(hit) if isinstance(hit, str) else None
        except Exception:  # noqa: BLE001 - only a shortcut; the load checks again
            config = None
    try:
        cfg = json.loads(config.read_text()) if config is not None else {}
    except (OSError, ValueError):
        return None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    return None


def check_layers(model: str, layers: list[int], flag: str = "--layers") -> list[int]:
    """``layers`` checked against the model's layer count (read cheaply, see
    :func:`model_layers`); HookSiteError naming the flag and the valid range."""
    from steerlab.errors import HookSiteError
    from steerlab.models.sites import HookSite

    n = model_layers(model)
    if n is not None:
        for layer in layers:
            try:
                HookSite(layer).resolve(n)
            except HookSiteError as exc:
                raise HookSiteError(f"{flag} {layer}: {exc}") from None
    return layers


def check_behavior(behavior: str) -> str:
    """``behavior`` if registered, else UnknownNameError listing the valid ones."""
    from steerlab.data import list_behaviors
    from steerlab.errors import unknown_name

    if behavior not in list_behaviors():
        raise unknown_name("behavior", behavior, list_behaviors())
    return behavior


def load_vectors(paths: list[Path] | None) -> Any:
    """The vector files (VectorFileError names a missing or bad one); None for none."""
    from steerlab.vectors.vector import SteeringVector

    return [SteeringVector.load(p) for p in paths] if paths else None


def load_model(name: str, device: str | None) -> Any:
    """The model the commands use (one place, so tests can substitute a loaded one)."""
    import steerlab as sl

    return sl.load_model(name, device=device)


def strength_at_x1(model: Any, vector: Any) -> dict[str, float] | None:
    """Per layer, the strength of multiplier 1 (``|v| / mean ||h||`` at the site): how
    far the vector as saved pushes. None (and nothing printed) when the typical norms
    cannot be measured (no neutral texts) or a site is not ``resid_post``."""
    from steerlab.steering.strength import site_strengths, vector_norms

    if any(s.kind != "resid_post" for s in vector.sites):
        return None
    try:
        values = site_strengths(vector, 1.0, vector_norms(model, vector))
    except (SteerlabError, OSError):
        return None
    return {str(site.layer): value for site, value in values.items()}


def check_vectors(model: Any, vectors: Any, force_other_model: bool = False) -> None:
    """Refuse (OtherModelError) a vector whose provenance names another model unless
    ``force_other_model`` (``--force-other-model``); wrong hidden sizes always fail."""
    for vec in vectors or ():
        vec.check_model(
            model.d_model,
            model.n_layers,
            model.model_id,
            other_model="allow" if force_other_model else "error",
        )


def load_steered(
    vector: list[Path] | None, model: str, device: str | None, force_other_model: bool = False
) -> tuple[Any, Any]:
    """``(model, vectors)`` for a steering command: the vector files first (a bad one fails
    before the model loads), then the model, then :func:`check_vectors`."""
    vecs = load_vectors(vector)
    m = load_model(model, device)
    check_vectors(m, vecs, force_other_model)
    return m, vecs


# --- settings shared by several commands ----------------------------------------------------


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
    force_other_model: bool = False


BEHAVIOR = typer.Option(
    "power-seeking", "--behavior", "-b",
    help="Behavior (steerlab.data.list_behaviors(): power-seeking, wealth-seeking...).",
)  # fmt: skip
MODEL = typer.Option("embedded", help="'embedded', a Hugging Face id or a local dir.")
EXECUTOR = typer.Option(
    "serial", help="Where the cells run: 'serial' (this process) or 'ray' (Ray workers)."
)
RAY_ADDRESS = typer.Option(
    None, help="Ray cluster to use with --executor ray (default: start a local one)."
)
RAY_WORKERS = typer.Option(2, help="Ray workers (model copies) with --executor ray.")
DEVICE = typer.Option(None, help="cpu / cuda; default: cuda if available.")
BATCH = count_option(16, help="Sequences per forward pass.")
SEED = typer.Option(0, help="Seed of the A/B letter order built from free-form pairs.")
PROGRESS = typer.Option(True, help="Show progress bars.")
FORCE_OTHER = typer.Option(
    False,
    "--force-other-model",
    help="Apply vectors whose provenance names another model (same hidden size).",
)
STRENGTHS = typer.Option(
    None,
    help="Instead of multipliers, strengths |k v| / mean ||h|| at each vector's site "
    "(matched norm: compare vectors this way), e.g. --strengths=-0.1,-0.05,0,0.05,0.1; "
    "0 is added.",
)
N_NEUTRAL = count_option(
    16,
    "--n-neutral",
    help="Neutral texts on which the KL damage of every vector and multiplier is measured "
    "(a KL column; 0 skips it).",
    minimum=0,
)
VECTOR = typer.Option(
    None, "--vector", "-v", help="A vector file (repeat for several); none: the unsteered model."
)
