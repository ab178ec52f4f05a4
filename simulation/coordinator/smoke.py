"""Real rounds between `fedbeat serve` and a device Python that has only numpy, tflite-runtime,
grpcio and cryptography: one plain round of one device, one secure-aggregation round of three.

Usage: python -m simulation.coordinator.smoke --device-python .venv-device/bin/python
(`make device-selftest` runs it). Prints each round's metrics line; exits 1 unless both rounds
closed with every device's update.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import portpicker

from simulation.coordinator.certificates import self_signed_certificate
from simulation.coordinator.enrollment import enroll

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_BEATS = REPO_ROOT / "edge_runtime" / "sample_beats.npz"


def one_round(device_python: str, scratch: Path, *, devices: int, secure: bool) -> tuple[list[dict], dict]:
    """`fedbeat serve` for one round over TLS with ``devices`` enrolled device processes; (their
    last log lines, the round's metrics line)."""
    address = f"localhost:{portpicker.pick_unused_port()}"
    cert, key = self_signed_certificate(scratch / "tls")
    tokens = enroll(scratch / "devices.txt", devices)
    config = scratch / "serve.toml"
    config.write_text(
        f'address = "{address}"\nstate_dir = "{scratch}/state"\ndevices_file = "{scratch}/devices.txt"\nrounds = 1\nclients_per_round = {devices}\n'
        f'overselect = 1.0\ntls_cert = "{cert}"\ntls_key = "{key}"\nexport_tflite = false\ndeadline_s = 120.0\nsecure_aggregation = {str(secure).lower()}\n'
    )
    fedbeat = str(Path(sys.executable).with_name("fedbeat"))
    log = scratch / "serve.log"
    server = subprocess.Popen([fedbeat, "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=open(log, "wb"), cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 300
        while "listening on" not in log.read_text(errors="replace"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        joined = [
            subprocess.Popen(
                [device_python, "-m", "edge_runtime", "join", "--server", address, f"--token={token}", "--tls-ca", str(cert), "--data", str(SAMPLE_BEATS)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
            )
            for token in tokens
        ]
        outputs = [process.communicate(timeout=300) for process in joined]
        server.wait(timeout=300)
    finally:
        server.kill()
    if any(process.returncode for process in joined):
        raise RuntimeError("a device failed: " + " | ".join(err[-2000:] for _, err in outputs))
    lines = [json.loads(line) for line in (scratch / "state" / "metrics.jsonl").read_text().splitlines()]
    return [json.loads(out or "{}") for out, _ in outputs], lines[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device-python", required=True)
    args = parser.parse_args()
    results = {}
    for name, devices, secure in (("plain", 1, False), ("secure aggregation", 3, True)):
        with tempfile.TemporaryDirectory() as scratch:
            try:
                outputs, record = one_round(args.device_python, Path(scratch), devices=devices, secure=secure)
            except RuntimeError as error:
                print(f"{name} round failed: {error}", file=sys.stderr)
                return 1
        results[name] = {"devices": outputs, "round": record}
        if not (record.get("round") == 1 and record.get("reported") == devices and not record.get("abandoned")):
            print(json.dumps(results), file=sys.stderr)
            return 1
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
