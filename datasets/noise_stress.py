"""Calibrated noise on a clean ECG, as PhysioNet's nst (noise stress test) adds it.

Used by the detection benchmark (nst's protocol: 5 clean minutes, then 2-minute noisy and clean
periods in turn) and by noise augmentation of training people (noise throughout).
"""
from __future__ import annotations

import numpy as np

NST_GAIN_CALIBRATION = 1.574
"""nst sets the noise gain from `sigamp`'s QRS and noise amplitudes, which weigh a record
differently from the peak-to-peak / RMS measures here: nstdb's own 118e24, 118e12, 118e00 and
118e_6 carry 1.574x (+3.9 dB of noise) the gain these measures give, at every SNR
(tests/datasets/test_detection_benchmark.py checks it), so noise added here has nst's scale."""


def qrs_signal_power(signal: np.ndarray, beats: np.ndarray, fs_hz: float) -> float:
    """nst's signal size: the mean of (QRS peak-to-peak amplitude)^2 / 8, the largest and smallest 5 % of beats left out."""
    half = int(0.05 * fs_hz)
    inside = beats[(beats >= half) & (beats + half < signal.size)]
    windows = signal[inside[:, None] + np.arange(-half, half + 1)[None, :]]
    amplitude = np.sort(windows.max(axis=1) - windows.min(axis=1))
    trimmed = amplitude[int(0.05 * amplitude.size): max(int(0.95 * amplitude.size), 1)]
    return float(np.mean(trimmed**2) / 8.0)


def noise_power(noise: np.ndarray, fs_hz: float) -> float:
    """nst's noise size: mean square of the per-second RMS (mean removed), the largest and smallest 5 % left out."""
    seconds = noise[: noise.size // int(fs_hz) * int(fs_hz)].reshape(-1, int(fs_hz))
    rms = np.sort(np.sqrt(np.mean((seconds - seconds.mean(axis=1, keepdims=True)) ** 2, axis=1)))
    trimmed = rms[int(0.05 * rms.size): max(int(0.95 * rms.size), 1)]
    return float(np.mean(trimmed) ** 2)


def noisy_periods(length: int, fs_hz: float) -> np.ndarray:
    """bool[length]: nst's standard protocol, 5 clean minutes then noise and clean 2 minutes each in turn."""
    minute = int(60 * fs_hz)
    t = np.arange(length)
    return (t >= 5 * minute) & (((t - 5 * minute) // (2 * minute)) % 2 == 0)


def mix_noise(signal: np.ndarray, beats: np.ndarray, fs_hz: float, noise: np.ndarray, snr_db: float, where: np.ndarray | None = None) -> np.ndarray:
    """``signal`` plus ``noise`` (same rate, repeated as needed) scaled to ``snr_db`` by nst's
    measures, inside ``where`` (bool[n]; everywhere when None)."""
    noise = np.tile(noise, int(np.ceil(signal.size / noise.size)))[: signal.size]
    power_ratio = qrs_signal_power(signal, beats, fs_hz) / (noise_power(noise, fs_hz) * 10 ** (snr_db / 10))
    added = NST_GAIN_CALIBRATION * np.sqrt(power_ratio) * (noise - noise.mean())
    return signal + (added if where is None else added * where)
