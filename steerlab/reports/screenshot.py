"""Render an HTML report in a real browser (headless Chromium) and check the picture.

``screenshot(html, png)`` runs Chromium headless with networking features switched off,
so a self-contained report must render from the file alone. ``png_stats`` reads the PNG
(standard library only) to check it is not blank: size, dimensions, distinct colours.
When no Chromium is installed, :func:`find_chromium` returns ``None`` and
:func:`screenshot` raises :class:`ScreenshotError` saying how to install it.
"""

import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from steerlab.errors import SteerlabError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class ScreenshotError(SteerlabError, RuntimeError):
    """The browser is missing, failed, or produced no usable image."""


def find_chromium() -> str | None:
    """Path of a Chromium / Chrome executable on ``PATH``, or ``None``."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(
    html_path: "str | Path",
    png_path: "str | Path",
    *,
    width: int = 1280,
    height: int = 2000,
    timeout: float = 180.0,
    budget_ms: int = 15000,
    chromium: str | None = None,
) -> Path:
    """Take a headless screenshot of ``html_path`` into ``png_path``; returns the PNG path.

    ``budget_ms`` is Chromium's virtual time budget: scripts (plotly) get that much
    time to draw before the picture is taken.
    """
    exe = chromium or find_chromium()
    if exe is None:
        raise ScreenshotError(
            "No Chromium found on PATH (looked for " + ", ".join(CHROMIUM_NAMES) + "). "
            "Fix: apt-get install -y chromium (Debian/Ubuntu), or pass chromium='/path/to/chrome'."
        )
    src = Path(html_path).resolve()
    if not src.is_file():
        raise ScreenshotError(f"HTML file {str(src)!r} does not exist.")
    out = Path(png_path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="steerlab-chromium-") as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={int(budget_ms)}",
            f"--screenshot={out}",
            f"--window-size={int(width)},{int(height)}",
            src.as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ScreenshotError(
                f"Chromium did not finish within {timeout:.0f} s on {src.name}; raise timeout=."
            ) from exc
    if not out.is_file() or out.stat().st_size == 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise ScreenshotError(
            f"Chromium exited with {proc.returncode} and wrote no screenshot. Last output: "
            + " | ".join(tail)
        )
    return out


@dataclass(frozen=True)
class PngStats:
    """What :func:`png_stats` found: file ``size`` in bytes, ``width``, ``height``, the
    number of distinct colours in a sample of pixels and the share of the most common one."""

    size: int
    width: int
    height: int
    n_colors: int
    top_color_share: float

    @property
    def blank(self) -> bool:
        return self.n_colors <= 1


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def png_stats(path: "str | Path", sample_rows: int = 200) -> PngStats:
    """Decode an 8-bit RGB/RGBA PNG (standard library only) and count colours.

    Only ``sample_rows`` evenly spaced rows are inspected (decoding is row by row anyway).
    """
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ScreenshotError(f"{path} is not a PNG file.")
    pos, idat = 8, []
    width = height = depth = ctype = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", chunk[:10])
        elif kind == b"IDAT":
            idat.append(chunk)
        pos += 12 + length
    channels = {2: 3, 6: 4}.get(ctype)
    if depth != 8 or channels is None:
        raise ScreenshotError(f"{path}: only 8-bit RGB/RGBA PNGs are supported (type {ctype}).")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    prev = bytearray(stride)
    step = max(1, height // max(1, sample_rows))
    counts: dict[bytes, int] = {}
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif f == 4:
                line[i] = (line[i] + _paeth(a, b, c)) & 0xFF
        if y % step == 0:
            for x in range(0, stride, channels * 4):
                px = bytes(line[x : x + 3])
                counts[px] = counts.get(px, 0) + 1
        prev = line
    total = sum(counts.values()) or 1
    return PngStats(
        size=len(data),
        width=width,
        height=height,
        n_colors=len(counts),
        top_color_share=max(counts.values(), default=0) / total,
    )


__all__ = ["PngStats", "ScreenshotError", "find_chromium", "png_stats", "screenshot"]
