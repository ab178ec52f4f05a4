"""Resident memory of this process and its workers (TFF's, the coordinator's model worker), read from /proc (Linux)."""
from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterable

MMAP_THRESHOLD_BYTES = 128 * 1024
GLIBC_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES), "MALLOC_TRIM_THRESHOLD_": str(MMAP_THRESHOLD_BYTES)}
"""For child processes (the TFF worker): the same settings as ``return_freed_memory_to_os``."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def return_freed_memory_to_os() -> bool:
    """Make glibc map large buffers and return them to the OS when freed; False where it is not glibc.

    A round's tensors are large, short-lived and of sizes that vary with the shards. glibc's
    adaptive mmap threshold moves them onto the heap, where they stay resident as a
    high-water mark that creeps up over a run (+13 % in 50 rounds of 1,000 watches). A fixed
    128 KiB threshold keeps resident memory flat. Only worth it under oneDNN kernels: TF's
    default kernels allocate so many large temporaries that mapping each one made a
    1,000-watch round 2.5x slower (13.5 s against 5.5 s), so ``LocalTffRuntime`` applies
    this under oneDNN alone.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started (``pgrep -P``)."""
    return [int(child) for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


def rss_mb(worker_pids: Iterable[int] = ()) -> float:
    """Current resident memory of this process plus the given workers, MiB."""
    return sum(status_kb(pid, "VmRSS") for pid in (os.getpid(), *worker_pids)) / 1024


def peak_rss_mb(worker_pids: Iterable[int] = ()) -> float:
    """Sum of each process's peak resident memory (VmHWM), MiB: an upper bound on the joint peak."""
    return sum(status_kb(pid, "VmHWM") for pid in (os.getpid(), *worker_pids)) / 1024
