"""Shared fixtures: a tiny random-init Llama (hooks tier) and the embedded model
(integration tier, loaded once per test session)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("STEERLAB_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (`make test` runs `-n 2`) each worker computes on one thread: two
# workers fill the two cores without oversubscribing them, and subprocesses (the CLI,
# notebook kernels, servers) inherit the setting.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
    elif getattr(config.option, "numprocesses", None):
        # xdist's controller unpickles each worker's warnings on that worker's receiver
        # thread, importing the warning category's module: two steerlab warnings at once
        # then import steerlab on two threads and one sees it partially initialized (an
        # INTERNALERROR that ends the run). Import it here, once, first.
        import steerlab  # noqa: F401


@pytest.fixture(scope="session")
def tiny_model():
    """2 layers, d_model 64, random weights (seed 0), the embedded tokenizer."""
    from steerlab.models.tiny import load_tiny_model

    return load_tiny_model()


@pytest.fixture(scope="session")
def tiny_model_4l():
    """4 layers, d_model 64: for tests that need layers before and after a site."""
    from steerlab.models.tiny import load_tiny_model

    return load_tiny_model(n_layers=4, seed=1)


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2-135M-Instruct on CPU in fp32, loaded once."""
    import steerlab as sl

    return sl.load_model("embedded", device="cpu")


@pytest.fixture(scope="session")
def data_root() -> Path:
    return Path(os.environ["STEERLAB_DATA"])


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "embedded_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def shared_prefixes(monkeypatch):
    """The ``shared=`` of every ``FastBlocks.forward`` call made while the test runs (a
    batch's common prefix, the chat template's system turn, computed once when > 0)."""
    from steerlab.models.fast_blocks import FastBlocks

    seen: list[int] = []
    forward = FastBlocks.forward
    monkeypatch.setattr(
        FastBlocks, "forward", lambda *a, **k: seen.append(k.get("shared", 0)) or forward(*a, **k)
    )
    return seen
