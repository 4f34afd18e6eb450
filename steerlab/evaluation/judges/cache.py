"""An on-disk JSON cache with atomic writes, keyed by the sha256 of a canonical JSON value.

Used by the HTTP judge so that re-running an evaluation costs nothing: a hit sends no
request. One file per entry (``<root>/<key[:2]>/<key>.json``) so concurrent writers never
touch the same file, and every write goes through a temporary file plus ``os.replace`` so a
crash never leaves a half-written entry behind.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from steerlab.errors import JudgeError


def canonical_json(value: Any) -> str:
    """Serialize ``value`` deterministically (sorted keys, no spaces, unicode kept)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(value: Any) -> str:
    """sha256 hex digest of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


class JsonDiskCache:
    """Maps sha256 keys to JSON objects stored one per file under ``root``.

    A missing or unreadable entry is a miss (a corrupt file is overwritten on the next
    ``put``); the directory is created on the first write, not at construction.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise JudgeError(
                f"Cache directory {str(self.root)!r} exists and is not a directory; "
                "pass a directory path (or cache_dir=None to disable caching)."
            )

    def path_for(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise JudgeError(
                f"Cache key {key!r} is not a sha256 hex digest; build it with cache_key()."
            )
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path_for(key)
        try:
            with path.open(encoding="utf-8") as fh:
                value = json.load(fh)
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(canonical_json(value))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        if not self.root.is_dir():
            return 0
        return sum(1 for _ in self.root.glob("??/*.json"))
