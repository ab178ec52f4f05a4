"""Beat windows and RR features, the one definition shared by training data and device."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edge_runtime.beats import RR_FEATURE_NAMES, BeatSpec, beat_windows, condition, cut_beats, rr_features, to_spec_samples, wearer_template
from tests.conftest import REPO_ROOT


def test_default_window_is_88_samples_at_125_hz():
    spec = BeatSpec()
    assert (spec.fs_hz, spec.before, spec.after, spec.window) == (125.0, 32, 56, 88)


def test_rr_features_by_hand():
    # Prepare: regular 1 s rhythm with one premature beat at 4.6 s
    times = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 4.6, 6.0, 7.0])
    spec = BeatSpec(rr_context_beats=2)
    # Execute
    features, valid = rr_features(times, spec)
    # Assert
    assert valid.tolist() == [False, True, True, True, True, True, True, False]
    premature = dict(zip(RR_FEATURE_NAMES, features[5]))
    local = (1.0 + 0.6 + 1.4 + 1.0) / 4  # intervals 3-4, 4-4.6 | 4.6-6, 6-7
    assert premature["pre_rr_s"] == pytest.approx(0.6)
    assert premature["post_rr_s"] == pytest.approx(1.4)
    assert premature["local_rr_s"] == pytest.approx(local)
    assert premature["pre_over_local"] == pytest.approx(0.6 / local)
    assert premature["post_over_local"] == pytest.approx(1.4 / local)
    assert premature["pre_over_post"] == pytest.approx(0.6 / 1.4)
    assert premature["average_rr_s"] == pytest.approx(1.0)  # all 7 intervals: 7 s / 7
    assert premature["pre_over_average"] == pytest.approx(0.6)


def test_rr_features_need_increasing_times():
    with pytest.raises(ValueError, match="strictly increasing"):
        rr_features(np.array([0.0, 1.0, 1.0, 2.0]), BeatSpec())


def test_windows_are_z_scored_and_edge_beats_dropped():
    spec = BeatSpec()
    signal = np.sin(np.arange(1000) / 7.0).astype(np.float32) * 3 + 5
    windows, kept = beat_windows(signal, np.array([10, 100, 500, 990]), spec)
    assert kept.tolist() == [False, True, True, False]
    assert windows.shape == (2, spec.window)
    np.testing.assert_allclose(windows.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(windows.std(axis=1), 1, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fs_hz": 0}, "fs_hz must be positive"),
        ({"band_hz": (0.5, 70.0)}, "band_hz must satisfy"),
        ({"before_s": -0.1}, "before_s and after_s must be positive"),
        ({"rr_context_beats": 0}, "need 1 <= rr_context_beats <= rr_average_beats"),
        ({"rr_context_beats": 8, "rr_average_beats": 4}, "need 1 <= rr_context_beats <= rr_average_beats"),
        ({"filter_order": 0}, "filter_order must be >= 1"),
    ],
)
def test_spec_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BeatSpec(**kwargs)


def test_fingerprint_changes_with_the_spec():
    assert BeatSpec().fingerprint() == BeatSpec().fingerprint()
    assert BeatSpec().fingerprint() != BeatSpec(fs_hz=250.0).fingerprint()


def test_edge_runtime_never_imports_tensorflow():
    # The device has numpy + tflite-runtime (+ grpcio to join): no TF, no scipy, no protobuf runtime.
    code = (
        "import importlib, pkgutil, sys, edge_runtime\n"
        "for m in pkgutil.walk_packages(edge_runtime.__path__, 'edge_runtime.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('tensorflow', 'keras', 'tensorflow_federated', 'scipy') or n.startswith('google.protobuf'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_wearer_template_is_the_median_beat_so_one_ectopic_beat_stands_out():
    rng = np.random.default_rng(0)
    typical = np.sin(np.linspace(0, 3 * np.pi, 88)).astype(np.float32)
    windows = typical + 0.01 * rng.normal(size=(40, 88)).astype(np.float32)
    windows[20] = -typical  # one inverted (ectopic) beat among 39 typical ones
    template = wearer_template(windows, 31)
    np.testing.assert_allclose(template, np.broadcast_to(typical, template.shape), atol=0.02)
    difference = np.abs(windows - template).max(axis=1)
    assert difference[20] > 1.5 and np.delete(difference, 20).max() < 0.05


def test_wearer_template_uses_all_beats_of_a_short_strip_and_the_same_count_at_the_ends():
    windows = np.arange(5 * 4, dtype=np.float32).reshape(5, 4)
    np.testing.assert_array_equal(wearer_template(windows, 31), np.broadcast_to(np.median(windows, axis=0), (5, 4)))
    long = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    template = wearer_template(long, 3)  # the first beat's neighbours are beats 0-2, the last's 7-9
    np.testing.assert_array_equal(template[:, 0], [1, 1, 2, 3, 4, 5, 6, 7, 8, 8])


def test_cut_beats_gives_the_beat_and_its_difference_from_the_wearer_template():
    spec = BeatSpec()
    fs = 360.0
    peaks = np.arange(1, 30) * int(0.8 * fs)
    signal = np.zeros(int(peaks[-1] + fs), np.float32)
    signal[peaks] = 1.0
    beats, rr, index = cut_beats(signal, fs, peaks, spec)
    assert beats.shape == (len(index), *spec.beat_shape) and rr.shape == (len(index), len(RR_FEATURE_NAMES))
    windows, _ = beat_windows(condition(signal, fs, spec), to_spec_samples(peaks, fs, spec), spec)
    np.testing.assert_array_equal(beats[..., 0], windows[index])
    assert np.abs(beats[..., 1]).max() < 0.05  # a regular rhythm of one beat shape: nothing differs from the wearer's own
