"""R-peak detection on a device: Pan & Tompkins (1985) in numpy.

Band-pass 5-15 Hz (the shared FFT filter), five-point derivative, squaring, 150 ms moving
window integration, then adaptive signal/noise thresholds with a 200 ms refractory period,
T-wave rejection (slope test within 360 ms) and search-back at half threshold when no beat
came for 1.66 regular RR intervals (RR average 2: missed beats do not stretch it), taking
only candidates at least 0.3 as steep as the last QRS (P and T waves in a pause are not beats).
Peaks more than LEVEL_STEP_CAP times the signal level move it as if that size (neither an
artifact nor a run of large PVCs lifts the threshold over the normal beats), and after
RECOVERY_S without a beat the level decays. Each detection is then placed on the QRS: the
steepest QRS-band slope before the integrator peak, then the extreme of the 0.5-40 Hz
conditioned lead within QRS_HALF_WIDTH_S of it on the strip's dominant side (up or down),
where annotators put R.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.filters import bandpass_resample

DETECTION_FS_HZ = 125.0
LEVEL_STEP_CAP = 2.0
"""A detected peak moves the signal level as if at most this many times the level: in a run of
large PVCs among small normal beats (MIT-BIH V1 of 106, 221) the level stays where the normal
beats pass the threshold (beats missed at 4x -> 2x: lead 2 3,300 -> 2,714, lead 1 441 -> 398;
1.5x let 108's tall T waves in, lead 1 false detections 343 -> 1,753)."""
LEARNING_S = 4.0
"""The thresholds start from the largest peak of the first LEARNING_S (Pan-Tompkins: 2 s). A
30 s strip that opens in a 3-6 s pause (DS2 record 232) gave 2 s of flat baseline, a tiny
level, and its P waves and noise called S or V. On training-side 30 s strips (DS1, 30 svdb
records) errors fall with a longer start (FN+FP 966 / 393 at 2 s, 960 / 387 at 4 s, 944 / 352
at 8 s), but from 6 s on two 30 s strips of nstdb's baseline-wander noise pass the quality gate
(tests/edge_runtime/test_quality.py): 4 s is the longest that keeps noise unreadable."""
QRS_HALF_WIDTH_S = 0.06
"""Half a QRS: R sits this close to the QRS's steepest slope; the largest deflection anywhere in the
integration window was often a tall T wave or an S trough 150-200 ms away (V1 of 106, 209)."""
INVERTED_BALANCE = 0.25
"""A strip reads inverted only when its median QRS falls this much more than it rises, as a
fraction of rise + fall: a biphasic QRS like 118's MLII (+1.2 / -1.4 mV, balance -0.08) reads
upright, as the annotators put its R."""
POLARITY_SWITCH = 2.0
"""R goes to the strip's dominant deflection (up when most QRS rise more than they fall) unless a
beat's other side is this many times larger (an inverted PVC). The larger |deflection| of each beat
alone flipped between R and S when R and S are alike (118's MLII) and noise tipped the balance."""
RECOVERY_S = 2.0
"""After this long without a beat (and none at half threshold), the signal level halves every
RECOVERY_S: one large artifact no longer blinds the detector for the rest of the strip."""
MIN_BEAT_SPACING_S = 0.24
"""Two ventricular depolarisations this close cannot both be beats (the ventricles' refractory
period): one of the pair is a P or T wave (108's tall P waves 0.2 s before R) or an artifact,
and neither gets a class. Chosen on DS1 30 s strips through the watch's pipeline (the reference
run's export): S or V calls on no annotated beat 103 -> 52, and 3 annotated S/V beats lost their
class (whatever the model called them; 3,909 S/V calls were right); at 0.25 s 50 and 3, at 0.26 s
50 and 7. 0.24 s still classifies the premature aberrant beats coupled at 0.24-0.26 s that the
issue found on wrist recordings. 259 of 47,998 matched beats (0.5 %) lose their class."""


def _local_maxima(x: np.ndarray, min_distance: int) -> np.ndarray:
    """Indices of peaks of x at least ``min_distance`` apart, tallest kept first."""
    candidates = np.flatnonzero((x[1:-1] > x[:-2]) & (x[1:-1] >= x[2:])) + 1
    kept: list[int] = []
    taken = np.zeros(x.size, dtype=bool)
    for index in candidates[np.argsort(-x[candidates], kind="stable")]:
        lo, hi = max(index - min_distance, 0), index + min_distance + 1
        if not taken[lo:hi].any():
            kept.append(index)
            taken[index] = True
    return np.sort(np.array(kept, dtype=np.int64))


def detect_r_peaks(signal: np.ndarray, fs_hz: float) -> np.ndarray:
    """R-peak sample indices (int64[m], at fs_hz) of a single-lead ECG (float[n], mV)."""
    fs = DETECTION_FS_HZ
    qrs_band = bandpass_resample(signal, fs_hz, fs, band_hz=(5.0, 15.0), order=2).astype(np.float64)
    lead = bandpass_resample(signal, fs_hz, fs).astype(np.float64)
    derivative = np.convolve(qrs_band, np.array([1, 2, 0, -2, -1]) * fs / 8.0, mode="same")
    window = int(round(0.150 * fs))
    integrated = np.convolve(derivative**2, np.ones(window) / window, mode="same")
    refractory = int(round(0.200 * fs))
    peaks = _local_maxima(integrated, refractory)
    if peaks.size == 0:
        return peaks

    learning = integrated[: int(LEARNING_S * fs)]
    signal_level, noise_level = 0.25 * learning.max(), 0.5 * learning.mean()
    level_at_beat = signal_level

    def threshold() -> float:
        return noise_level + 0.25 * (signal_level - noise_level)

    beats: list[int] = []
    regular_rr: list[float] = []
    last_slope = 0.0
    i = 0
    while i < peaks.size:
        peak = peaks[i]
        value = integrated[peak]
        if beats:
            expected = _expected_rr(regular_rr, default=fs)
            gap = peak - beats[-1]
            if gap > 1.66 * expected:  # search back for a missed beat at half threshold
                between = peaks[(peaks > beats[-1] + refractory) & (peaks < peak - refractory)]
                missed = between[integrated[between] > 0.5 * threshold()]
                missed = missed[[_steepest(derivative, c, window) >= 0.3 * last_slope for c in missed]]
                if missed.size:
                    best = missed[np.argmax(integrated[missed])]
                    beats.append(int(best))
                    signal_level = level_at_beat = 0.25 * integrated[best] + 0.75 * signal_level
                    continue
                if gap > RECOVERY_S * fs:  # nothing even at half threshold: an artifact raised it, let it decay
                    signal_level = level_at_beat * 0.5 ** ((gap / fs - RECOVERY_S) / RECOVERY_S)
        if value > threshold():
            slope = _steepest(derivative, peak, window)
            is_t_wave = bool(beats) and peak - beats[-1] < int(0.36 * fs) and slope < 0.5 * last_slope
            if not is_t_wave:
                if beats:
                    regular_rr.append(_regular_interval(float(peak - beats[-1]), regular_rr))
                beats.append(int(peak))
                last_slope = slope
                signal_level = level_at_beat = 0.125 * min(value, LEVEL_STEP_CAP * signal_level) + 0.875 * signal_level
            else:
                noise_level = 0.125 * value + 0.875 * noise_level
        else:
            noise_level = 0.125 * value + 0.875 * noise_level
        i += 1

    located = _locate_on_lead(np.array(beats, dtype=np.int64), lead, derivative, window)
    return np.unique(np.rint(located * fs_hz / fs).astype(np.int64))


def _steepest(derivative: np.ndarray, peak: int, window: int) -> float:
    """The steepest slope in the integration window before an integrator peak: a QRS's upstroke."""
    return float(np.max(np.abs(derivative[max(peak - window, 0) : peak + 1])))


def _expected_rr(history: list[float], *, default: float) -> float:
    """The mean of the last 8 regular intervals (``default`` before the first)."""
    return float(np.mean(history[-8:])) if history else default


def _regular_interval(rr: float, history: list[float]) -> float:
    """What an interval adds to the expected RR: itself when regular (92-116 % of the recent mean,
    Pan-Tompkins' RR average 2), else a step of 1/8 towards it. Missed beats (double intervals) and
    ectopic pairs then cannot stretch the expectation that decides when to search back."""
    if len(history) < 2:
        return rr
    expected = _expected_rr(history, default=rr)
    return rr if 0.92 * expected <= rr <= 1.16 * expected else 0.875 * expected + 0.125 * rr


def _locate_on_lead(peaks: np.ndarray, lead: np.ndarray, derivative: np.ndarray, window: int) -> np.ndarray:
    """Move each integrator peak (which lags the QRS) to the QRS: the steepest QRS-band slope
    before it, then the lead's extreme within QRS_HALF_WIDTH_S of that slope (not a tall T wave or a
    baseline swing elsewhere in the window) on the strip's dominant side (see POLARITY_SWITCH)."""
    near = int(round(QRS_HALF_WIDTH_S * DETECTION_FS_HZ))
    highest, lowest = np.empty_like(peaks), np.empty_like(peaks)
    rise, fall = np.empty(peaks.size), np.empty(peaks.size)
    for k, peak in enumerate(peaks):
        lo = max(peak - window - window // 2, 0)
        hi = min(peak + window // 4 + 1, lead.size)
        steepest = lo + int(np.argmax(np.abs(derivative[lo:hi])))
        a, b = max(steepest - near, 0), min(steepest + near + 1, lead.size)
        segment = lead[a:b] - np.median(lead[lo:hi])
        highest[k], lowest[k] = a + int(np.argmax(segment)), a + int(np.argmin(segment))
        rise[k], fall[k] = segment.max(), -segment.min()
    upright = bool(np.median((rise - fall) / np.maximum(rise + fall, 1e-12)) > -INVERTED_BALANCE) if peaks.size else True
    dominant, other = (rise, fall) if upright else (fall, rise)
    switches = other > POLARITY_SWITCH * dominant
    return np.where(upright != switches, highest, lowest)


def match_beats(reference: np.ndarray, detected: np.ndarray, tolerance: int) -> tuple[int, int, int]:
    """(true positives, false negatives, false positives) matching each reference beat to at
    most one detection within ``tolerance`` samples (the EC57 150 ms window)."""
    reference, detected = np.sort(reference), np.sort(detected)
    used = np.zeros(detected.size, dtype=bool)
    true_positive = 0
    for r in reference:
        lo, hi = np.searchsorted(detected, [r - tolerance, r + tolerance + 1])
        free = [j for j in range(lo, hi) if not used[j]]
        if free:
            used[min(free, key=lambda j: abs(detected[j] - r))] = True
            true_positive += 1
    return true_positive, reference.size - true_positive, int((~used).sum())


def nearest_reference(detected: np.ndarray, reference: np.ndarray, tolerance: int) -> np.ndarray:
    """For each of ``detected``, the index of the nearest of ``reference`` within ``tolerance``
    samples, else -1 (EC57 matching without one-to-one pairing: see match_beats for that)."""
    if reference.size == 0:
        return np.full(detected.size, -1)
    position = np.searchsorted(reference, detected)
    left, right = np.maximum(position - 1, 0), np.minimum(position, reference.size - 1)
    nearest = np.where(np.abs(detected - reference[left]) <= np.abs(reference[right] - detected), left, right)
    return np.where(np.abs(reference[nearest] - detected) <= tolerance, nearest, -1)


def too_close(r_samples: np.ndarray, fs_hz: float) -> np.ndarray:
    """bool[m]: R peaks with a neighbour nearer than MIN_BEAT_SPACING_S (one of the two is not a beat)."""
    peaks = np.asarray(r_samples, np.int64)
    flagged = np.zeros(peaks.size, bool)
    near = np.flatnonzero(np.diff(peaks) < MIN_BEAT_SPACING_S * fs_hz)
    flagged[near] = flagged[near + 1] = True
    return flagged
