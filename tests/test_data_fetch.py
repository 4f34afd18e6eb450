"""Manifest, data roots, fetch (against a local HTTP server on 127.0.0.1) and verify."""

import hashlib
import http.server
import io
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from steerlab.data import (
    candidate_roots,
    fetch,
    find_data_file,
    load_manifest,
    resolve_data_root,
    verify,
)
from steerlab.data.manifest import ManifestEntry
from steerlab.errors import DataFetchError, DataFormatError, DataNotFoundError, UnknownNameError
from tests._data import require_data_root

REL = "advbench/data/advbench/harmful_strings.csv"


@pytest.fixture(scope="module")
def data_root() -> Path:
    return require_data_root()


# --- manifest ----------------------------------------------------------------------------


def test_manifest_entries_and_urls():
    m = load_manifest()
    assert len(m) == 62
    assert m.groups == ("advbench", "anthropic-evals", "bipo", "caa", "truthfulqa")
    e = m.get(REL)
    assert (e.rows, e.bytes, e.license) == (574, 34654, "MIT")
    assert e.url() == (
        "https://raw.githubusercontent.com/llm-attacks/llm-attacks/"
        "098262edf85f807224e70ecd87b9d83716bf6b73/data/advbench/harmful_strings.csv"
    )
    assert m.get("bipo/LICENSE.txt").rows is None


def test_manifest_select():
    m = load_manifest()
    assert len(m.select(["advbench"])) == 3
    assert len(m.select(["bipo/data/jailbreak", REL])) == 4
    assert len(m.select(None)) == 62
    with pytest.raises(UnknownNameError, match="Unknown data group or path 'bipoo'.*'bipo'"):
        m.select(["bipoo"])


def test_manifest_entry_validation():
    with pytest.raises(DataFormatError, match="is not 64 lowercase hex"):
        ManifestEntry("a/b", "o/r", "b", "0" * 40, "MIT", 1, "xyz", None)


def test_packaged_manifest_matches_shared_copy(data_root):
    shipped = Path(__file__).resolve().parents[1] / "steerlab" / "data" / "MANIFEST.tsv"
    assert shipped.read_bytes() == (data_root / "MANIFEST.tsv").read_bytes()


# --- data roots --------------------------------------------------------------------------


@pytest.fixture
def three_roots(tmp_path, monkeypatch) -> tuple[Path, Path, Path]:
    explicit, env, cache = (tmp_path / n for n in ("explicit", "env", "cache"))
    for d in (explicit, env, cache):
        (d / "bipo").mkdir(parents=True)
    monkeypatch.setenv("STEERLAB_DATA", str(env))
    monkeypatch.setenv("STEERLAB_DATA_CACHE", str(cache))
    return explicit, env, cache


def test_search_order(three_roots):
    explicit, env, cache = three_roots
    rel = "bipo/x.csv"
    (cache / rel).write_text("cache")
    assert find_data_file(rel, explicit) == cache / rel
    (env / rel).write_text("env")
    assert find_data_file(rel, explicit) == env / rel
    (explicit / rel).write_text("explicit")
    assert find_data_file(rel, explicit) == explicit / rel
    assert [r.path for r in candidate_roots(explicit)] == [explicit, env, cache]
    assert resolve_data_root() == env
    assert resolve_data_root(explicit) == explicit


def test_not_found_message_lists_every_place_and_the_fix(three_roots):
    explicit, env, cache = three_roots
    with pytest.raises(DataNotFoundError) as info:
        find_data_file("caa/datasets/test/mmlu/mmlu.json", explicit)
    msg = str(info.value)
    for d in three_roots:
        assert str(d) in msg
    assert "set STEERLAB_DATA=/path/to/data" in msg and "`steerlab data fetch caa`" in msg


def test_relative_paths_only(three_roots):
    with pytest.raises(DataNotFoundError, match="must be relative"):
        find_data_file("../etc/passwd")


def test_no_root_at_all(tmp_path, monkeypatch):
    monkeypatch.delenv("STEERLAB_DATA", raising=False)
    monkeypatch.setenv("STEERLAB_DATA_CACHE", str(tmp_path / "missing"))
    with pytest.raises(DataNotFoundError, match="No data directory found.*missing"):
        resolve_data_root()


# --- fetch against a local server --------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    routes: dict[str, bytes]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        body = self.server.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(data_root) -> Iterator[_Server]:
    """Serves the advbench files at their raw.githubusercontent.com paths."""
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.routes = {
        e.url(""): (data_root / e.path).read_bytes() for e in load_manifest().select(["advbench"])
    }
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _base(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


# Bypass any proxy settings: the test must never leave 127.0.0.1.
NO_PROXY_OPEN = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


def test_fetch_downloads_skips_and_replaces(server, tmp_path, capsys):
    kw = {"opener": NO_PROXY_OPEN, "base_url": _base(server)}
    report = fetch(["advbench"], tmp_path, progress=True, **kw)
    assert report.counts == {"downloaded": 3} and report.ok
    assert "[3/3] downloaded" in capsys.readouterr().err
    entry = load_manifest().get(REL)
    assert hashlib.sha256((tmp_path / REL).read_bytes()).hexdigest() == entry.sha256
    assert fetch(["advbench"], tmp_path, progress=False, **kw).counts == {"present": 3}
    (tmp_path / REL).write_text("tampered")
    again = fetch(["advbench"], tmp_path, progress=False, **kw)
    assert dict(again)[REL] == "replaced" and verify(tmp_path, ["advbench"]).ok


def test_fetch_rejects_sha_mismatch_and_keeps_nothing(server, tmp_path):
    entry = load_manifest().get(REL)
    server.routes[entry.url("")] = b"target\nnot the real file\n"
    with pytest.raises(DataFetchError) as info:
        fetch(["advbench"], tmp_path, progress=False, opener=NO_PROXY_OPEN, base_url=_base(server))
    msg = str(info.value)
    actual = hashlib.sha256(b"target\nnot the real file\n").hexdigest()
    assert REL in msg and entry.sha256 in msg and actual in msg
    assert not (tmp_path / REL).exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".part")]
    assert info.value.report.counts == {"downloaded": 2, "sha256-mismatch": 1}


def test_fetch_with_fake_opener_failure_and_mismatch(tmp_path):
    def broken(url: str) -> io.BytesIO:
        raise OSError("no route to host")

    with pytest.raises(DataFetchError, match="download-failed.*no route to host"):
        fetch([REL], tmp_path, progress=False, opener=broken)
    with pytest.raises(DataFetchError, match="sha256-mismatch"):
        fetch([REL], tmp_path, progress=False, opener=lambda url: io.BytesIO(b"x"))
    assert list(tmp_path.rglob("*.csv")) == []


def test_verify(data_root, tmp_path):
    assert verify(data_root, ["advbench", "bipo/data/jailbreak"]).ok
    target = tmp_path / REL
    target.parent.mkdir(parents=True)
    shutil.copy(data_root / REL, target)
    target.write_bytes(target.read_bytes() + b"\n")
    report = verify(tmp_path, ["advbench"])
    assert dict(report) == {
        "advbench/LICENSE.txt": "missing",
        "advbench/data/advbench/harmful_behaviors.csv": "missing",
        REL: "sha256-mismatch",
    }
    assert not report.ok and "expected sha256" in report.failures()[-1].detail
