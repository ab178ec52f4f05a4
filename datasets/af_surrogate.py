"""A training person's own heartbeats re-timed as atrial fibrillation or flutter, labelled N.

Most false S calls are normal beats in atrial fibrillation or flutter: they come early against
the RR baseline, as premature atrial beats do, and the training side holds one such person
(DS1's 203). What tells them apart is the atrium: AF has no P wave, only fibrillatory f waves
(4-9 Hz), flutter has a sawtooth at 240-340 per minute, and the ventricles answer irregularly.
A surrogate keeps what is the person's (their QRS-T complexes, cut from the P-R segment on) and
replaces what AF changes (the P waves, the rhythm), so the model sees irregular beats without P
waves, of every training person's morphology, labelled N. Built from the wearer's own recording,
it is an augmentation a watch could run on its own data: nothing leaves the device.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from datasets.records import EcgRecord
from edge_runtime.aami import classes_of

QRS_ONSET_S = 0.08
"""Where a complex is cut before R: after the P wave, before the QRS starts (PR 0.12-0.20 s)."""
COMPLEX_AFTER_S = 0.45
TAPER_S = 0.02
MIN_RR_S = 0.3
AF_F_WAVE_HZ = (4.0, 9.0)
FLUTTER_HZ = (4.0, 5.6)
FLUTTER_BLOCK = (2, 3, 4)
FLUTTER_BLOCK_P = (0.5, 0.3, 0.2)  # variable block: the irregular flutter that reads as ectopy


@dataclasses.dataclass(frozen=True)
class SurrogateConfig:
    """How long each surrogate is and how its rhythm is drawn."""

    minutes: float = 5.0
    flutter_share: float = 0.3
    rate_factor: tuple[float, float] = (0.55, 1.0)  # AF's mean RR against the wearer's sinus RR
    rr_cv: tuple[float, float] = (0.15, 0.35)
    atrial_amplitude: tuple[float, float] = (0.03, 0.15)  # f / F waves against the QRS peak-to-peak


def normal_complexes(record: EcgRecord) -> np.ndarray:
    """The person's normal QRS-T complexes (float[k, length]), each from QRS onset to 0.45 s after R,
    detrended to zero at both ends: only N beats between N beats, so no ectopy leaks in."""
    labels = classes_of(record.ann_symbols)
    beats = labels >= 0
    samples, labels = record.ann_samples[beats], labels[beats]
    before, after = _onset_samples(record.fs_hz), int(round(COMPLEX_AFTER_S * record.fs_hz))
    middle = np.arange(1, samples.size - 1)
    keep = (labels[middle] == 0) & (labels[middle - 1] == 0) & (labels[middle + 1] == 0)
    r = samples[middle[keep]]
    r = r[(r - before >= 0) & (r + after < record.signal.size)]
    if r.size == 0:
        return np.zeros((0, before + after))
    complexes = record.signal[r[:, None] + np.arange(-before, after)[None, :]].astype(np.float64)
    edges = np.stack([complexes[:, :3].mean(axis=1), complexes[:, -3:].mean(axis=1)], axis=1)
    ramp = np.linspace(0.0, 1.0, before + after)[None, :]
    return complexes - (edges[:, :1] * (1 - ramp) + edges[:, 1:] * ramp)


def surrogate_af(record: EcgRecord, rng: np.random.Generator, config: SurrogateConfig = SurrogateConfig()) -> EcgRecord | None:
    """``record``'s person in atrial fibrillation (or, for ``flutter_share`` of people, flutter with
    variable block), every beat annotated N; None when the record has too few normal beats."""
    complexes = normal_complexes(record)
    if complexes.shape[0] < 20:
        return None
    fs = record.fs_hz
    before = _onset_samples(fs)
    sinus_rr = float(np.median(np.diff(record.ann_samples[classes_of(record.ann_symbols) == 0]))) / fs
    flutter = rng.random() < config.flutter_share
    duration_s = config.minutes * 60.0
    if flutter:
        cycle_s = 1.0 / rng.uniform(*FLUTTER_HZ)
        blocks = rng.choice(FLUTTER_BLOCK, p=FLUTTER_BLOCK_P, size=int(duration_s / cycle_s))
        rr = blocks * cycle_s * (1.0 + rng.normal(0.0, 0.01, blocks.size))
    else:
        mean_rr = max(sinus_rr * rng.uniform(*config.rate_factor), 0.4)
        cv = rng.uniform(*config.rr_cv)
        rr = rng.gamma(1.0 / cv**2, mean_rr * cv**2, size=int(2 * duration_s / mean_rr))
    rr = np.maximum(rr, MIN_RR_S)
    r_times = 1.0 + np.cumsum(rr)
    r_times = r_times[r_times < duration_s - 1.0]
    n = int(duration_s * fs)
    signal = atrial_signal(n, fs, flutter, rng)
    peak_to_peak = float(np.median(np.ptp(complexes, axis=1)))
    signal *= peak_to_peak * rng.uniform(*config.atrial_amplitude) / max(float(np.std(signal)) * 2.8, 1e-9)
    r_samples = np.rint(r_times * fs).astype(np.int64)
    next_gap = np.append(np.diff(r_samples), complexes.shape[1])
    taper = max(int(round(TAPER_S * fs)), 1)
    for r, gap, pick in zip(r_samples, next_gap, rng.integers(complexes.shape[0], size=r_samples.size)):
        length = min(complexes.shape[1], gap - taper)  # the T wave ends before the next QRS starts
        complex_ = complexes[pick, :length] * _tapered(length, taper)
        signal[r - before:r - before + length] += complex_
    signal += rng.normal(0.0, 0.01 * peak_to_peak, n)
    return dataclasses.replace(
        record, name=f"{record.name}+af", signal=signal, ann_samples=r_samples, ann_symbols=("N",) * r_samples.size, dropped_annotations=0,
    )


def atrial_signal(n: int, fs: float, flutter: bool, rng: np.random.Generator) -> np.ndarray:
    """Unscaled atrial signal: flutter's sawtooth, or AF's f waves (a drifting 4-9 Hz oscillation
    with a wandering amplitude)."""
    t = np.arange(n) / fs
    if flutter:
        rate = rng.uniform(*FLUTTER_HZ)
        return 2.0 * ((t * rate + rng.random()) % 1.0) - 1.0
    drift = np.cumsum(rng.normal(0.0, 0.05, n)) / np.sqrt(fs)
    frequency = np.clip(rng.uniform(*AF_F_WAVE_HZ) + drift, *AF_F_WAVE_HZ)
    phase = 2 * np.pi * np.cumsum(frequency) / fs
    envelope = 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.random() * 2 * np.pi)
    return envelope * np.sin(phase)


def _onset_samples(fs: float) -> int:
    return int(round(QRS_ONSET_S * fs))


def _tapered(length: int, taper: int) -> np.ndarray:
    window = np.ones(length)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(min(taper, length // 2)) / max(taper, 1))
    window[:ramp.size] = ramp
    window[length - ramp.size:] = ramp[::-1]
    return window
