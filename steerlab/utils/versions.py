"""Versions of the packages that shape the numbers, recorded as provenance."""

import platform
from importlib.metadata import PackageNotFoundError, version

#: The distributions whose versions a result records.
PROVENANCE_PACKAGES = (
    "steerlab",
    "torch",
    "transformer-lens",
    "transformers",
    "numpy",
    "pandas",
    "scikit-learn",
    "plotly",
)


def versions() -> dict[str, str]:
    """Python's version and those of :data:`PROVENANCE_PACKAGES` (``'not installed'``
    for a missing one)."""
    out = {"python": platform.python_version()}
    for dist in PROVENANCE_PACKAGES:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


__all__ = ["PROVENANCE_PACKAGES", "versions"]
