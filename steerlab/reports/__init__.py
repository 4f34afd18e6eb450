"""Reports: self-contained HTML pages assembled from figures, tables and provenance."""

from steerlab.reports.html import Report, report, sweep_report, table_html
from steerlab.reports.screenshot import (
    ScreenshotError,
    find_chromium,
    screenshot,
)

__all__ = [
    "Report",
    "ScreenshotError",
    "find_chromium",
    "report",
    "screenshot",
    "sweep_report",
    "table_html",
]
