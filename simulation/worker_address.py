"""Worker addresses for ``--worker HOST:PORT``, checked before TensorFlow loads."""
from __future__ import annotations


def parse_worker_address(address: str) -> str:
    """'HOST:PORT' checked, so a typo fails in the flag parser rather than mid-run."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"worker address must be HOST:PORT, got {address!r}")
    return address
