"""One real round between `fedbeat serve` and a device Python that has only numpy, tflite-runtime and grpcio.

Usage: python -m simulation.coordinator.smoke --device-python .venv-device/bin/python
(`make device-selftest` runs it). Prints the round's metrics line; exits 1 if the round
did not close with the device's update.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device-python", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        address = f"localhost:{portpicker.pick_unused_port()}"
        cert, key = self_signed_certificate(Path(scratch) / "tls")
        (token,) = enroll(Path(scratch) / "devices.txt", 1)
        config = Path(scratch) / "serve.toml"
        config.write_text(
            f'address = "{address}"\nstate_dir = "{scratch}/state"\ndevices_file = "{scratch}/devices.txt"\nrounds = 1\nclients_per_round = 1\n'
            f'tls_cert = "{cert}"\ntls_key = "{key}"\nexport_tflite = false\ndeadline_s = 120.0\n'
        )
        fedbeat = str(Path(sys.executable).with_name("fedbeat"))
        server = subprocess.Popen([fedbeat, "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=open(Path(scratch) / "serve.log", "wb"), cwd=REPO_ROOT)
        try:
            deadline = time.monotonic() + 300
            while "listening on" not in (Path(scratch) / "serve.log").read_text(errors="replace"):
                if server.poll() is not None or time.monotonic() > deadline:
                    print((Path(scratch) / "serve.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                    return 1
                time.sleep(0.2)
            device = subprocess.run(
                [args.device_python, "-m", "edge_runtime", "join", "--server", address, "--token", token, "--tls-ca", str(cert), "--data", str(SAMPLE_BEATS)],
                capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
            )
            server.wait(timeout=300)
        finally:
            server.kill()
        lines = [json.loads(line) for line in (Path(scratch) / "state" / "metrics.jsonl").read_text().splitlines()]
        print(json.dumps({"device": json.loads(device.stdout or "{}"), "round": lines[-1]}))
        return 0 if device.returncode == 0 and lines[-1].get("round") == 1 and lines[-1].get("reported") == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
