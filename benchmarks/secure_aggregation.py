"""What secure aggregation costs, against the plaintext protocol, for cohorts of 10, 100 and 500 devices.

Usage: python benchmarks/secure_aggregation.py [--cohorts 10 100 500] [--neighbours 32] [--dropout 0.1] [--out DIR] [--check] [--json]

A real ``Coordinator`` (store, phases, model worker) and in-process devices
(``secure_cohort.run_secure_round``: each device's four steps timed, its requests' bytes counted;
the server's seconds are the round's time that no device spent: every call's handling, the
phases, the unmasking);
``--dropout`` of the devices vanish after sharing keys and are recovered from their neighbours'
shares. The devices take each step one after another in this process, so each phase is given
0.04 s per device (at least 2 s) before it closes without the missing ones. The plaintext protocol on the same updates: the device's codec + signed payload
(``rotated1bit``, the coordinator's default) and the server's check and decode of each. Writes
benchmarks/results/secure_aggregation.json and .png. ``--check`` fails unless every round
unmasked and, as SecAgg+ promises, a device's seconds and bytes do not grow with the cohort once
its neighbourhood is full: the largest cohort within ``MAX_GROWTH`` of the next smaller one with
the same number of neighbours (ratios within one run).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edge_runtime.codecs import encode  # noqa: E402
from edge_runtime.identity import update_key  # noqa: E402
from edge_runtime.payload import Payload, decode_update, pack  # noqa: E402
from simulation.coordinator.config import CoordinatorConfig  # noqa: E402
from simulation.coordinator.enrollment import enroll_tokens  # noqa: E402
from simulation.coordinator.rounds import Coordinator  # noqa: E402
from simulation.coordinator.secure_cohort import run_secure_round  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MAX_GROWTH = 1.5
CODEC = "rotated1bit"


def plaintext_costs(coordinator: Coordinator, tokens: list[str], updates: dict[str, np.ndarray]) -> dict:
    """Per device: encode + sign seconds and payload bytes; server: check + decode seconds of all."""
    manifest, version, round_index = coordinator.manifest, coordinator.store.latest_model()[0], 1
    payloads, client = {}, []
    for token in tokens:
        started = time.perf_counter()
        body = encode(CODEC, updates[token], 7)
        payloads[token] = pack(Payload(CODEC, round_index, version, manifest["layout_hash"], 7, updates[token].size, body), update_key(token))
        client.append(time.perf_counter() - started)
    started = time.perf_counter()
    for token in tokens:
        decode_update(payloads[token], key=update_key(token), layout_hash=manifest["layout_hash"], length=manifest["parameters"], max_norm=coordinator.config.max_update_norm)
    return {"client_s": float(np.mean(client)), "bytes": float(np.mean([len(p) for p in payloads.values()])), "server_s": time.perf_counter() - started}


def one_cohort(size: int, neighbours: int, dropout: float, scratch: Path) -> dict:
    tokens = [f"device-{i:04d}" for i in range(size)]
    enroll_tokens(scratch / "devices.txt", tokens)
    config = CoordinatorConfig(
        state_dir=str(scratch / "state"), devices_file=str(scratch / "devices.txt"), insecure=True, rounds=1, clients_per_round=size, overselect=1.0,
        secure_aggregation=True, secure_neighbours=neighbours, secure_phase_s=max(2.0, 0.04 * size), export_tflite=False, checkpoint_every=64,
    )
    coordinator = Coordinator(config)
    try:
        rng = np.random.default_rng(size)
        updates = {t: rng.normal(0, 0.02, coordinator.manifest["parameters"]).astype(np.float32) for t in tokens}
        vanish = set(tokens[: int(round(dropout * size))])
        started = time.perf_counter()
        run, _ = run_secure_round(coordinator, tokens, updates, drop_after_sharing=vanish, phase_s=config.secure_phase_s)
        wall = time.perf_counter() - started - (config.secure_phase_s if vanish else 0.0)
        record = coordinator.store.closed_records()[-1]
        plain = plaintext_costs(coordinator, tokens, updates)
    finally:
        coordinator.close()
    steps = {step: float(np.sum(seconds)) / (size - len(vanish)) for step, seconds in run.seconds.items()}
    client_s = sum(steps.values())
    server_s = wall - sum(float(np.sum(seconds)) for seconds in run.seconds.values())  # in process: the round's time that no device spent
    sent = float(np.mean([run.bytes_sent[t] for t in tokens if t not in vanish]))
    return {
        "devices": size, "neighbours": min(neighbours, size - 1), "dropped_after_sharing": len(vanish), "abandoned": record["abandoned"],
        "reported": record["reported"], "secure": {"client_s_by_step": steps, "client_s": client_s, "bytes_sent": sent, "server_unmask_s": record.get("unmask_s"), "server_s": server_s, "round_s_without_waits": wall},
        "plaintext": plain, "overhead": {"client_time": client_s / plain["client_s"], "bytes": sent / plain["bytes"], "server_time": server_s / plain["server_s"]},
    }


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [str(r["devices"]) for r in rows]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = [
        ("device seconds per round", [r["secure"]["client_s"] for r in rows], [r["plaintext"]["client_s"] for r in rows]),
        ("device kB sent per round", [r["secure"]["bytes_sent"] / 1e3 for r in rows], [r["plaintext"]["bytes"] / 1e3 for r in rows]),
        ("server seconds per round", [r["secure"]["server_s"] for r in rows], [r["plaintext"]["server_s"] for r in rows]),
    ]
    x = np.arange(len(rows))
    for axis, (title, secure, plain) in zip(axes, panels):
        axis.bar(x - 0.2, secure, 0.4, label="secure aggregation")
        axis.bar(x + 0.2, plain, 0.4, label=f"plaintext ({CODEC})")
        axis.set_xticks(x, sizes)
        axis.set_xlabel("devices in the round")
        axis.set_title(title)
        axis.set_yscale("log")
    axes[1].legend(fontsize=8, loc="center right")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--neighbours", type=int, default=CoordinatorConfig.secure_neighbours)
    parser.add_argument("--dropout", type=float, default=0.1, help="fraction of devices that vanish after sharing keys")
    parser.add_argument("--check", action="store_true", help="fail unless every round unmasked and a device's cost stays flat with the cohort")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where secure_aggregation.json and .png go")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for size in args.cohorts:
        with tempfile.TemporaryDirectory() as scratch:
            rows.append(one_cohort(size, args.neighbours, args.dropout, Path(scratch)))
        print(f"{size} devices: {json.dumps(rows[-1])}", file=sys.stderr)
    result = {"cohorts": rows, "dropout": args.dropout, "codec_compared": CODEC, "machine": f"{platform.machine()}, Python {platform.python_version()}"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "secure_aggregation.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out / "secure_aggregation.png")
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0 if not args.check or checked(rows) else 1


def checked(rows: list[dict]) -> bool:
    problems = [f"{r['devices']} devices: round abandoned" for r in rows if r["abandoned"]]
    full = [r for r in rows if r["neighbours"] == rows[-1]["neighbours"]]
    if len(full) >= 2:
        smaller, largest = full[-2], full[-1]
        for name, measure in (("seconds", lambda r: r["secure"]["client_s"]), ("bytes", lambda r: r["secure"]["bytes_sent"])):
            growth = measure(largest) / measure(smaller)
            if growth > MAX_GROWTH:
                problems.append(f"device {name} grew {growth:.2f}x from {smaller['devices']} to {largest['devices']} devices")
    for problem in problems:
        print(f"secure aggregation check failed: {problem}", file=sys.stderr)
    return not problems


if __name__ == "__main__":
    raise SystemExit(main())
