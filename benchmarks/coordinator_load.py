"""Coordinator under load: devices as asyncio gRPC clients in several processes, several rounds, loopback.

Usage: python benchmarks/coordinator_load.py [--devices 10000] [--rounds 5] [--processes 4] [--channels 32] [--server asyncio|threads] [--json]

The coordinator is a real `fedbeat serve` process. Each device has its own enrolled token and,
every round: checks in until given the task, downloads the model (architecture once, weights
per version), sleeps a drawn compute time, and uploads a rotated-1-bit payload of a random
update made by the device codecs and signed with its update key. Per round a device is drawn
honest, dropping (never uploads), late (uploads after the deadline) or garbage (random bytes);
an honest device given its task with less time left than its drawn compute time (typically a
late device of the previous round coming back late) still uploads but counts as short of time.
Devices of one process share ``--channels`` HTTP/2 connections (a phone has one of its own;
10,000 sockets would measure the kernel, not the coordinator). Writes
benchmarks/results/coordinator_load_<devices>_<server>.json: accepted, rejected by reason, dropped, late, round
seconds, p50/p99 latency per RPC, the coordinator's RSS and SQLite size per round, and the CPU
the coordinator and the load generator each used.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import multiprocessing
import platform
import queue as queue_module
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import portpicker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edge_runtime.codecs import decode, encode  # noqa: E402
from edge_runtime.identity import bearer_metadata, update_key  # noqa: E402
from edge_runtime.payload import Payload, pack  # noqa: E402
from edge_runtime.protocol import DONE, METHODS, SERVICE, TASK, CheckInRequest, DownloadRequest, UploadRequest  # noqa: E402
from simulation.coordinator.enrollment import enroll  # noqa: E402
from simulation.resources import child_pids, status_kb  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ROLES = ("honest", "drop", "late", "garbage")
TRANSIENT = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")


def role_of(device: int, round_index: int, rates: dict[str, float], seed: int) -> str:
    """This device's behaviour in this round, drawn reproducibly."""
    draw = np.random.default_rng([seed, device, round_index]).random()
    edge = 0.0
    for role in ROLES[1:]:
        edge += rates[role]
        if draw < edge:
            return role
    return "honest"


