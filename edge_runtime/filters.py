"""Band-pass filtering and resampling in one FFT, numpy only.

The same function prepares MIT-BIH records for training and raw watch strips on a device,
so a beat seen in simulation and the same beat seen on a wrist are the same numbers. It is
a zero-phase Butterworth band-pass (the magnitude response |H|^2 that scipy's
``sosfiltfilt`` applies, computed analytically) followed by band-limited Fourier
resampling; ``tests/edge_runtime/test_filters.py`` checks it against scipy.signal.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np


def butterworth_power_gain(freqs_hz: np.ndarray, band_hz: tuple[float, float], order: int) -> np.ndarray:
    """|H(f)|^2 of an order-``order`` Butterworth high-pass at band[0] times a low-pass at band[1].

    Squared because filtering forwards and backwards (zero phase) squares the magnitude.
    """
    low, high = band_hz
    f = np.abs(np.asarray(freqs_hz, dtype=np.float64))
    with np.errstate(divide="ignore"):
        highpass = 1.0 / (1.0 + (low / f) ** (2 * order)) if low > 0 else np.ones_like(f)
    lowpass = 1.0 / (1.0 + (f / high) ** (2 * order))
    return highpass * lowpass


def bandpass_resample(
    signal: np.ndarray,
    fs_in: float,
    fs_out: float,
    *,
    band_hz: tuple[float, float] = (0.5, 40.0),
    order: int = 2,
    pad_s: float = 2.0,
) -> np.ndarray:
    """Zero-phase band-pass and resample a single-lead ECG.

    signal: float[n], mV, at fs_in Hz. Returns float32[round(n * fs_out / fs_in)], mV, at
    fs_out Hz; output sample k is at time k / fs_out, the same instant as input sample
    k * fs_in / fs_out. The ends are reflect-padded by ``pad_s`` so that the FFT's circular
    wrap-around does not leak one end of the strip into the other.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"signal must be a 1-D array of at least 2 samples, got shape {x.shape}")
    if not band_hz[1] < fs_out / 2:
        raise ValueError(f"band upper edge {band_hz[1]} Hz must lie below the output Nyquist {fs_out / 2} Hz")
    ratio = Fraction(float(fs_out) / float(fs_in)).limit_denominator(10_000)
    step = ratio.denominator  # input samples per ratio.numerator output samples
    pad_left = min(int(pad_s * fs_in) // step * step, (x.size - 1) // step * step)
    padded_len = -(-(x.size + 2 * pad_left) // step) * step
    pad_right = min(padded_len - x.size - pad_left, x.size - 1)
    padded = np.pad(x, (pad_left, pad_right), mode="reflect")
    padded = np.pad(padded, (0, padded_len - padded.size), mode="edge")

    spectrum = np.fft.rfft(padded)
    spectrum *= butterworth_power_gain(np.fft.rfftfreq(padded_len, d=1.0 / fs_in), band_hz, order)
    out_len = padded_len // step * ratio.numerator
    resized = np.zeros(out_len // 2 + 1, dtype=np.complex128)
    keep = min(resized.size, spectrum.size)
    resized[:keep] = spectrum[:keep]
    resampled = np.fft.irfft(resized, n=out_len) * (out_len / padded_len)

    start = pad_left // step * ratio.numerator
    n_out = int(round(x.size * fs_out / fs_in))
    return resampled[start : start + n_out].astype(np.float32)
