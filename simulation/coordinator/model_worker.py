"""The coordinator's model work (TensorFlow) in a process of its own.

The serving process stays free of TensorFlow: it answers check-ins and uploads, keeps the
round's running sum and commits closes, with numpy, gRPC and SQLite only. Building the seeded
model and its trainable TFLite file, evaluating each new global model on the held-out people
and exporting TFLite for devices happen in one spawned worker process (``model_side``), so a
slow evaluation or a conversion never competes with a device's call for the interpreter, and
TensorFlow's memory is not the server's. The worker runs TensorFlow on one thread at a lower
CPU priority (nice 10: on a 2-core machine evaluating the previous round's model at default
priority held the next round's uploads at a median of 1-2 s, against 0.02 s in the last
round, which has no evaluation behind it), ignores Ctrl-C (the server shuts it down in order) and exits
on its own within a second if the serving process dies, even by kill -9: no orphan.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np

from simulation.coordinator.config import CoordinatorConfig

WORKER_NICENESS = 10


@dataclasses.dataclass(frozen=True)
class ModelSetup:
    """What the serving process needs of the model: round 0's weights (float32, flat), the
    manifest devices check (layout hash, class weights, parameter count) and the trainable
    TFLite file devices download."""

    initial_weights: np.ndarray
    manifest: dict
    tflite: bytes


class ModelWorker:
    """One spawned process doing the coordinator's TensorFlow work, one call at a time."""

    def __init__(self, config: CoordinatorConfig):
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_start, initargs=(config, os.getpid()),
        )

    def setup(self) -> ModelSetup:
        return self._pool.submit(_call, "setup").result()

    def evaluate(self, weights: np.ndarray) -> dict:
        """Loss, accuracy and macro-F1 of ``weights`` on the held-out people."""
        return self._pool.submit(_call, "evaluate", weights).result()

    def export(self, version: str, weights: np.ndarray, final: Path) -> None:
        """Device TFLite files of ``weights`` at ``final`` (written aside, then renamed)."""
        self._pool.submit(_call, "export", version, weights, final).result()

    def pid(self) -> int:
        return self._pool.submit(os.getpid).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _start(config: CoordinatorConfig, server_pid: int) -> None:
    os.nice(WORKER_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(server_pid,), daemon=True).start()
    from simulation.coordinator import model_side  # TensorFlow: in this process only

    model_side.start(config)


def _exit_with(server_pid: int) -> None:
    """The pipe to a killed parent does not close while this process holds its other end, so
    watch the parent instead."""
    while os.getppid() == server_pid:
        time.sleep(0.5)
    os._exit(0)


def _call(name: str, *args):
    from simulation.coordinator import model_side

    return model_side.call(name, *args)
