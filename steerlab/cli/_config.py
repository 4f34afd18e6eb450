"""Command-line options generated from a config dataclass (``steerlab run``, ``sweep``).

One ``--flag`` per field, its help text from the field's ``help`` metadata or the
``name: text`` line of the class docstring, ``None`` default (= not given, the
dataclass default applies), so a new setting appears on the command line by itself.
:func:`options` writes shared option lists once for commands built alike (``eval ab`` and
``eval likelihood``, ``train bipo`` and ``train reps``); :func:`extend` adds such a list
to a command written as a function (the judge options of ``eval open``).
"""

import inspect
import re
import typing
from dataclasses import MISSING, fields
from typing import Any

import typer


def _option_type(tp: Any) -> Any:
    """The CLI type of a config field: tuples become comma-separated strings."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args and typing.get_origin(tp) is not tuple and len(args) == 1:
        tp = args[0]  # X | None -> X
    if typing.get_origin(tp) is tuple or tp is tuple:
        return str | None
    for base in (bool, int, float):
        if tp is base:
            return base | None
    return str | None


def _flag(name: str, tp: Any) -> list[str]:
    dash = "--" + name.replace("_", "-")
    return [f"{dash}/--no-{dash[2:]}"] if _option_type(tp) == bool | None else [dash]


def config_options(cls: Any, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per dataclass field, ``None`` default (= not given)."""
    params = []
    for f in fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not MISSING else None
        shown = (
            ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in default)
            if isinstance(default, tuple)
            else default
        )
        help_text = f.metadata.get("help") or _doc_of(cls, f.name)
        opt = typer.Option(None, *_flag(f.name, f.type), help=help_text,
                           show_default=str(shown) if shown is not None else False)  # fmt: skip
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=_option_type(f.type)
            )
        )
    return params


def options(**spec: tuple[Any, Any]) -> list[inspect.Parameter]:
    """Keyword parameters typer reads as options, in the order given:
    ``name=(type, typer.Option(...))``; how commands that share options build theirs."""
    return [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=tp)
        for name, (tp, opt) in spec.items()
    ]


def extend(func: Any, *, before: str | None = None, **spec: tuple[Any, Any]) -> Any:
    """``func`` as a typer command with more options: its own parameters (all but
    ``**kwargs``, which receives the added ones) and the :func:`options` of ``spec``
    inserted before the parameter ``before`` (None: at the end)."""
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(func).parameters.values()
        if p.kind != p.VAR_KEYWORD
    ]
    at = next((i for i, p in enumerate(own) if p.name == before), len(own))
    return with_signature(func, [*own[:at], *options(**spec), *own[at:]])


def _doc_of(cls: Any, name: str) -> str:
    """The ``name: text`` entry of a dataclass docstring (how SweepConfig documents
    fields): its first line and the more-indented lines that continue it, joined, with
    Sphinx roles and literals reduced to plain text for the terminal."""
    lines = (cls.__doc__ or "").splitlines()
    for i, line in enumerate(lines):
        text = line.strip()
        if not text.startswith(f"{name}:"):
            continue
        indent = len(line) - len(line.lstrip())
        parts = [text.split(":", 1)[1].strip()]
        for more in lines[i + 1 :]:
            if not more.strip() or len(more) - len(more.lstrip()) <= indent:
                break
            parts.append(more.strip())
        return _plain(" ".join(parts))
    return ""


def _plain(text: str) -> str:
    """``:func:`~a.b.c``` -> ``c``, ``:data:`a.b``` -> ``a.b``, double backquotes dropped."""
    text = re.sub(r":\w+:`~[\w.]*?(\w+)`", r"\1", text)
    text = re.sub(r":\w+:`([^`]+)`", r"\1", text)
    return text.replace("``", "")


def with_signature(func: Any, params: list[inspect.Parameter]) -> Any:
    """A new function calling ``func(**kwargs)`` whose signature typer reads as ``params``."""

    def command(**kwargs: Any) -> None:
        func(**kwargs)

    command.__name__, command.__doc__ = func.__name__, func.__doc__
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


__all__ = ["config_options", "extend", "options", "with_signature"]
