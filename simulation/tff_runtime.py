"""A TFF execution context whose C++ worker we own, start and always stop.

TFF's default context starts ``worker_binary`` lazily and kills it only when Python
garbage-collects the context; a process that exits or dies first leaves the worker
orphaned with our stdout open, so ``fedbeat simulate | tail`` and CI hang. Here the worker
is our own child: its output goes to a log file (never our pipes), the kernel kills it if
we die (PR_SET_PDEATHSIG, even on SIGKILL), and ``LocalTffRuntime`` stops it on exit,
on ``atexit`` and on SIGTERM/SIGINT.
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

_PR_SET_PDEATHSIG = 1
_READY_TIMEOUT_S = 60.0


def worker_binary_path() -> Path:
    return Path(tff.__file__).resolve().parent / "data" / "worker_binary"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LocalTffRuntime:
    """Context manager: a local C++ worker installed as TFF's default execution context.

    with LocalTffRuntime(): process.next(...)  # the worker is gone after the block
    """

    def __init__(self, *, log_path: Path | None = None):
        self._log_path = log_path
        self.process: subprocess.Popen | None = None
        self._previous_handlers: dict[int, object] = {}

    def __enter__(self) -> "LocalTffRuntime":
        port = portpicker.pick_unused_port()
        log_path = self._log_path or Path(tempfile.gettempdir()) / f"fedbeat-worker-{os.getpid()}.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(worker_binary_path()), f"--port={port}", "--max_concurrent_computation_calls=-1"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_die_with_parent,
            )
        atexit.register(self.stop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[sig] = signal.signal(sig, self._stop_and_reraise)
        stub = tff.framework.RemoteExecutorGrpcStub(grpc.insecure_channel(f"localhost:{port}"))
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while not stub.is_ready:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"TFF worker_binary did not start (see {log_path})")
            time.sleep(0.05)

        def executor_fn(cardinalities: dict) -> tff.framework.RemoteExecutor:
            executor = tff.framework.RemoteExecutor(stub)
            executor.set_cardinalities({**cardinalities, tff.CLIENTS: cardinalities.get(tff.CLIENTS) or 0})
            return executor

        context = tff.framework.SyncExecutionContext(
            executor_fn=tff.framework.ResourceManagingExecutorFactory(executor_fn),
            compiler_fn=tff.backends.native.desugar_and_transform_to_native,
            transform_args=tff.tensorflow.transform_args,
            transform_result=tff.tensorflow.transform_result,
        )
        tff.framework.set_default_context(context)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Kill the worker and wait for it; safe to call twice."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
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