async def run_devices(address: str, devices: list[tuple[int, str]], args: dict) -> dict:
    """Every device of this process through all rounds; per-RPC latencies and outcomes."""
    import grpc

    channels = [grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", 8 << 20)]) for _ in range(args["channels"])]
    stubs = [{m: ch.unary_unary(f"/{SERVICE}/{m}") for m in METHODS} for ch in channels]
    latency = collections.defaultdict(list)
    outcome = collections.Counter()
    reasons = collections.Counter()
    counted = {"sum": None, "devices": 0, "norms": 0.0}  # the kill round's updates the coordinator holds

    async def call(stub, method: str, request, token: str, round_index: int | None = None):
        delay = 0.2
        for _ in range(12):
            started = time.perf_counter()
            try:
                raw = await stub[method](request.to_bytes(), metadata=bearer_metadata(token), timeout=60)
                latency[method].append(time.perf_counter() - started)
                if round_index is not None:
                    latency[f"{method} in round {round_index}"].append(latency[method][-1])
                return METHODS[method][1].from_bytes(raw)
            except grpc.aio.AioRpcError as error:
                if error.code().name not in TRANSIENT:
                    raise
                outcome[f"retried {error.code().name}"] += 1
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)
        raise ConnectionError(f"{method}: coordinator unreachable after 12 tries")

    async def device(index: int, token: str) -> None:
        stub = stubs[index % len(stubs)]
        rng = np.random.default_rng([args["seed"], index])
        version, have_tflite, done = "", False, set()
        await asyncio.sleep(rng.uniform(0, args["arrival_s"]))  # devices come online over the first seconds, not all at once
        while True:
            reply = await call(stub, "CheckIn", CheckInRequest(model_version=version), token)
            if reply.status == DONE:
                return
            if reply.status != TASK:
                await asyncio.sleep(max(reply.retry_after_s, 0.2) * (1 + 0.1 * rng.random()))
                continue
            if reply.round in done:  # this round's task again (it dropped out, or reported): back after the deadline
                await asyncio.sleep(reply.deadline_s + rng.uniform(0.2, 2.0))
                continue
            done.add(reply.round)
            if reply.model_version != version:
                await call(stub, "Download", DownloadRequest(model_version=reply.model_version, include_tflite=not have_tflite), token)
                version, have_tflite = reply.model_version, True
            role = role_of(index, reply.round, args["rates"], args["seed"])
            compute = rng.uniform(0, args["compute_s"])
            if role == "honest" and compute > reply.deadline_s - 1.0:
                role = "short of time"  # given the task too late to finish in time (e.g. it was late last round): it tries anyway
            await asyncio.sleep(compute)
            if role == "drop":
                outcome["dropped"] += 1
                if reply.round == args["rounds"]:
                    return
                continue
            if role == "late":
                await asyncio.sleep(reply.deadline_s + 1.0)
            manifest = json.loads(reply.manifest_json)
            update = rng.normal(0, 1e-3, manifest["parameters"]).astype(np.float32)
            body = encode(reply.codec, update, reply.seed)
            payload = pack(Payload(reply.codec, reply.round, reply.model_version, manifest["layout_hash"], reply.seed, update.size, body), update_key(token))
            if role == "garbage":
                payload = rng.bytes(len(payload))
            result = await call(stub, "Upload", UploadRequest(payload=payload, examples=120), token, reply.round)
            lost_reply = not result.accepted and result.reason.startswith("duplicate")  # committed, then the kill cut the reply
            outcome[f"{role} {'accepted' if result.accepted else 'counted, reply lost' if lost_reply else 'rejected'}"] += 1
            if not result.accepted and not lost_reply:
                reasons[result.reason.split(":")[0]] += 1
            if reply.round == args["kill_round"] and (result.accepted or lost_reply):
                decoded = decode(reply.codec, body, update.size, reply.seed).astype(np.float64)
                counted["sum"] = decoded if counted["sum"] is None else counted["sum"] + decoded
                counted["devices"] += 1
                counted["norms"] += float(np.linalg.norm(decoded))
            if reply.round == args["rounds"]:
                return  # the federation's last round: nothing more to check in for

    async def lifetime(index: int, token: str) -> None:
        try:
            await device(index, token)
        except ConnectionError:
            outcome["gave up: coordinator gone"] += 1  # e.g. a late upload after the last round, once the coordinator exited

    async def loop_lag(every: float = 0.05) -> None:
        """How late this process's event loop wakes up: the part of a measured latency that is the load generator's own."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(every)
            latency["load generator loop lag"].append(time.perf_counter() - started - every)

    lag = asyncio.create_task(loop_lag())
    await asyncio.gather(*(lifetime(i, t) for i, t in devices))
    lag.cancel()
    for channel in channels:
        await channel.close()
    return {"latency": {m: v for m, v in latency.items()}, "outcome": dict(outcome), "reasons": dict(reasons), "counted": counted}


def process_main(address: str, devices: list[tuple[int, str]], args: dict, queue) -> None:
    queue.put(asyncio.run(run_devices(address, devices, args)))


class CoordinatorWatch:
    """Samples the serving process's RSS and CPU, and the RSS of the processes it started (the
    evaluator and any TensorFlow job, model_worker.py; listed once a second); at each new
    metrics.jsonl line, notes that round's peaks (serving, model processes, and all of them at one
    instant) and the SQLite size (database + WAL). When round ``snapshot_round`` closes, copies the
    models before and after it (retention deletes old ones later)."""

    def __init__(self, pid: int, state: Path, snapshot_round: int | None = None):
        self.pid, self.state, self.snapshot_round = pid, state, snapshot_round
        self.rounds: list[dict] = []
        self.models: dict[int, np.ndarray] = {}
        self._cpu_before, self._cpu_now = 0.0, 0.0
        self.model_cpu_s: dict[int, float] = {}  # per model process: the CPU seconds last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        peak, children_peak, total_peak, lines, children, listed = 0, 0, 0, 0, [], 0.0
        clock = float(subprocess.run(["getconf", "CLK_TCK"], capture_output=True, text=True).stdout or 100)
        while not self._stop.is_set():
            if time.monotonic() - listed > 1.0:  # pgrep once a second, not at every sample beside the load it measures
                children, listed = child_pids(self.pid), time.monotonic()
            try:
                serving = status_kb(self.pid, "VmRSS")
                model = sum(status_kb(child, "VmRSS") for child in children)
                peak, children_peak, total_peak = max(peak, serving), max(children_peak, model), max(total_peak, serving + model)
                self._cpu_now = cpu_seconds(self.pid, clock)
                for child in children:
                    with contextlib.suppress(OSError, ValueError, IndexError):  # a TensorFlow job that has just exited
                        self.model_cpu_s[child] = cpu_seconds(child, clock)
            except (OSError, ValueError, IndexError):
                pass
            metrics = self.state / "metrics.jsonl"
            count = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
            if count > lines:
                size = sum(p.stat().st_size for p in self.state.glob("coordinator.sqlite*"))
                self.rounds.append({
                    "round": count - 1, "coordinator_peak_rss_mb": round(total_peak / 1024, 1), "serving_peak_rss_mb": round(peak / 1024, 1),
                    "model_processes_peak_rss_mb": round(children_peak / 1024, 1), "sqlite_mb": round(size / 2**20, 2),
                })
                peak, children_peak, total_peak, lines = 0, 0, 0, count
                if self.snapshot_round is not None and count > self.snapshot_round and not self.models:
                    with sqlite3.connect(f"file:{self.state / 'coordinator.sqlite'}?mode=ro", uri=True) as db:
                        rows = db.execute("SELECT round, weights FROM models WHERE round IN (?, ?)", (self.snapshot_round - 1, self.snapshot_round)).fetchall()
                    self.models = {r: np.frombuffer(w, "<f4").astype(np.float64) for r, w in rows}
            time.sleep(0.1)

    @property
    def cpu_s(self) -> float:
        return self._cpu_before + self._cpu_now

    def follow(self, pid: int) -> None:
        """The coordinator was restarted: watch the new process, keep the CPU the old one used."""
        self._cpu_before, self._cpu_now, self.pid = self.cpu_s, 0.0, pid

    def start(self) -> "CoordinatorWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(pid: int, clock: float) -> float:
    """User + system CPU of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / clock


