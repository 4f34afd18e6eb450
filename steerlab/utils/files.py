"""Files written whole or not at all (a temporary file in the same directory + rename)."""

import os
import tempfile
from pathlib import Path

from steerlab.errors import OutputPathError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory + rename.

    A ``path`` that is a directory, a parent that is a file, or an unwritable directory
    raises :class:`~steerlab.errors.OutputPathError` naming ``path`` (never the temporary
    file's name)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(
            f"Cannot write {str(path)!r}: it is a directory. Pass a file path, e.g. "
            f"{str(path / 'vector.safetensors')!r}."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise OutputPathError(
            f"Cannot write {str(path)!r}: {exc.strerror or exc} for its directory "
            f"{str(path.parent)!r}. Pass a path in a writable directory."
        ) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


__all__ = ["atomic_write_bytes", "atomic_write_text"]
