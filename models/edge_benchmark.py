"""`fedbeat bench edge`: on-device training and inference cost, measured in one process.

The TFLite train step is compared with a compiled GradientTape step of the same Keras
model on the same batch in the same process (a ratio, since machines are noisy); the
device process's peak RSS is measured in a child running only numpy + tflite-runtime.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from datasets.beat_table import BeatTable
from edge_runtime.codecs import CODECS, decode, encode
from edge_runtime.interpreter import Int8Classifier, TrainableModel
from models.beat_classifier import WeightedCrossEntropy, build_beat_classifier, class_weights
from models.export import export_for_devices

REPO_ROOT = Path(__file__).resolve().parents[1]


def _median_ms(step, repeats: int) -> float:
    step()  # warm-up (tracing, allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def benchmark_edge(train: BeatTable, *, batch_size: int = 32, repeats: int = 50) -> dict:
    from simulation.beat_data import model_inputs

    weights = class_weights(train.labels)
    model = build_beat_classifier(seed=0)
    beat, log_rr = model_inputs(train)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        export_for_devices(model, out, beats=beat, log_rr=log_rr, class_weights=weights)
        device = TrainableModel(out / "model_train.tflite")
        batch_beat, batch_rr = beat[:batch_size], log_rr[:batch_size]
        label = train.labels[:batch_size].astype(np.int32)
        tflite_ms = _median_ms(lambda: device.train_step(batch_beat, batch_rr, label, weights[label], learning_rate=0.01), repeats)

        optimizer = tf.keras.optimizers.SGD(0.01)
        loss_fn = WeightedCrossEntropy(weights)

        @tf.function
        def tf_step(b, r, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model((b, r), training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_weights), model.trainable_weights))
            return loss

        tensors = (tf.constant(batch_beat), tf.constant(batch_rr), tf.constant(label))
        tf_ms = _median_ms(lambda: tf_step(*tensors).numpy(), repeats)

        int8 = Int8Classifier(out / "model_int8.tflite")
        infer_ms = _median_ms(lambda: int8.logits(beat[:100], log_rr[:100]), 5) / 100

        start = device.get_weights()
        for first in range(0, 320, batch_size):  # a real update: 10 local steps on real beats
            rows = slice(first, first + batch_size)
            device.train_step(beat[rows], log_rr[rows], train.labels[rows].astype(np.int32), weights[train.labels[rows]], learning_rate=0.2)
        update = device.get_weights() - start
        codecs = {}
        for name in CODECS:
            body = encode(name, update, seed=1)
            decoded = decode(name, body, update.size, seed=1)
            codecs[name] = {
                "bytes": len(body),
                "ratio_vs_fp32": round(update.nbytes / len(body), 1),
                "nmse": float(np.sum((decoded - update) ** 2) / np.sum(update**2)),
            }
        selftest = subprocess.run([sys.executable, "-m", "edge_runtime", "selftest", "--model", str(out / "model_train.tflite"), "--json"],
                                  cwd=REPO_ROOT, check=True, capture_output=True, text=True)
        return {
            "batch_size": batch_size,
            "train_step_ms_tflite": round(tflite_ms, 3),
            "train_step_ms_tf": round(tf_ms, 3),
            "train_step_ratio": round(tflite_ms / tf_ms, 3),
            "infer_ms_per_beat": round(infer_ms, 4),
            "model_train_bytes": (out / "model_train.tflite").stat().st_size,
            "model_int8_bytes": (out / "model_int8.tflite").stat().st_size,
            "device_peak_rss_mb": json.loads(selftest.stdout)["peak_rss_mb"],
            "codecs": codecs,
        }
