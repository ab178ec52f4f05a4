"""A TFF execution context whose C++ worker we own, start and always stop.

TFF's default context starts ``worker_binary`` lazily and kills it only when Python
garbage-collects the context; a process that exits or dies first leaves the worker
orphaned with our stdout open, so ``fedbeat simulate | tail`` and CI hang. Here the worker
is our own child: its output goes to a log file (never our pipes), the kernel kills it if
we die (PR_SET_PDEATHSIG, even on SIGKILL), and ``LocalTffRuntime`` stops it on exit,
on ``atexit`` and on SIGTERM/SIGINT. Under oneDNN kernels both processes return freed
tensors to the OS (``simulation.resources.return_freed_memory_to_os``), so resident memory
stays flat.

Local workers listen on loopback only (``simulation/loopback.py`` preloads a bind() shim:
worker_binary itself listens on every interface, unauthenticated); the runtime checks their
listening sockets once they are up and refuses to run if one is reachable from the network.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import FrameType

import grpc
import portpicker
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.test.compiler import replace_secure_intrinsics_with_bodies

from simulation.kernels import tensorflow_cpu_kernels
from simulation.loopback import LoopbackShimError, is_loopback, listening_sockets, loopback_preload
from simulation.resources import GLIBC_MALLOC_ENV, return_freed_memory_to_os
from simulation.worker_address import parse_worker_address

_PR_SET_PDEATHSIG = 1
_READY_TIMEOUT_S = 60.0
ALLOW_OPEN_WORKER_ENV = "FEDBEAT_ALLOW_OPEN_WORKER"


def worker_binary_path() -> Path:
    return Path(tff.__file__).resolve().parent / "data" / "worker_binary"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _executor_fn(stub: tff.framework.RemoteExecutorGrpcStub):
    def executor_fn(cardinalities: dict) -> tff.framework.RemoteExecutor:
        # A worker asked without a CLIENTS cardinality answers "No cardinality provided".
        executor = tff.framework.RemoteExecutor(stub)
        executor.set_cardinalities({**cardinalities, tff.CLIENTS: cardinalities.get(tff.CLIENTS) or 0})
        return executor

    return tff.framework.ResourceManagingExecutorFactory(executor_fn)


def _compile(comp):
    """TFF's test-context compilation: secure sums become plain sums (the simulated protocol), then native."""
    return tff.backends.native.desugar_and_transform_to_native(replace_secure_intrinsics_with_bodies(comp))


def _context(stub: tff.framework.RemoteExecutorGrpcStub, *, asynchronous: bool):
    kind = tff.framework.AsyncExecutionContext if asynchronous else tff.framework.SyncExecutionContext
    return kind(
        executor_fn=_executor_fn(stub),
        compiler_fn=_compile,
        transform_args=tff.tensorflow.transform_args,
        transform_result=tff.tensorflow.transform_result,
    )


class LocalTffRuntime:
    """Context manager: TFF's default context over C++ workers we start (or are given), always stopped.

    with LocalTffRuntime(): process.next(...)              # one local worker
    with LocalTffRuntime(workers=2): ...                   # two local workers, clients split
    with LocalTffRuntime(remote=["10.0.0.5:8000"]): ...    # workers already running elsewhere

    With more than one worker, TFF's mergeable context splits the CLIENTS of every
    computation across them and merges the aggregates, so results equal the one-worker run.
    """

    def __init__(self, *, workers: int = 1, remote: list[str] | tuple[str, ...] = (), log_path: Path | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._remote = [parse_worker_address(a) for a in remote]
        self._workers = 0 if self._remote else workers
        self._log_path = log_path
        self.processes: list[subprocess.Popen] = []
        self._previous_handlers: dict[int, object] = {}

    @property
    def process(self) -> subprocess.Popen | None:
        """The first local worker (None when only remote workers are used)."""
        return self.processes[0] if self.processes else None

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    @property
    def worker_count(self) -> int:
        return len(self._remote) or self._workers

    def __enter__(self) -> "LocalTffRuntime":
        worker_env = {**os.environ, **(self._loopback_env() if self._workers else {})}
        if tensorflow_cpu_kernels() == "onednn":  # flat resident memory, here and in the workers (see resources.py)
            return_freed_memory_to_os()
            worker_env.update(GLIBC_MALLOC_ENV)
        atexit.register(self.stop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[sig] = signal.signal(sig, self._stop_and_reraise)
        log_path = self._log_path or Path(tempfile.gettempdir()) / f"fedbeat-worker-{os.getpid()}.log"
        addresses = list(self._remote)
        for _ in range(self._workers):
            port = portpicker.pick_unused_port()
            with open(log_path, "ab") as log:
                self.processes.append(subprocess.Popen(
                    [str(worker_binary_path()), f"--port={port}", "--max_concurrent_computation_calls=-1"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_die_with_parent, env=worker_env,
                ))
            addresses.append(f"localhost:{port}")
        stubs = [tff.framework.RemoteExecutorGrpcStub(grpc.insecure_channel(a)) for a in addresses]
        deadline = time.monotonic() + _READY_TIMEOUT_S
        for address, stub in zip(addresses, stubs):
            while not stub.is_ready:
                if any(p.poll() is not None for p in self.processes) or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"TFF worker at {address} is not ready after {_READY_TIMEOUT_S:.0f} s (local worker log: {log_path})")
                time.sleep(0.05)
        self._refuse_open_listeners()
        if len(stubs) == 1:
            context = _context(stubs[0], asynchronous=False)
        else:
            context = tff.backends.native.create_mergeable_comp_execution_context([_context(s, asynchronous=True) for s in stubs])
        tff.framework.set_default_context(context)
        return self

    @staticmethod
    def _loopback_env() -> dict[str, str]:
        try:
            return {"LD_PRELOAD": str(loopback_preload())}
        except LoopbackShimError as error:
            if os.environ.get(ALLOW_OPEN_WORKER_ENV) == "1":
                return {}
            raise LoopbackShimError(f"{error}; or set {ALLOW_OPEN_WORKER_ENV}=1 to let the TFF worker listen on every interface") from error

    def _refuse_open_listeners(self) -> None:
        """Stop if a local worker listens on a non-loopback address (unless explicitly allowed)."""
        exposed = [f"{a}:{p}" for a, p in listening_sockets(self.worker_pids) if not is_loopback(a)]
        if exposed and os.environ.get(ALLOW_OPEN_WORKER_ENV) != "1":
            self.stop()
            raise LoopbackShimError(f"TFF worker listens on {', '.join(exposed)}, reachable from the network; refusing to run (set {ALLOW_OPEN_WORKER_ENV}=1 to accept)")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Kill our workers and wait for them; safe to call twice. Remote workers are not ours."""
        processes, self.processes = self.processes, []
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()
        atexit.unregister(self.stop)

    def _stop_and_reraise(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_handlers.get(signum)
        self.stop()
        if callable(previous):
            previous(signum, frame)
        else:
            raise SystemExit(128 + signum)
