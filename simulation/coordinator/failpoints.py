"""Fault injection for tests: the coordinator process dies at a named point, as under kill -9."""
from __future__ import annotations

import os

FAILPOINT_ENV = "FEDBEAT_COORDINATOR_FAILPOINT"


def failpoint(name: str) -> None:
    """Exit at once (no cleanup, status 137) when FAILPOINT_ENV names this point."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os._exit(137)
