"""`fedbeat export`: the TFLite artefacts a device needs, from a trained Keras model.

DIR/model_train.tflite  infer / train / get_weights / set_weights, builtin ops only
DIR/model_int8.tflite   full-integer inference model (int8 in, int8 out)
DIR/manifest.json       model version, input spec, classes, weight layout, rate, window
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from edge_runtime.aami import CLASS_NAMES
from edge_runtime.beats import RR_FEATURE_NAMES, BeatSpec
from edge_runtime.manifest import layout_hash
from models.edge_trainable import convert_trainable, weight_layout


def convert_int8(model: tf.keras.Model, beats: np.ndarray, log_rr: np.ndarray, *, samples: int = 500, seed: int = 0) -> bytes:
    """Full-integer quantization calibrated on real beats (``samples`` drawn at random)."""
    pick = np.random.default_rng(seed).permutation(beats.shape[0])[:samples]

    def representative():
        for i in pick:
            yield {"beat": beats[i : i + 1].astype(np.float32), "log_rr": log_rr[i : i + 1].astype(np.float32)}

    @tf.function(input_signature=[tf.TensorSpec([1, *beats.shape[1:]], tf.float32, name="beat"), tf.TensorSpec([1, log_rr.shape[1]], tf.float32, name="log_rr")])
    def serve(beat, log_rr):
        return {"logits": model((beat, log_rr))}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def export_for_devices(model: tf.keras.Model, out_dir: Path, *, beats: np.ndarray, log_rr: np.ndarray, class_weights: np.ndarray, spec: BeatSpec = BeatSpec()) -> dict:
    """Write the two models and the manifest; return the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as saved_model:
        trainable = convert_trainable(model, saved_model)
    quantized = convert_int8(model, beats, log_rr)
    (out_dir / "model_train.tflite").write_bytes(trainable)
    (out_dir / "model_int8.tflite").write_bytes(quantized)
    layout = weight_layout(model)
    weights = np.concatenate([w.ravel() for w in model.get_weights()]).astype(np.float32)
    manifest = {
        "format": 1,
        "model_version": hashlib.sha256(weights.tobytes()).hexdigest()[:16],
        "class_names": list(CLASS_NAMES),
        "class_weights": [float(w) for w in class_weights],
        "inputs": {"beat": [None, *spec.beat_shape], "log_rr": [None, len(RR_FEATURE_NAMES)]},
        "rr_features": list(RR_FEATURE_NAMES),
        "beat_spec": dataclasses.asdict(spec),
        "weight_layout": [{"name": name, "shape": list(shape)} for name, shape in layout],
        "weight_layout_hash": layout_hash(layout),
        "parameters": int(weights.size),
        "files": {
            name: hashlib.sha256((out_dir / name).read_bytes()).hexdigest() for name in ("model_train.tflite", "model_int8.tflite")
        },
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
