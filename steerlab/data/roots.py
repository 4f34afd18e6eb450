"""Where data files live: an explicit root, ``$STEERLAB_DATA``, then the download cache.

Files are addressed by their MANIFEST path relative to a root, e.g.
``bipo/data/power-seeking/train.csv``. Nothing is read from the environment at import
time; every call looks again.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from steerlab.errors import DataNotFoundError

DATA_ENV = "STEERLAB_DATA"
CACHE_ENV = "STEERLAB_DATA_CACHE"


@dataclass(frozen=True)
class DataRoot:
    """A directory that may hold data files, and why it was searched."""

    path: Path
    origin: str  # "explicit root", "$STEERLAB_DATA", "download cache"


def default_cache_dir() -> Path:
    """``$STEERLAB_DATA_CACHE`` or ``~/.cache/steerlab/data`` (where ``fetch`` writes)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steerlab" / "data"


def candidate_roots(root: Path | str | None = None) -> tuple[DataRoot, ...]:
    """The roots searched, in order: ``root``, ``$STEERLAB_DATA``, the download cache."""
    out: list[DataRoot] = []
    if root is not None:
        out.append(DataRoot(Path(root).expanduser(), "explicit root"))
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        out.append(DataRoot(Path(env).expanduser(), f"${DATA_ENV}"))
    out.append(DataRoot(default_cache_dir(), f"download cache (${CACHE_ENV})"))
    return tuple(out)


def _fix(relpath: str | None) -> str:
    group = relpath.strip("/").split("/", 1)[0] if relpath else "NAME"
    return (
        f"Fix: set {DATA_ENV}=/path/to/data (a folder laid out like MANIFEST.tsv) "
        f"or run `steerlab data fetch {group}`."
    )


def _looked_in(roots: tuple[DataRoot, ...]) -> str:
    return "; ".join(f"{r.path} ({r.origin})" for r in roots)


def resolve_data_root(root: Path | str | None = None) -> Path:
    """The first existing directory among :func:`candidate_roots`."""
    roots = candidate_roots(root)
    for r in roots:
        if r.path.is_dir():
            return r.path
    raise DataNotFoundError(
        f"No data directory found. Looked in: {_looked_in(roots)}. {_fix(None)}"
    )


def find_data_file(relpath: str, root: Path | str | None = None) -> Path:
    """The first ``<root>/<relpath>`` that exists, searching :func:`candidate_roots`."""
    rel = Path(relpath)
    if rel.is_absolute() or ".." in rel.parts:
        raise DataNotFoundError(
            f"Data path {relpath!r} must be relative to a data root without '..', like "
            "'bipo/data/power-seeking/train.csv'."
        )
    roots = candidate_roots(root)
    for r in roots:
        candidate = r.path / rel
        if candidate.is_file():
            return candidate
    raise DataNotFoundError(
        f"Data file {relpath!r} not found. Looked in: {_looked_in(roots)}. {_fix(relpath)}"
    )
