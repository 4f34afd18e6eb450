"""Render an HTML report in a real browser (headless Chromium) and check the picture.

``screenshot(html, png)`` runs Chromium headless with networking features switched off,
so a self-contained report must render from the file alone (the tests decode the PNG to
check it is not blank).
When no Chromium is installed, :func:`find_chromium` returns ``None`` and
:func:`screenshot` raises :class:`ScreenshotError` saying how to install it.
"""

import shutil
import subprocess
import tempfile
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


__all__ = ["ScreenshotError", "find_chromium", "screenshot"]
