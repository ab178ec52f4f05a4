"""The coordinator's model work, in processes of its own.

The serving process stays free of TensorFlow: it answers check-ins and uploads, keeps the
round's running sum and commits closes, with numpy, gRPC and SQLite only. The model work runs
in spawned processes, so a slow evaluation or a conversion never competes with a device's
call for the interpreter:

- TensorFlow jobs (building the seeded model and its trainable TFLite file at start, exporting
  a round's model for devices) each run in a fresh process that exits when the job is done, so
  TensorFlow's 0.65 GB is resident only while it works (model_side.py);
- evaluating each new model on the held-out people runs in one long-lived process on
  tflite-runtime and numpy (held_out.py): the held-out beats are loaded once, and the process
  holds no TensorFlow.

Both run at a lower CPU priority (nice 10: on a 2-core machine evaluating the previous round's
model at default priority held the next round's uploads at a median of 1-2 s, against 0.02 s in
the last round, which has no evaluation behind it), ignore Ctrl-C (the server shuts them down
in order) and exit on their own within a second if the serving process dies, even by kill -9:
no orphan.
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


def trainable_tflite_path(config: CoordinatorConfig) -> Path:
    """The architecture's trainable TFLite file, converted once per state directory."""
    return Path(config.state_dir) / "model_train.tflite"


def _spawned_pool(initializer, *args) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=initializer, initargs=(os.getpid(), *args),
    )


class ModelWorker:
    """The long-lived evaluator process, and one fresh process per TensorFlow job."""

    def __init__(self, config: CoordinatorConfig):
        self._config = config
        self._evaluator: concurrent.futures.ProcessPoolExecutor | None = None

    def _tensorflow(self, name: str, *args):
        with _spawned_pool(_start_tensorflow, self._config) as pool:
            return pool.submit(_tensorflow_call, name, *args).result()

    def setup(self) -> ModelSetup:
        """Round 0's model; then starts the evaluator, which loads the held-out people now, so that a
        missing data directory fails the coordinator's start."""
        setup = self._tensorflow("setup")
        self._evaluator = _spawned_pool(_start_evaluator, self._config, trainable_tflite_path(self._config), setup.manifest["class_weights"])
        self._evaluator.submit(os.getpid).result()
        return setup

    def evaluate(self, weights: np.ndarray) -> dict:
        """Loss, accuracy and macro-F1 of ``weights`` on the held-out people."""
        return self._evaluator.submit(_evaluate, weights).result()

    def export(self, version: str, weights: np.ndarray, final: Path) -> None:
        """Device TFLite files of ``weights`` at ``final`` (written aside, then renamed)."""
        self._tensorflow("export", version, weights, final)

    def pid(self) -> int:
        """The evaluator's process id."""
        return self._evaluator.submit(os.getpid).result()

    def close(self) -> None:
        if self._evaluator is not None:
            self._evaluator.shutdown(wait=True)


def _detach(server_pid: int) -> None:
    os.nice(WORKER_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(server_pid,), daemon=True).start()


def _exit_with(server_pid: int) -> None:
    """The pipe to a killed parent does not close while this process holds its other end, so
    watch the parent instead."""
    while os.getppid() == server_pid:
        time.sleep(0.5)
    os._exit(0)


def _start_tensorflow(server_pid: int, config: CoordinatorConfig) -> None:
    _detach(server_pid)
    from simulation.coordinator import model_side  # TensorFlow: in this process only

    model_side.start(config)


def _tensorflow_call(name: str, *args):
    from simulation.coordinator import model_side

    return model_side.call(name, *args)


_evaluation = None


def _start_evaluator(server_pid: int, config: CoordinatorConfig, tflite: Path, loss_weights: list[float]) -> None:
    global _evaluation
    _detach(server_pid)
    from simulation.coordinator.held_out import HeldOutEvaluation

    _evaluation = HeldOutEvaluation(config, tflite, loss_weights)


def _evaluate(weights: np.ndarray) -> dict:
    return _evaluation.evaluate(weights)
