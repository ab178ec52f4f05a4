"""Resident memory of this process and its TFF workers, read from /proc (Linux)."""
from __future__ import annotations

import os
from collections.abc import Iterable


def status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def rss_mb(worker_pids: Iterable[int] = ()) -> float:
    """Current resident memory of this process plus the given workers, MiB."""
    return sum(status_kb(pid, "VmRSS") for pid in (os.getpid(), *worker_pids)) / 1024


def peak_rss_mb(worker_pids: Iterable[int] = ()) -> float:
    """Sum of each process's peak resident memory (VmHWM), MiB: an upper bound on the joint peak."""
    return sum(status_kb(pid, "VmHWM") for pid in (os.getpid(), *worker_pids)) / 1024
