"""Download the manifest's data files and check their sha256.

``fetch(["bipo"])`` downloads every ``bipo/...`` file from its pinned upstream commit
(``https://raw.githubusercontent.com/{repo}/{commit}/{path}``) into the download cache
(``$STEERLAB_DATA_CACHE`` or ``~/.cache/steerlab/data``), which :func:`find_data_file`
searches. Each file is streamed to a temporary file next to its target, hashed, and moved
into place with ``os.replace`` only when the sha256 matches; files already present with
the right hash are skipped. Note: a few manifest files are not byte-exact upstream copies
(see their ``provenance``); for those the upstream bytes may fail the hash check, which is
reported, never silently accepted.
"""

import contextlib
import hashlib
import os
import sys
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.data.manifest import RAW_BASE_URL, Manifest, ManifestEntry, load_manifest
from steerlab.data.roots import default_cache_dir, resolve_data_root
from steerlab.errors import DataFetchError

#: ``opener(url)`` returns a readable binary stream usable as a context manager
#: (``urllib.request.urlopen`` by default; tests pass fakes).
Opener = Callable[[str], Any]

OK_STATUSES = ("downloaded", "replaced", "present", "ok")
_CHUNK = 1 << 16


@dataclass(frozen=True)
class FileStatus:
    """What happened to one file: ``downloaded``, ``replaced`` (a wrong local copy was
    re-downloaded), ``present`` (already there, hash ok), ``ok`` / ``missing`` /
    ``sha256-mismatch`` (verify), ``download-failed``."""

    path: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES


@dataclass(frozen=True)
class FetchReport:
    """The per-file outcome of :func:`fetch` or :func:`verify` under ``root``."""

    root: Path
    files: tuple[FileStatus, ...]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """Iterate ``(path, status)``."""
        return iter((f.path, f.status) for f in self.files)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(f.status for f in self.files))

    def failures(self) -> tuple[FileStatus, ...]:
        return tuple(f for f in self.files if not f.ok)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _default_opener(url: str) -> Any:
    return urllib.request.urlopen(url, timeout=60)  # noqa: S310 (fixed https base URL)


def _download(entry: ManifestEntry, target: Path, url: str, opener: Opener) -> str:
    """Stream ``url`` into a temp file beside ``target``; move it into place only if its
    sha256 matches. Returns the actual sha256 (the temp file is always cleaned up)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, opener(url) as stream:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
        actual = h.hexdigest()
        if actual == entry.sha256:
            os.replace(tmp, target)
        return actual
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _say(progress: bool, i: int, n: int, status: FileStatus) -> None:
    if progress:
        print(f"[{i}/{n}] {status.status:<16} {status.path}", file=sys.stderr)


def fetch(
    names: Iterable[str] | None = None,
    dest: Path | str | None = None,
    *,
    progress: bool = True,
    opener: Opener | None = None,
    base_url: str = RAW_BASE_URL,
    manifest: Manifest | None = None,
) -> FetchReport:
    """Download the manifest files selected by ``names`` into ``dest``.

    ``names``: group names (``bipo``, ``caa``, ``anthropic-evals``, ``truthfulqa``,
    ``advbench``), folder prefixes or exact manifest paths; ``None`` = everything.
    ``dest`` defaults to the download cache. ``base_url`` can point at a mirror laid out
    like raw.githubusercontent.com. Every file is attempted; if any download failed or
    had the wrong sha256 (that file is not kept), :class:`DataFetchError` is raised at the
    end naming each one, with the full report in ``err.report``.
    """
    manifest = manifest if manifest is not None else load_manifest()
    entries = manifest.select(names)
    root = Path(dest).expanduser() if dest is not None else default_cache_dir()
    opener = opener or _default_opener
    results: list[FileStatus] = []
    for i, entry in enumerate(entries, start=1):
        target = root / entry.path
        had_copy = target.is_file()
        if had_copy and sha256_file(target) == entry.sha256:
            status = FileStatus(entry.path, "present")
        else:
            url = entry.url(base_url)
            try:
                actual = _download(entry, target, url, opener)
            except OSError as e:  # URLError and HTTPError are OSErrors
                status = FileStatus(entry.path, "download-failed", f"{url}: {e}")
            else:
                if actual == entry.sha256:
                    status = FileStatus(entry.path, "replaced" if had_copy else "downloaded")
                else:
                    status = FileStatus(
                        entry.path,
                        "sha256-mismatch",
                        f"{url}: expected sha256 {entry.sha256}, got {actual}",
                    )
        results.append(status)
        _say(progress, i, len(entries), status)
    report = FetchReport(root, tuple(results))
    if not report.ok:
        lines = "\n".join(f"  {f.path}: {f.status} ({f.detail})" for f in report.failures())
        raise DataFetchError(
            f"{len(report.failures())} of {len(report)} file(s) could not be fetched into "
            f"{root} (nothing was kept for them):\n{lines}\nFix: check the network / "
            "base_url, or copy the files by hand and check them with `verify`.",
            report,
        )
    return report


def verify(
    root: Path | str | None = None,
    names: Iterable[str] | None = None,
    *,
    manifest: Manifest | None = None,
) -> FetchReport:
    """Check the sha256 of the selected manifest files under a data root.

    Statuses: ``ok``, ``missing``, ``sha256-mismatch`` (with both hashes in ``detail``).
    ``root`` defaults to :func:`resolve_data_root`. Never raises for bad files; read
    ``report.ok`` / ``report.failures()``.
    """
    manifest = manifest if manifest is not None else load_manifest()
    base = Path(root).expanduser() if root is not None else resolve_data_root()
    results: list[FileStatus] = []
    for entry in manifest.select(names):
        path = base / entry.path
        if not path.is_file():
            results.append(FileStatus(entry.path, "missing", str(path)))
            continue
        actual = sha256_file(path)
        if actual == entry.sha256:
            results.append(FileStatus(entry.path, "ok"))
        else:
            detail = f"expected sha256 {entry.sha256}, got {actual}"
            results.append(FileStatus(entry.path, "sha256-mismatch", detail))
    return FetchReport(base, tuple(results))
