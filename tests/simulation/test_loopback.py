"""The listening-socket check sees an exposed listener, and the shim moves a wildcard bind to loopback."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from simulation.loopback import is_loopback, listening_sockets, loopback_preload

LISTEN_ON_WILDCARD = """
import socket, sys
s = socket.socket(socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET)
s.bind(("::" if sys.argv[1] == "6" else "0.0.0.0", 0)); s.listen()
print(s.getsockname()[0], flush=True); sys.stdin.read()
"""


def test_listening_sockets_sees_a_wildcard_listener():
    with socket.socket() as exposed, socket.socket() as local:
        exposed.bind(("0.0.0.0", 0))
        exposed.listen()
        local.bind(("127.0.0.1", 0))
        local.listen()
        found = dict((port, address) for address, port in listening_sockets([os.getpid()]))
        assert found[exposed.getsockname()[1]] == "0.0.0.0" and not is_loopback("0.0.0.0")
        assert found[local.getsockname()[1]] == "127.0.0.1" and is_loopback("127.0.0.1")


def test_preloaded_shim_moves_wildcard_binds_to_loopback():
    for family, expected in (("4", "127.0.0.1"), ("6", "::1")):
        process = subprocess.Popen(
            [sys.executable, "-c", LISTEN_ON_WILDCARD, family], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "LD_PRELOAD": str(loopback_preload())},
        )
        try:
            assert process.stdout.readline().strip() == expected
            assert [address for address, _ in listening_sockets([process.pid])] == [expected]
        finally:
            process.kill()
            process.wait()
