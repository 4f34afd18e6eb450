"""Keep freed memory in the process on CPUs (glibc): far fewer page faults per step.

PyTorch's CPU allocator takes every tensor from ``malloc``. With glibc's defaults a
block of more than 128 KiB-32 MiB comes from a fresh ``mmap`` and goes back to the
kernel on ``free``, so each training step or scored batch pays page faults (the kernel
zeroing pages) for every activation it allocates again: on the embedded model that was a
third of a BiPO epoch (2.1-2.6 M minor faults in a process that built two 64-pair caches
and trained two epochs; 0.37 M with this).
:func:`retain_freed_memory` raises the ``mmap`` and trim thresholds with ``mallopt``, the
programmatic form of ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, so freed
blocks are reused instead. The cost: the resident set stays near its peak instead of
shrinking after large temporaries are freed.

:func:`steerlab.load_model` calls it for CPU models; ``STEERLAB_MALLOC_TUNING=0`` turns it
off. It changes speed and memory use only, never a number.
"""

import ctypes
import ctypes.util
import os
import sys

#: glibc's ``mallopt`` parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap and stay there when freed; the first value
#: this glibc accepts is used (older ones refuse more than 32 MiB on 64-bit systems).
MMAP_THRESHOLDS = (256 * 2**20, 32 * 2**20)
#: Free memory at the top of the heap is kept up to this much (not trimmed).
TRIM_THRESHOLD = 2**31 - 1

_state: dict[str, int] = {}


def retain_freed_memory() -> bool:
    """Set the thresholds once per process; True when they are set (now or before).

    False, doing nothing, when ``STEERLAB_MALLOC_TUNING=0``, off Linux or without glibc
    (musl, macOS, Windows keep their allocators' behaviour).
    """
    if os.environ.get("STEERLAB_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no"):
        return False
    if "set" in _state:
        return bool(_state["set"])
    ok, threshold = False, 0
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            threshold = next((v for v in MMAP_THRESHOLDS if mallopt(_M_MMAP_THRESHOLD, v)), 0)
            ok = bool(threshold) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _state["set"], _state["mmap_threshold"] = int(ok), threshold if ok else 0
    return ok


def mmap_threshold() -> int:
    """The ``mmap`` threshold :func:`retain_freed_memory` set in this process (0: none)."""
    return _state.get("mmap_threshold", 0)
