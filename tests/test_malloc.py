"""steerlab.utils.malloc: freed tensors are reused instead of page-faulted in again."""

import subprocess
import sys

import pytest

from steerlab.utils.malloc import retain_freed_memory

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")

_FAULTS = """
import resource, sys, torch
from steerlab.utils.malloc import retain_freed_memory
print(retain_freed_memory(), file=sys.stderr)
g = torch.Generator().manual_seed(0)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):  # a step's activations: a few blocks of 1-24 MiB, sizes varying
    ts = [torch.empty(int(n) * 2**18).fill_(1.0) for n in torch.randint(1, 24, (6,), generator=g)]
    del ts
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(tuning: str) -> int:
    env = {"STEERLAB_MALLOC_TUNING": tuning, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


@linux_only
def test_freed_blocks_are_reused_without_page_faults():
    # Without the tuning most of these blocks are fresh mmaps (glibc raises its mmap
    # threshold only to the largest block freed so far) or trimmed heap, faulted in page by
    # page; with it freed heap blocks come back without faults.
    off, on = _faults("0"), _faults("1")
    assert off > 20_000
    assert on < off / 5


@linux_only
def test_set_once_and_idempotent(monkeypatch):
    monkeypatch.delenv("STEERLAB_MALLOC_TUNING", raising=False)
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True


def test_opt_out(monkeypatch):
    monkeypatch.setenv("STEERLAB_MALLOC_TUNING", "0")
    assert retain_freed_memory() is False
