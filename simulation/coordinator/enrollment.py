"""Device enrolment: the coordinator keeps each device's id and update key, never its token.

``fedbeat enroll`` draws tokens from the OS CSPRNG, appends one ``<device id> <update key>``
line per device to the devices file (mode 0600) and prints the tokens once, for provisioning
the watches. A stolen devices file does not let anyone authenticate as a device: the id is a
one-way hash of the token.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from edge_runtime.identity import device_id, update_key
from simulation.config import ConfigError


class EnrollmentError(ConfigError):
    """An unreadable or malformed devices file."""


def enroll_tokens(devices_file: Path, tokens: list[str]) -> None:
    """Append the records of devices holding ``tokens`` (tokens issued elsewhere, e.g. at the factory)."""
    devices_file = Path(devices_file)
    devices_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(devices_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a") as out:
        out.writelines(f"{device_id(token)} {update_key(token).hex()}\n" for token in tokens)


def enroll(devices_file: Path, count: int) -> list[str]:
    """``count`` new devices: their tokens (256 bits from the OS CSPRNG, 64 hex digits), to hand to the devices.

    Hex, not base64url: one base64url token in 64 begins with "-", which a command line then
    reads as an option (`join --token -x...` fails)."""
    if count < 1:
        raise EnrollmentError(f"count must be >= 1, got {count}")
    tokens = [secrets.token_hex(32) for _ in range(count)]
    enroll_tokens(devices_file, tokens)
    return tokens


def read_devices(devices_file: Path) -> dict[str, bytes]:
    """device id -> update key, from the devices file."""
    try:
        lines = Path(devices_file).read_text().splitlines()
    except OSError as error:
        raise EnrollmentError(f"{devices_file}: cannot read enrolled devices ({error})") from error
    devices = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2 or len(fields[0]) != 32 or len(fields[1]) != 64:
            raise EnrollmentError(f"{devices_file}:{number}: expected '<32-hex device id> <64-hex update key>'")
        try:
            devices[fields[0]] = bytes.fromhex(fields[1])
        except ValueError as error:
            raise EnrollmentError(f"{devices_file}:{number}: {error}") from error
    return devices
