"""The device side on 64-bit ARM gives the x86 results: same commands, compared output by output.

Runs when ``FEDBEAT_AARCH64_PYTHON`` names an aarch64 Python 3.11 holding only numpy,
tflite-runtime and grpcio (``make device-aarch64`` builds one under qemu user-mode
emulation, ``.ci/aarch64_python.sh``); skipped visibly otherwise. The x86 reference is
this test's own interpreter (same numpy and tflite-runtime versions).

Tolerances: integer results (R peaks, int8 logits, class labels), the weights round trip
and codec decodes of a fixed vector are bit-identical; float32 arithmetic through TFLite's
and numpy's kernels (filters, windows, losses, the trained update) agrees to 1e-5
relative: the instruction sets round the last bits of sums and logarithms differently.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edge_runtime.codecs import CODECS, UNIFORM_BITS
from edge_runtime.manifest import Manifest
from edge_runtime.identity import update_key
from edge_runtime.payload import decode_update
from tests.conftest import REPO_ROOT
from tests.edge_runtime.device_probe import pulse_strip

AARCH64_PYTHON = os.environ.get("FEDBEAT_AARCH64_PYTHON")
PROBE = REPO_ROOT / "tests" / "edge_runtime" / "device_probe.py"
EXACT = ("r_peaks", "int8_logits", "weights", "weights_roundtrip", "secure_mask", "secure_agreement", "secure_fixed_point") + tuple(f"codec_{c}" for c in sorted(CODECS))
CLOSE = ("conditioned", "windows", "log_rr", "probabilities", "losses", "update")
RELATIVE = 1e-5

pytestmark = [
    pytest.mark.aarch64,
    pytest.mark.skipif(not AARCH64_PYTHON, reason="FEDBEAT_AARCH64_PYTHON not set: `make device-aarch64` runs the aarch64 device pass"),
]


def run(python: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([python, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def device(python: str, *args: str) -> dict:
    result = run(python, "-m", "edge_runtime", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30)) if b.size else 0.0


def test_interpreter_is_aarch64_without_tensorflow():
    result = run(AARCH64_PYTHON, "-c", "import platform, sys, numpy, tflite_runtime, grpc; print(platform.machine()); print('tensorflow' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["aarch64", "False"]
    assert run(AARCH64_PYTHON, "-c", "import tensorflow").returncode != 0  # not installed there at all


def test_pipeline_arrays_match_x86(exported, tmp_path):
    # Prepare
    _, export, _ = exported
    # Execute: the same probe on both architectures
    for python, name in ((sys.executable, "x86.npz"), (AARCH64_PYTHON, "arm.npz")):
        result = run(python, str(PROBE), str(export), str(tmp_path / name))
        assert result.returncode == 0, result.stderr[-2000:]
        assert "tensorflow imported: False" in result.stdout
    x86, arm = np.load(tmp_path / "x86.npz"), np.load(tmp_path / "arm.npz")
    # Assert
    assert sorted(x86.files) == sorted(arm.files) == sorted(EXACT + CLOSE)
    assert x86["r_peaks"].size >= 20 and x86["windows"].shape[0] >= 20  # the strip really exercised the detector
    for key in EXACT:
        np.testing.assert_array_equal(arm[key], x86[key], err_msg=key)
    for key in CLOSE:
        assert arm[key].shape == x86[key].shape, key
        assert relative_error(arm[key], x86[key]) <= RELATIVE, (key, relative_error(arm[key], x86[key]))


def test_selftest_infer_and_train_match_x86(exported, tmp_path):
    # Prepare: a labelled 60 s strip and a 60 s unlabelled one from the synthetic records
    _, export, _ = exported
    sample = np.load(REPO_ROOT / "edge_runtime" / "sample_beats.npz")
    signal, r_samples = pulse_strip(60, every=300, seed=1)
    labels = np.where(np.arange(r_samples.size) % 9 == 4, 2, 0)
    np.savez(tmp_path / "local.npz", signal=signal, fs=360.0, r_samples=r_samples, labels=labels)
    np.save(tmp_path / "strip.npy", signal)
    assert sample["beat"].shape[0] > 0
    manifest = Manifest.read(export / "manifest.json")
    results = {}
    # Execute
    for arch, python in (("x86", sys.executable), ("arm", AARCH64_PYTHON)):
        out = tmp_path / arch
        out.mkdir()
        results[arch] = {
            "selftest": device(python, "selftest", "--model", str(export / "model_train.tflite"), "--json"),
            "infer": device(python, "infer", "--model", str(export), "--ecg", str(tmp_path / "strip.npy"), "--fs", "360"),
        }
        for codec in sorted(CODECS):
            report = device(python, "train", "--model", str(export), "--data", str(tmp_path / "local.npz"), "--codec", codec,
                            "--round", "2", "--state-dir", str(out / f"state-{codec}"), "--out", str(out / f"{codec}.bin"), "--token", "pi-1")
            _, update = decode_update(
                (out / f"{codec}.bin").read_bytes(), key=update_key("pi-1"), layout_hash=manifest.layout_hash, length=manifest.parameters, max_norm=100.0,
            )
            results[arch][codec] = (report, update)
    x86, arm = results["x86"], results["arm"]
    # Assert
    assert arm["selftest"]["tensorflow_imported"] is False and arm["selftest"]["weights_roundtrip_exact"] is True
    for key in ("loss_first", "loss_last"):
        assert arm["selftest"][key] == pytest.approx(x86["selftest"][key], rel=RELATIVE)
    assert arm["infer"] == x86["infer"]  # peaks, classes, heart rate and burdens identical
    assert x86["infer"]["summary"]["beats_detected"] >= 60
    for codec in sorted(CODECS):
        (x_report, x_update), (a_report, a_update) = x86[codec], arm[codec]
        assert a_report["steps"] == x_report["steps"] and a_report["payload_bytes"] == x_report["payload_bytes"], codec
        assert a_report["loss_last"] == pytest.approx(x_report["loss_last"], rel=RELATIVE), codec
        # A near-identical update may land on the other side of a quantization level in a few
        # coordinates: each moves by one level, the rest agree to float noise.
        step, difference = quantization_step(codec, x_update), np.abs(a_update - x_update)
        apart = difference > 0.5 * step if step else np.zeros(difference.shape, dtype=bool)
        assert apart.sum() <= 1e-3 * x_update.size, (codec, int(apart.sum()))
        assert difference[apart].max(initial=0.0) <= 1.01 * step, codec
        assert np.linalg.norm(difference[~apart]) <= 1e-3 * np.linalg.norm(x_update), codec


def quantization_step(codec: str, decoded: np.ndarray) -> float:
    """How far one coordinate moves when it rounds to the neighbouring level of a uniform codec
    (the decoded vector's span over its levels); 0 for codecs without fixed levels."""
    if codec not in UNIFORM_BITS:
        return 0.0
    return float(decoded.max() - decoded.min()) / (2 ** UNIFORM_BITS[codec] - 1)


def test_join_round_against_fedbeat_serve():
    # Execute: `fedbeat serve` (x86, TensorFlow) and aarch64 devices: one plain round of one, one secure-aggregation round of three
    result = run(sys.executable, "-m", "simulation.coordinator.smoke", "--device-python", AARCH64_PYTHON)
    # Assert
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["plain"]["round"]["reported"] == 1 and report["plain"]["round"]["round"] == 1
    assert report["secure aggregation"]["round"]["reported"] == 3 and report["secure aggregation"]["round"]["abandoned"] is False


def test_personalize_matches_x86(exported, mitdb, tmp_path, capsys):
    # Prepare: a wearer's labelled first 5 minutes (record 232)
    from tests.edge_runtime.test_personalize import labelled_strip

    _, export, _ = exported
    data = labelled_strip(mitdb, "232", 0.0, 300.0, tmp_path / "first.npz")
    # Execute
    reports = {arch: device(python, "personalize", "--model", str(export), "--data", str(data), "--out", str(tmp_path / arch / "personal"), "--json")
               for arch, python in (("x86", sys.executable), ("arm", AARCH64_PYTHON))}
    # Assert: the same decision, the same epochs, weights equal to float32 drift
    x86, arm = reports["x86"], reports["arm"]
    for key in ("kept", "epochs", "beats", "held_back_errors_global", "held_back_errors_personal"):
        assert arm[key] == x86[key], key
    weights = {arch: np.load(tmp_path / arch / "personal" / "weights.npy") for arch in reports}
    assert relative_error(weights["arm"], weights["x86"]) <= 1e-3
    with capsys.disabled():
        print(f"\npersonalize, {arm['beats']} beats: aarch64 (qemu) {arm['seconds']} s, {arm['peak_rss_mb']} MB; x86 {x86['seconds']} s, {x86['peak_rss_mb']} MB")
