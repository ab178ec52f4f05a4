"""The numpy band-pass + resampler (shared by datasets and device) against scipy.signal."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from datasets.records import read_record
from edge_runtime.filters import bandpass_resample


def scipy_reference(x: np.ndarray, fs_in: float, up: int, down: int) -> np.ndarray:
    """Butterworth high-pass and low-pass run forwards and backwards, then polyphase resampling."""
    sos = np.concatenate([sps.butter(2, 0.5, "highpass", fs=fs_in, output="sos"), sps.butter(2, 40.0, "lowpass", fs=fs_in, output="sos")])
    return sps.resample_poly(sps.sosfiltfilt(sos, x), up, down)


def relative_rms_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


def test_matches_scipy_on_real_mitdb_record(mitdb):
    # Prepare: one minute of record 100 (MLII, 360 Hz)
    x = read_record(mitdb / "100").signal[: 360 * 60]
    # Execute
    ours = bandpass_resample(x, 360.0, 125.0)
    reference = scipy_reference(x, 360.0, 25, 72)
    # Assert: same length and, away from the ends, the same waveform within 2 %
    assert ours.shape == reference.shape == (125 * 60,)
    interior = slice(250, -250)
    assert relative_rms_error(ours[interior], reference[interior]) < 0.02


def test_matches_scipy_on_synthetic_watch_rate(synthetic_dir):
    x = read_record(synthetic_dir / "syn000").signal[: 360 * 30]
    watch = sps.resample_poly(x, 25, 18)  # a 500 Hz watch strip
    ours = bandpass_resample(watch, 500.0, 125.0)
    reference = scipy_reference(watch, 500.0, 1, 4)
    assert relative_rms_error(ours[250:-250], reference[250:-250]) < 0.02


def test_preserves_timing_of_a_peak():
    # A narrow pulse at 2.5 s must stay at 2.5 s after resampling (no half-sample drift).
    fs_in, fs_out = 360.0, 125.0
    x = np.zeros(int(10 * fs_in))
    x[int(2.5 * fs_in)] = 1.0
    y = bandpass_resample(x, fs_in, fs_out)
    assert abs(np.argmax(y) / fs_out - 2.5) <= 1 / fs_out


def test_passband_sine_keeps_its_amplitude_and_stopband_is_removed():
    fs = 360.0
    t = np.arange(int(20 * fs)) / fs
    y = bandpass_resample(np.sin(2 * np.pi * 10 * t) + np.sin(2 * np.pi * 0.05 * t), fs, 125.0)
    interior = y[500:-500]
    assert np.ptp(interior) == pytest.approx(2.0, rel=0.02)


def test_rejects_a_band_above_the_output_nyquist():
    with pytest.raises(ValueError, match="Nyquist"):
        bandpass_resample(np.zeros(1000), 360.0, 60.0)


def test_rejects_a_too_short_signal():
    with pytest.raises(ValueError, match="at least 2 samples"):
        bandpass_resample(np.zeros(1), 360.0, 125.0)
