"""Synthetic smartwatch ECG after McSharry et al. (2003), ECGSYN, written as WFDB records.

The default simulation must run offline on a fresh machine, so fedbeat carries its own
ECG source. Following ECGSYN, each beat is a trajectory around a limit cycle whose phase
theta advances 2*pi per RR interval, and the ECG is the z-coordinate driven by five
Gaussian events P, Q, R, S, T at fixed phases:

    dz/dt = -sum_i a_i * dtheta_i * exp(-dtheta_i^2 / (2 b_i^2)) - (z - z0)

On the limit cycle, integrating the drive over one event gives a_i b_i^2 exp(...) (up to
the constant omega), which is what is summed here; z0 becomes the baseline-wander term.
The RR tachogram follows ECGSYN's bimodal spectrum (Mayer waves ~0.1 Hz, respiratory
sinus arrhythmia ~0.25 Hz). Each subject has its own heart rate, HRV, morphology, ectopy
rates and noise, which makes a per-subject split non-IID the way real patients are:
PVCs (V) come early with no P wave, a wide QRS, a discordant T and a full compensatory
pause; APCs (S) come early with an abnormal P wave, a normal QRS and reset the sinus node.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import wfdb

SYNTHETIC_FS_HZ = 360.0
"""Written at MIT-BIH's rate so the synthetic and real data take the same reader path."""

WAVE_NAMES = ("P", "Q", "R", "S", "T")
_NORMAL_THETA = np.array([-np.pi / 3, -np.pi / 12, 0.0, np.pi / 12, np.pi / 2])
_NORMAL_A = np.array([1.2, -5.0, 30.0, -7.5, 0.75])
_NORMAL_B = np.array([0.25, 0.1, 0.1, 0.1, 0.4])
_QRS = np.array([False, True, True, True, False])


@dataclasses.dataclass(frozen=True)
class SubjectProfile:
    """One synthetic person: rhythm, morphology, ectopy and the noise of their watch."""

    heart_rate_bpm: float
    hrv_std_s: float
    lf_hf_ratio: float
    r_amplitude_mv: float
    theta: np.ndarray
    a: np.ndarray
    b: np.ndarray
    pvc_rate: float
    apc_rate: float
    baseline_mv: float
    muscle_mv: float
    motion_per_min: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "SubjectProfile":
        return cls(
            heart_rate_bpm=rng.uniform(55, 95),
            hrv_std_s=rng.uniform(0.02, 0.07),
            lf_hf_ratio=rng.uniform(0.5, 2.0),
            r_amplitude_mv=rng.uniform(0.8, 1.8),
            theta=_NORMAL_THETA + rng.normal(0, 0.03, 5),
            a=_NORMAL_A * rng.uniform(0.75, 1.25, 5),
            b=_NORMAL_B * rng.uniform(0.85, 1.2, 5),
            pvc_rate=rng.uniform(0.01, 0.12),
            apc_rate=rng.uniform(0.01, 0.08),
            baseline_mv=rng.uniform(0.05, 0.3),
            muscle_mv=rng.uniform(0.005, 0.04),
            motion_per_min=rng.uniform(0.0, 1.5),
        )


