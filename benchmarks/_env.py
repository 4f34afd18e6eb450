"""Shared set-up of the benchmark scripts (imported first by each of them).

Offline Hugging Face, no tokenizer thread pool, the repository on ``sys.path`` (for
``steerlab`` and ``tests.bipo_plain``) and, when ``STEERLAB_DATA`` is unset, the data
root of the development layout (``../shared/data`` beside the repository) if it exists.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "STEERLAB_DATA" not in os.environ and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["STEERLAB_DATA"] = str(ROOT.parent / "shared" / "data")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
