"""Coordinator load: 200 device connections check in and upload within one round (loopback).

Usage: python benchmarks/coordinator_load.py [--devices 200] [--concurrency 50]
The coordinator is a real `fedbeat serve` process; the devices are lightweight clients in
this process (threads, bounded concurrency, one gRPC channel each) that skip training and
upload a valid rotated-1-bit payload of a random update. Writes
benchmarks/results/coordinator_load.json: round time, client-side latency and the
coordinator's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import portpicker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edge_runtime.codecs import encode  # noqa: E402
from edge_runtime.identity import update_key  # noqa: E402
from edge_runtime.join import CoordinatorClient  # noqa: E402
from edge_runtime.payload import Payload, pack  # noqa: E402
from edge_runtime.protocol import TASK, CheckInRequest, UploadRequest  # noqa: E402
from simulation.coordinator.enrollment import enroll  # noqa: E402
from simulation.resources import status_kb  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def device(address: str, token: str) -> dict:
    client = CoordinatorClient(address, token, insecure=True)
    started = time.perf_counter()
    try:
        reply = client.call("CheckIn", CheckInRequest())
        while reply.status != TASK:
            time.sleep(reply.retry_after_s)
            reply = client.call("CheckIn", CheckInRequest())
        manifest = json.loads(reply.manifest_json)
        update = np.random.default_rng(reply.seed % 2**32).normal(0, 1e-3, manifest["parameters"]).astype(np.float32)
        body = encode(reply.codec, update, reply.seed)
        payload = pack(Payload(reply.codec, reply.round, reply.model_version, manifest["layout_hash"], reply.seed, update.size, body), update_key(token))
        result = client.call("Upload", UploadRequest(payload=payload, examples=120))
        return {"accepted": result.accepted, "reason": result.reason, "seconds": time.perf_counter() - started}
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        address = f"127.0.0.1:{portpicker.pick_unused_port()}"
        tokens = enroll(Path(scratch) / "devices.txt", args.devices)
        config = Path(scratch) / "serve.toml"
        config.write_text(
            f'address = "{address}"\nstate_dir = "{scratch}/state"\ndevices_file = "{scratch}/devices.txt"\ninsecure = true\nrounds = 1\n'
            f"clients_per_round = {args.devices}\noverselect = 1.0\ndeadline_s = 600.0\nexport_tflite = false\n"
        )
        log = Path(scratch) / "serve.log"
        server = subprocess.Popen([str(Path(sys.executable).with_name("fedbeat")), "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
        peak = {"kb": 0}
        done = threading.Event()

        def watch_memory() -> None:
            while not done.is_set():
                peak["kb"] = max(peak["kb"], status_kb(server.pid, "VmHWM"))
                time.sleep(0.1)

        try:
            while "listening on" not in log.read_text(errors="replace"):
                if server.poll() is not None:
                    print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
                    return 1
                time.sleep(0.2)
            idle_kb = status_kb(server.pid, "VmRSS")
            threading.Thread(target=watch_memory, daemon=True).start()
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                results = list(pool.map(lambda token: device(address, token), tokens))
            wall = time.perf_counter() - started
            server.wait(timeout=120)
        finally:
            done.set()
            server.kill()
        rounds = [json.loads(line) for line in (Path(scratch) / "state" / "metrics.jsonl").read_text().splitlines()]
    latencies = np.array([r["seconds"] for r in results])
    result = {
        "devices": args.devices,
        "concurrency": args.concurrency,
        "accepted": sum(r["accepted"] for r in results),
        "rejected_reasons": sorted({r["reason"] for r in results if not r["accepted"]}),
        "round": rounds[-1],
        "all_devices_wall_s": round(wall, 2),
        "device_latency_s": {"median": round(float(np.median(latencies)), 3), "p95": round(float(np.percentile(latencies, 95)), 3)},
        "coordinator_rss_mb_idle": round(idle_kb / 1024, 1),
        "coordinator_peak_rss_mb": round(peak["kb"] / 1024, 1),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "coordinator_load.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0 if result["accepted"] == args.devices and result["round"]["reported"] == args.devices else 1


if __name__ == "__main__":
    sys.exit(main())