def rr_tachogram(profile: SubjectProfile, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """RR interval (s) sampled at 1 Hz from ECGSYN's two-peak spectrum with random phases."""
    n = int(2 ** np.ceil(np.log2(duration_s + 64)))
    f = np.fft.rfftfreq(n, d=1.0)
    lf = profile.lf_hf_ratio * np.exp(-((f - 0.1) ** 2) / (2 * 0.01**2))
    hf = np.exp(-((f - 0.25) ** 2) / (2 * 0.01**2))
    amplitude = np.sqrt(lf + hf)
    series = np.fft.irfft(amplitude * np.exp(2j * np.pi * rng.random(f.size)), n=n)
    series = (series - series.mean()) / max(series.std(), 1e-12)
    return 60.0 / profile.heart_rate_bpm + profile.hrv_std_s * series


def beat_sequence(profile: SubjectProfile, duration_s: float, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """R-peak times (s) and WFDB symbols ('N', 'V', 'A'); ectopics follow a normal beat."""
    tachogram = rr_tachogram(profile, duration_s, rng)
    times, symbols = [0.4], ["N"]
    while True:
        sinus_rr = float(np.clip(tachogram[min(int(times[-1]), tachogram.size - 1)], 0.33, 2.0))
        kind = "N"
        if symbols[-1] == "N":
            draw = rng.random()
            kind = "V" if draw < profile.pvc_rate else "A" if draw < profile.pvc_rate + profile.apc_rate else "N"
        if symbols[-1] == "V":
            rr = 2 * sinus_rr - (times[-1] - times[-2])  # full compensatory pause
        elif kind == "V":
            rr = sinus_rr * rng.uniform(0.55, 0.7)
        elif kind == "A":
            rr = sinus_rr * rng.uniform(0.6, 0.8)
        else:
            rr = sinus_rr
        if times[-1] + rr > duration_s - 0.5:
            return np.array(times), symbols
        times.append(times[-1] + rr)
        symbols.append(kind)


def beat_morphology(profile: SubjectProfile, symbols: list[str], rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Per-beat (theta, a, b) arrays of shape [beats, 5] for the five ECGSYN events."""
    m = len(symbols)
    theta = np.tile(profile.theta, (m, 1)) + rng.normal(0, 0.01, (m, 5))
    a = np.tile(profile.a, (m, 1)) * rng.uniform(0.95, 1.05, (m, 5))
    b = np.tile(profile.b, (m, 1))
    kinds = np.array(symbols)
    pvc, apc = kinds == "V", kinds == "A"
    a[pvc, 0] = 0.0  # no P wave
    b[pvc, 1:4] *= rng.uniform(2.2, 3.0, (int(pvc.sum()), 1))  # wide QRS
    a[pvc, 2] *= rng.uniform(0.6, 0.9) * rng.choice([-1.0, 1.0])
    a[pvc, 4] *= -rng.uniform(1.5, 2.5)  # discordant T wave
    a[apc, 0] *= -rng.uniform(0.4, 0.9)  # ectopic atrial focus: inverted P
    theta[apc, 0] -= rng.uniform(0.0, 0.15)
    return theta, a, b


def synthesize_ecg(profile: SubjectProfile, *, minutes: float, fs_hz: float = SYNTHETIC_FS_HZ, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(signal float64[n] mV, R-peak samples int64[m], symbols) for one subject."""
    rng = np.random.default_rng(seed)
    duration_s = minutes * 60.0
    times, symbols = beat_sequence(profile, duration_s, rng)
    theta_k, a_k, b_k = beat_morphology(profile, symbols, rng)
    t = np.arange(int(duration_s * fs_hz)) / fs_hz
    nearest = np.clip(np.searchsorted((times[1:] + times[:-1]) / 2, t), 0, len(times) - 1)
    dt = t - times[nearest]
    rr_prev = np.diff(times, prepend=times[0] - 60 / profile.heart_rate_bpm)
    rr_next = np.diff(times, append=times[-1] + 60 / profile.heart_rate_bpm)
    local_rr = np.where(dt < 0, rr_prev[nearest], rr_next[nearest])
    mean_rr = 60.0 / profile.heart_rate_bpm
    # QRS durations do not stretch with the RR interval; P and T timing does.
    rr_for_wave = np.where(_QRS[None, :], mean_rr, local_rr[:, None])
    dtheta = 2 * np.pi * dt[:, None] / rr_for_wave - theta_k[nearest]
    b = b_k[nearest]
    z = (a_k[nearest] * b**2 * np.exp(-(dtheta**2) / (2 * b**2))).sum(axis=1)
    z *= profile.r_amplitude_mv / (profile.a[2] * profile.b[2] ** 2)
    signal = z + watch_noise(profile, t, rng)
    return signal, np.rint(times * fs_hz).astype(np.int64), symbols


def watch_noise(profile: SubjectProfile, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Baseline wander (respiration and drift), muscle artefact bursts and motion transients, mV."""
    baseline = sum(
        profile.baseline_mv * w * np.sin(2 * np.pi * rng.uniform(lo, hi) * t + rng.uniform(0, 2 * np.pi))
        for w, lo, hi in ((1.0, 0.15, 0.35), (0.6, 0.02, 0.08))
    )
    envelope = 1.0 + np.abs(np.sin(2 * np.pi * rng.uniform(0.01, 0.05) * t)) * 2.0
    muscle = profile.muscle_mv * envelope * np.diff(rng.normal(0, 1, t.size + 1)) / np.sqrt(2)
    motion = np.zeros_like(t)
    fs = 1.0 / (t[1] - t[0])
    for onset in rng.uniform(0, t[-1], rng.poisson(profile.motion_per_min * t[-1] / 60)):
        start = int(onset * fs)
        tau = rng.uniform(0.1, 0.5)
        length = min(int(5 * tau * fs), t.size - start)
        transient = rng.uniform(0.2, 1.0) * rng.choice([-1, 1]) * np.exp(-np.arange(length) / (tau * fs))
        motion[start : start + length] += transient * np.sin(2 * np.pi * rng.uniform(0.5, 3) * np.arange(length) / fs)
    return baseline + muscle + motion


def write_synthetic_dataset(out_dir: Path | str, *, subjects: int, minutes: float, seed: int) -> list[str]:
    """Write ``subjects`` WFDB records (syn000, syn001, ...) with beat annotations; return names."""
    if subjects < 1:
        raise ValueError(f"subjects must be >= 1, got {subjects}")
    if minutes <= 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for index, subject_seed in enumerate(np.random.SeedSequence(seed).spawn(subjects)):
        profile = SubjectProfile.draw(np.random.default_rng(subject_seed))
        signal, samples, symbols = synthesize_ecg(profile, minutes=minutes, seed=int(subject_seed.generate_state(1)[0]))
        name = f"syn{index:03d}"
        wfdb.wrsamp(
            name, fs=SYNTHETIC_FS_HZ, units=["mV"], sig_name=["MLII"], p_signal=signal[:, None],
            fmt=["16"], adc_gain=[200.0], baseline=[0], write_dir=str(out),
            comments=[f"fedbeat synthetic ECG (ECGSYN-style), seed {seed}, subject {index}"],
        )
        wfdb.wrann(name, "atr", samples, symbol=symbols, write_dir=str(out))
        names.append(name)
    (out / "RECORDS").write_text("\n".join(names) + "\n")
    return names