def percentiles(values: list[float]) -> dict:
    array = np.array(values)
    return {"calls": int(array.size), "p50_s": round(float(np.percentile(array, 50)), 4), "p99_s": round(float(np.percentile(array, 99)), 4)} if array.size else {"calls": 0}


def start_coordinator(config: Path, log: Path) -> subprocess.Popen:
    """`fedbeat serve` (its log appended to ``log``), once it listens."""
    listening = log.read_text(errors="replace").count("listening on") if log.is_file() else 0
    process = subprocess.Popen([str(Path(sys.executable).with_name("fedbeat")), "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=open(log, "ab"))
    while log.read_text(errors="replace").count("listening on") == listening:
        if process.poll() is not None:
            raise RuntimeError("the coordinator did not start:\n" + log.read_text(errors="replace")[-3000:])
        time.sleep(0.2)
    return process


def kill_and_restart(coordinator: dict, watch: CoordinatorWatch, config: Path, log: Path, state: Path, args, killed: dict) -> None:
    """kill -9 the coordinator ``kill_after_s`` into round ``kill_round`` (the devices of it mid-check-in,
    mid-download and mid-upload), then start it again on the same state."""
    metrics = state / "metrics.jsonl"
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= args.kill_round):  # round kill_round - 1 published
        time.sleep(0.1)
    time.sleep(args.kill_after_s)
    with sqlite3.connect(f"file:{state / 'coordinator.sqlite'}?mode=ro", uri=True) as db:
        killed["reports_committed_before_kill"] = db.execute("SELECT COUNT(*) FROM reports WHERE round = ?", (args.kill_round,)).fetchone()[0]
    coordinator["process"].send_signal(signal.SIGKILL)
    coordinator["process"].wait()
    started = time.perf_counter()
    coordinator["process"] = start_coordinator(config, log)
    watch.follow(coordinator["process"].pid)
    killed["restart_s"] = round(time.perf_counter() - started, 1)


def kill_check(round_index: int, killed: dict, parts: list[dict], watch: CoordinatorWatch, records: list[dict]) -> dict:
    """Is every upload the coordinator acknowledged in the killed round (and every one it committed
    before the kill cut the reply) in that round's applied mean, and nothing else? Compares the
    model step (server learning rate 1, equal weights) with the mean of those updates as decoded."""
    total = sum(part["counted"]["sum"] for part in parts if part["counted"]["devices"])
    devices = sum(part["counted"]["devices"] for part in parts)
    step = watch.models[round_index] - watch.models[round_index - 1]
    residual = float(np.linalg.norm(step - total / devices))
    one_update = sum(part["counted"]["norms"] for part in parts) / devices / devices  # what leaving out one update would move the mean by
    reported = next(r["reported"] for r in records if r["round"] == round_index)
    return {
        **killed, "round": round_index, "acknowledged_or_committed": devices, "reported_in_round_record": reported,
        "step_residual_norm": residual, "one_update_effect_norm": one_update, "every_acknowledged_upload_counted_once": reported == devices and residual < one_update / 2,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--channels", type=int, default=32, help="HTTP/2 connections per load process")
    parser.add_argument("--compute-s", type=float, default=20.0, help="device compute time drawn uniformly in [0, this]")
    parser.add_argument("--deadline-s", type=float, default=40.0)
    parser.add_argument("--drop", type=float, default=0.02)
    parser.add_argument("--late", type=float, default=0.01)
    parser.add_argument("--garbage", type=float, default=0.01)
    parser.add_argument("--server", choices=("asyncio", "threads"), default="asyncio", help="the coordinator's gRPC server (config `server`)")
    parser.add_argument("--server-threads", type=int, default=32, help="worker threads of the threads server")
    parser.add_argument("--arrival-s", type=float, default=10.0, help="devices first check in at a time drawn uniformly in [0, this]")
    parser.add_argument("--pace-steering-s", type=float, default=2.0, help="the coordinator's pace_steering_s")
    parser.add_argument("--kill-round", type=int, default=None, help="kill -9 the coordinator in this round, restart it, and check its sum")
    parser.add_argument("--kill-after-s", type=float, default=15.0, help="seconds into --kill-round")
    parser.add_argument("--export", action="store_true", help="export TFLite for devices after every round (a TensorFlow job each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="", help="appended to the results file name (e.g. repeat runs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.kill_round is not None and not 2 <= args.kill_round <= args.rounds:
        parser.error("--kill-round must be in [2, rounds]: its sum is checked against the round before (equal weights from round 2 on)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` too stops the coordinator in `finally`
    with tempfile.TemporaryDirectory() as scratch:
        address = f"127.0.0.1:{portpicker.pick_unused_port()}"
        tokens = enroll(Path(scratch) / "devices.txt", args.devices)
        state = Path(scratch) / "state"
        config = Path(scratch) / "serve.toml"
        config.write_text(
            f'address = "{address}"\nstate_dir = "{state}"\ndevices_file = "{scratch}/devices.txt"\ninsecure = true\nrounds = {args.rounds}\n'
            f"clients_per_round = {args.devices}\noverselect = 1.0\ndeadline_s = {args.deadline_s}\nexport_tflite = {str(args.export).lower()}\nmax_concurrent_rpcs = 4096\nmax_retry_after_s = {args.deadline_s}\nserver_threads = {args.server_threads}\n"
            f'server = "{args.server}"\npace_steering_s = {args.pace_steering_s}\n'
        )
        log = Path(scratch) / "serve.log"
        coordinator = {"process": start_coordinator(config, log)}
        killed: dict = {}
        try:
            idle_mb = round(sum(status_kb(pid, "VmRSS") for pid in (coordinator["process"].pid, *child_pids(coordinator["process"].pid))) / 1024, 1)
            watch = CoordinatorWatch(coordinator["process"].pid, state, args.kill_round).start()
            if args.kill_round is not None:
                threading.Thread(target=kill_and_restart, args=(coordinator, watch, config, log, state, args, killed), daemon=True).start()
            shared = {
                "rounds": args.rounds, "channels": args.channels, "compute_s": args.compute_s, "arrival_s": args.arrival_s, "seed": args.seed, "kill_round": args.kill_round,
                "rates": {"drop": args.drop, "late": args.late, "garbage": args.garbage},
            }
            numbered = list(enumerate(tokens))
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            workers = [context.Process(target=process_main, args=(address, numbered[k :: args.processes], shared, queue)) for k in range(args.processes)]
            started = time.perf_counter()
            for worker in workers:
                worker.start()
            parts = []
            while len(parts) < len(workers):
                try:
                    parts.append(queue.get(timeout=5))
                except queue_module.Empty:
                    if any(w.exitcode not in (None, 0) for w in workers):
                        raise RuntimeError("a load process died; see its traceback above") from None
            for worker in workers:
                worker.join()
            wall = time.perf_counter() - started
            coordinator["process"].wait(timeout=300)
            watch.stop()
        finally:
            coordinator["process"].kill()
            for worker in workers if "workers" in locals() else []:
                worker.kill()
        records = [json.loads(line) for line in (state / "metrics.jsonl").read_text().splitlines()]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    outcome, reasons, latency = collections.Counter(), collections.Counter(), collections.defaultdict(list)
    for part in parts:
        outcome.update(part["outcome"])
        reasons.update(part["reasons"])
        for method, values in part["latency"].items():
            latency[method] += values
    per_round = {w["round"]: w for w in watch.rounds}
    result = {
        "devices": args.devices, "rounds": args.rounds, "processes": args.processes, "channels_per_process": args.channels, "server": args.server,
        **({"server_threads": args.server_threads} if args.server == "threads" else {}),
        "honest_accepted": outcome["honest accepted"], "honest_rejected": outcome["honest rejected"], "garbage_rejected": outcome["garbage rejected"],
        "garbage_accepted": outcome["garbage accepted"], "late_rejected": outcome["late rejected"], "dropped": outcome["dropped"],
        "short_of_time": {k.split(" ", 3)[-1]: v for k, v in outcome.items() if k.startswith("short of time")},
        "counted_reply_lost": sum(v for k, v in outcome.items() if k.endswith("counted, reply lost")),
        "retries": {k: v for k, v in outcome.items() if k.startswith("retried")}, "rejected_by_reason": dict(reasons),
        "latency": {method: percentiles(values) for method, values in sorted(latency.items())},
        "per_round": [{"round": r["round"], "reported": r.get("reported"), "dropped": r.get("dropped"), "rejected": r.get("rejected"), "late": r.get("late"),
                       "seconds": r.get("seconds"), **{k: v for k, v in per_round.get(r["round"], {}).items() if k != "round"}} for r in records],
        "arrival_s": args.arrival_s, "pace_steering_s": args.pace_steering_s, **({"kill": kill_check(args.kill_round, killed, parts, watch, records)} if args.kill_round else {}),
        "coordinator_idle_rss_mb": idle_mb, "coordinator_cpu_s": round(watch.cpu_s, 1), "model_processes_cpu_s": round(sum(watch.model_cpu_s.values()), 1),
        "load_generator_cpu_s": round(children.ru_utime + children.ru_stime - watch.cpu_s - sum(watch.model_cpu_s.values()), 1), "wall_s": round(wall, 1),
        "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} cores, Python {platform.python_version()}",
    }
    RESULTS.mkdir(exist_ok=True)
    suffix = (f"_threads{args.server_threads}" if args.server == "threads" else f"_{args.server}") + (f"_kill{args.kill_round}" if args.kill_round else "") + ("_export" if args.export else "") + (f"_{args.name}" if args.name else "")
    (RESULTS / f"coordinator_load_{args.devices}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps({k: v for k, v in result.items() if k != "per_round"}, indent=1))
        for row in result["per_round"]:
            print(row)
    kill_ok = result["kill"]["every_acknowledged_upload_counted_once"] if args.kill_round else True
    return 0 if result["honest_rejected"] == 0 and result["garbage_accepted"] == 0 and kill_ok else 1


if __name__ == "__main__":
    sys.exit(main())
