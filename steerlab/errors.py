"""One exception hierarchy for steerlab.

Every error a user can trigger is a :class:`SteerlabError`. Messages name the bad value,
the valid options where there are few, and the fix.
"""

import difflib
from collections.abc import Iterable


class SteerlabError(Exception):
    """Base class of every error steerlab raises on purpose."""


class ConfigError(SteerlabError, ValueError):
    """A configuration value is out of range or inconsistent."""


class ModelLoadError(SteerlabError):
    """A model could not be found, downloaded or converted."""


class UnknownModelError(ModelLoadError, KeyError):
    """The model name is neither 'embedded', a local directory nor a reachable HF id."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class HookSiteError(SteerlabError, KeyError):
    """A hook site does not exist on the model (bad layer or kind)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DModelMismatchError(SteerlabError, ValueError):
    """A vector's hidden size differs from the model's d_model."""


class OtherModelError(SteerlabError, ValueError):
    """A vector made for another model (by its provenance) is applied without being forced."""


class OtherModelWarning(UserWarning):
    """A vector made for another model (by its provenance) is applied to this one."""


class ConcurrentSteeringError(SteerlabError, RuntimeError):
    """A steered model was run from a thread or context other than the one steering it."""


class OutputPathError(SteerlabError, OSError):
    """An output path that cannot be written (a directory, a file as parent, no permission)."""


class VectorFileError(SteerlabError, ValueError):
    """A vector file is missing, corrupt, or does not hold what steerlab expects."""


class NonFiniteError(SteerlabError, ValueError):
    """A tensor that must be finite holds NaN or inf."""


class EmptyInputError(SteerlabError, ValueError):
    """An input collection that must be non-empty is empty."""


class DataError(SteerlabError):
    """Base class of dataset problems."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data file is not under any data root that was searched."""


class DataFormatError(DataError, ValueError):
    """A data file has a malformed row, a missing column, an empty field or bad JSON.

    The message names the file and the line.
    """


class UnknownNameError(SteerlabError, KeyError):
    """A registry lookup (behavior, method, judge...) failed."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RegistryError(SteerlabError, ValueError):
    """A registry refused a duplicate name."""


class TrainingError(SteerlabError, RuntimeError):
    """Training stopped (NaN/inf loss or vector, unusable checkpoint...)."""


class JudgeError(SteerlabError, RuntimeError):
    """A judge could not produce scores (endpoint down after retries, bad setup)."""


def did_you_mean(value: str, options: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean ...?' for the closest options, or '' when nothing is close."""
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=n, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def unknown_name(kind: str, value: str, options: Iterable[str]) -> UnknownNameError:
    """Build the standard 'unknown X' error listing the valid names."""
    opts = sorted(str(o) for o in options)
    return UnknownNameError(
        f"Unknown {kind} {value!r}.{did_you_mean(value, opts)} Valid {kind}s: {', '.join(opts)}."
    )


class DataFetchError(DataError, RuntimeError):
    """A data download failed or did not match the manifest's sha256 (nothing was kept).

    ``report`` holds the per-file report of the whole fetch.
    """

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report
