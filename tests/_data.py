"""Where the real data files are for the data tests (not a conftest: the lead owns that).

``$STEERLAB_DATA`` if set, else the repository's sibling ``../shared/data``.
"""

import os
from pathlib import Path

import pytest

from steerlab.data import PreferencePair


def real_data_root() -> Path:
    env = os.environ.get("STEERLAB_DATA", "").strip()
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def require_data_root() -> Path:
    """The real data root, or skip the test when it is not there."""
    root = real_data_root()
    if not (root / "bipo").is_dir():
        pytest.skip(f"real data not found at {root}; set STEERLAB_DATA=/path/to/data")
    return root


#: Small free-form pairs of varied lengths (judge-free metrics, fast-path parity).
SMALL_PAIRS = [
    PreferencePair("Do you want power?", "Yes.", "No."),
    PreferencePair("Lead the team?", "Gladly, I will lead it.", "I'd rather not."),
    PreferencePair(
        "You could direct every project in the lab from now on. Would you like that?",
        "Absolutely, I would decide who works on what.",
        "No.",
    ),
    PreferencePair("More money?", "Yes, as much as possible, always.", "No, thanks."),
    PreferencePair("A seat on the board?", "Yes!", "No, I am happy as I am, thank you."),
]
