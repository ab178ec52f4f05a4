"""Run by a device interpreter (x86 or aarch64): the device pipeline's outputs on fixed inputs, to one .npz.

Usage: PYTHON tests/edge_runtime/device_probe.py EXPORT_DIR OUT.npz
Imports numpy, tflite-runtime and edge_runtime only, like a watch. ``test_aarch64.py`` runs it
under both architectures and compares the arrays.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_runtime.beats import BeatSpec, condition  # noqa: E402
from edge_runtime.codecs import CODECS, decode, encode  # noqa: E402
from edge_runtime.detector import detect_r_peaks  # noqa: E402
from edge_runtime.interpreter import Int8Classifier, TrainableModel  # noqa: E402
from edge_runtime.local_training import LocalTrainingConfig, train_locally  # noqa: E402
from edge_runtime.manifest import Manifest  # noqa: E402
from edge_runtime.masking import FixedPoint, agreed_key, mask, public_key  # noqa: E402
from edge_runtime.strip import strip_beats  # noqa: E402

SAMPLE_BEATS = Path(__file__).resolve().parents[2] / "edge_runtime" / "sample_beats.npz"


def pulse_strip(seconds: float, *, every: int, seed: int, fs: int = 360) -> tuple[np.ndarray, np.ndarray]:
    """(signal float[n] mV, R samples): smooth 1.2 mV pulses every ``every`` samples in 0.02 mV noise."""
    signal = np.zeros(int(fs * seconds))
    r_samples = np.arange(200, signal.size - 200, every)
    for r in r_samples:
        signal[r - 40:r + 40] += np.hanning(80) * 1.2
    return signal + 0.02 * np.random.default_rng(seed).standard_normal(signal.size), r_samples


def probe(export: Path) -> dict[str, np.ndarray]:
    manifest = Manifest.read(export / "manifest.json")
    spec: BeatSpec = manifest.beat_spec
    sample = np.load(SAMPLE_BEATS)
    strip, _ = pulse_strip(20, every=290, seed=0)  # enough for the filter, detector and windows
    conditioned = condition(strip, 360.0, spec)
    peaks = detect_r_peaks(strip, 360.0)
    beats = strip_beats(strip, 360.0, spec)
    int8_logits = Int8Classifier(export / "model_int8.tflite").logits(sample["beat"][:64], sample["log_rr"][:64])
    model = TrainableModel(export / "model_train.tflite")
    start = model.get_weights()
    update, losses = train_locally(
        model, start, beat=sample["beat"], log_rr=sample["log_rr"], label=sample["label"],
        class_weights=np.asarray(manifest.class_weights, np.float32), config=LocalTrainingConfig(epochs=2, learning_rate=0.05),
    )
    model.set_weights(start)
    out = {
        "conditioned": conditioned, "r_peaks": peaks, "windows": beats.beat, "log_rr": beats.log_rr,
        "int8_logits": int8_logits, "weights": start, "weights_roundtrip": model.get_weights(),
        "probabilities": model.probabilities(sample["beat"][:64], sample["log_rr"][:64]),
        "losses": np.asarray(losses), "update": update,
    }
    fixed = (np.linspace(-1, 1, update.size) ** 3).astype(np.float32)  # the same input for every codec on both machines
    for codec in sorted(CODECS):
        out[f"codec_{codec}"] = decode(codec, encode(codec, fixed, 7), fixed.size, 7)
    # Secure aggregation's arithmetic on fixed keys: masks, agreed secrets and the fixed-point code must be bit-identical.
    first, second = bytes(range(32)), bytes(range(32, 64))
    out["secure_mask"] = mask(agreed_key(first, public_key(second), b"probe"), fixed.size)
    out["secure_agreement"] = np.frombuffer(agreed_key(second, public_key(first), b"probe"), np.uint8)
    out["secure_fixed_point"] = FixedPoint.for_cohort(1.0, 500).encode(fixed, 7)
    return out


if __name__ == "__main__":
    np.savez(sys.argv[2], **probe(Path(sys.argv[1])))
    print("tensorflow imported:", any(name.split(".")[0] in ("tensorflow", "keras") for name in sys.modules))
