"""The data manifest: every known data file, its upstream source and its sha256.

``steerlab/data/MANIFEST.tsv`` (shipped with the package, metadata only) has the columns
``path, source_repo, source_path, source_commit, license, bytes, sha256, rows,
provenance``. ``path`` is relative to a data root; the first path component is the
group (``bipo``, ``caa``, ``anthropic-evals``, ``truthfulqa``, ``advbench``).
"""

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from steerlab.errors import DataFormatError, unknown_name

COLUMNS = (
    "path",
    "source_repo",
    "source_path",
    "source_commit",
    "license",
    "bytes",
    "sha256",
    "rows",
    "provenance",
)
RAW_BASE_URL = "https://raw.githubusercontent.com"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")


@dataclass(frozen=True)
class ManifestEntry:
    """One data file: where it lives under a root and where it came from."""

    path: str
    source_repo: str
    source_path: str
    source_commit: str
    license: str
    bytes: int
    sha256: str
    rows: int | None
    provenance: str = ""

    def __post_init__(self) -> None:
        if not self.path or self.path.startswith("/") or ".." in self.path.split("/"):
            raise DataFormatError(f"Manifest path {self.path!r} must be relative, without '..'.")
        if not _HEX64.match(self.sha256):
            raise DataFormatError(
                f"Manifest entry {self.path!r}: sha256 {self.sha256!r} is not 64 lowercase hex."
            )
        if not _COMMIT.match(self.source_commit):
            raise DataFormatError(
                f"Manifest entry {self.path!r}: source_commit {self.source_commit!r} is not a "
                "git commit hash."
            )
        if self.bytes < 0 or (self.rows is not None and self.rows < 0):
            raise DataFormatError(f"Manifest entry {self.path!r}: negative bytes or rows.")

    @property
    def group(self) -> str:
        """The first path component, e.g. ``'bipo'``."""
        return self.path.split("/", 1)[0]

    def url(self, base_url: str = RAW_BASE_URL) -> str:
        """``{base_url}/{source_repo}/{source_commit}/{source_path}``."""
        return f"{base_url.rstrip('/')}/{self.source_repo}/{self.source_commit}/{self.source_path}"


@dataclass(frozen=True)
class Manifest:
    """All manifest entries, in file order."""

    entries: tuple[ManifestEntry, ...]
    source: str = ""

    def __iter__(self) -> Iterator[ManifestEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.group for e in self.entries))

    def get(self, path: str) -> ManifestEntry:
        for e in self.entries:
            if e.path == path:
                return e
        raise unknown_name("manifest path", path, [e.path for e in self.entries])

    def select(self, names: Iterable[str] | None = None) -> tuple[ManifestEntry, ...]:
        """Entries matching group names (``'bipo'``), folder prefixes
        (``'bipo/data/jailbreak'``) or exact paths; ``None`` selects everything."""
        if names is None:
            return self.entries
        wanted = [names] if isinstance(names, str) else list(names)
        out: dict[str, ManifestEntry] = {}
        for name in wanted:
            prefix = name.strip("/")
            hits = [e for e in self.entries if e.path == prefix or e.path.startswith(prefix + "/")]
            if not hits:
                raise unknown_name("data group or path", name, self.groups)
            out.update((e.path, e) for e in hits)
        return tuple(out.values())


def _int_field(value: str, column: str, where: str, optional: bool = False) -> int | None:
    if optional and value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise DataFormatError(f"{where}: {column} is {value!r}; expected an integer.") from None


def parse_manifest(text: str, source: str = "MANIFEST.tsv") -> Manifest:
    """Parse the TSV text of a manifest (errors name ``source`` and the line)."""
    reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None or tuple(header) != COLUMNS:
        raise DataFormatError(
            f"{source}:1: header is {header!r}; expected the columns {', '.join(COLUMNS)}."
        )
    entries: list[ManifestEntry] = []
    for row in reader:
        at = f"{source}:{reader.line_num}"
        if len(row) != len(COLUMNS):
            raise DataFormatError(
                f"{at}: expected {len(COLUMNS)} tab-separated fields, got {len(row)}."
            )
        f = dict(zip(COLUMNS, row, strict=True))
        try:
            entries.append(
                ManifestEntry(
                    path=f["path"],
                    source_repo=f["source_repo"],
                    source_path=f["source_path"],
                    source_commit=f["source_commit"],
                    license=f["license"],
                    bytes=_int_field(f["bytes"], "bytes", at) or 0,
                    sha256=f["sha256"],
                    rows=_int_field(f["rows"], "rows", at, optional=True),
                    provenance=f["provenance"],
                )
            )
        except DataFormatError as e:
            raise DataFormatError(f"{at}: {e}") from None
    return Manifest(tuple(entries), source)


def load_manifest(path: Path | str | None = None) -> Manifest:
    """The manifest shipped with steerlab, or the TSV file at ``path``."""
    if path is None:
        resource = resources.files("steerlab.data").joinpath("MANIFEST.tsv")
        return parse_manifest(resource.read_text(encoding="utf-8"), "steerlab/data/MANIFEST.tsv")
    path = Path(path)
    return parse_manifest(path.read_text(encoding="utf-8"), str(path))
