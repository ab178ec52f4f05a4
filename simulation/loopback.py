"""Keep local TFF workers off the network: a bind() shim, and a check of what a process tree listens on.

``worker_binary`` serves on every interface with no authentication and no flag to change it.
``loopback_preload`` builds ``loopback_bind.c`` once (with the system C compiler, into the
fedbeat cache) for ``LD_PRELOAD``; ``listening_sockets`` reads /proc to list the TCP
addresses a set of processes listens on, so runs and tests can prove the result.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

from datasets.loading import cache_root

SOURCE = Path(__file__).with_name("loopback_bind.c")
_LISTEN = "0A"


class LoopbackShimError(RuntimeError):
    """The loopback shim could not be built (no C compiler)."""


def loopback_preload() -> Path:
    """Path of the compiled shim, built on first use and cached by source hash."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    library = cache_root() / "loopback" / f"loopback_bind-{digest}.so"
    if library.is_file():
        return library
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise LoopbackShimError(
            "fedbeat builds a small bind() shim so its TFF worker listens on loopback only, and needs a C compiler for it "
            "once: install one (Debian/Ubuntu: apt-get install gcc) or set CC"
        )
    library.parent.mkdir(parents=True, exist_ok=True)
    partial = library.with_name(f".{library.name}.{os.getpid()}")
    result = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(SOURCE), "-ldl"], capture_output=True, text=True)
    if result.returncode != 0:
        raise LoopbackShimError(f"building {SOURCE.name} with {compiler} failed: {result.stderr.strip()[-500:]}")
    os.replace(partial, library)
    return library


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        pass
    return inodes


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # /proc/net/tcp6: four host-order 32-bit words
    return str(ipaddress.IPv6Address(words))


def listening_sockets(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by the given processes."""
    inodes = set().union(*(_socket_inodes(pid) for pid in pids)) if pids else set()
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == _LISTEN and inode in inodes:
                host, port = local.rsplit(":", 1)
                found.append((_address(host), int(port, 16)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def is_loopback_host(host: str) -> bool:
    """An address or "localhost" on loopback; any other host name may resolve anywhere."""
    if host == "localhost":
        return True
    try:
        return is_loopback(host)
    except ValueError:
        return False
