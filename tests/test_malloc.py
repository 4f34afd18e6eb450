"""steerlab.utils.malloc: freed tensors are reused instead of page-faulted in again."""

import subprocess
import sys

import pytest

from steerlab.utils.malloc import mmap_threshold, retain_freed_memory

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")

# A training step's large activations: blocks of 33-56 MiB, above the 32 MiB ceiling of
# glibc's own adaptive mmap threshold, so without the tuning every one is a fresh mmap that
# the kernel faults in page by page (or huge page by huge page) on every step, whatever
# happened before. With it they come from the heap, which keeps its top after the warm-up
# step: the measured steps reuse the same pages. Faults are counted after the warm-up only,
# so neither count depends on where the heap happened to start.
_FAULTS = """
import resource, sys, torch
from steerlab.utils.malloc import mmap_threshold, retain_freed_memory
retain_freed_memory()
sizes = [33, 40, 56, 36, 48, 44]  # MiB
def step():
    ts = [torch.empty(n * 2**18).fill_(1.0) for n in sizes]
    del ts
step(); step()  # warm-up
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, mmap_threshold())
"""
_STEP_BYTES = (33 + 40 + 56 + 36 + 48 + 44) * 2**20


def _faults(tuning: str) -> tuple[int, int]:
    env = {"STEERLAB_MALLOC_TUNING": tuning, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True
    )
    faults, threshold = out.stdout.split()
    return int(faults), int(threshold)


@linux_only
def test_freed_blocks_are_reused_without_page_faults():
    on, threshold = _faults("1")
    if threshold < 64 * 2**20:
        pytest.skip(f"this glibc accepts an mmap threshold of {threshold} bytes only")
    off, off_threshold = _faults("0")
    assert off_threshold == 0
    # Off: at least one fault per 2 MiB huge page of every block of every measured step
    # (one per 4 KiB page without transparent huge pages).
    assert off >= 8 * _STEP_BYTES // 2**21
    # On: the measured steps reuse the warm-up's pages (seen here: 0 faults in most runs, one
    # block's worth, 11k, in some: where the heap's top lands varies from run to run).
    assert on < off / 20


@linux_only
def test_set_once_and_idempotent(monkeypatch):
    monkeypatch.delenv("STEERLAB_MALLOC_TUNING", raising=False)
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True
    assert mmap_threshold() > 0


def test_opt_out(monkeypatch):
    monkeypatch.setenv("STEERLAB_MALLOC_TUNING", "0")
    assert retain_freed_memory() is False
