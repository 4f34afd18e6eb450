"""Reports: self-contained HTML pages assembled from figures, tables and provenance."""

from steerlab.reports.html import Report, report, sweep_report, table_html
from steerlab.reports.screenshot import (
    PngStats,
    ScreenshotError,
    find_chromium,
    png_stats,
    screenshot,
)

__all__ = [
    "PngStats",
    "Report",
    "ScreenshotError",
    "find_chromium",
    "png_stats",
    "report",
    "screenshot",
    "sweep_report",
    "table_html",
]
