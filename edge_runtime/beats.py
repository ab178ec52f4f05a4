"""The beat window and RR features: how an ECG becomes model input, on the server and the wrist.

Both ``datasets/`` (annotated R peaks of MIT-BIH) and the device (R peaks it detects
itself) call these functions, so there is exactly one definition of a beat.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from edge_runtime.filters import bandpass_resample

RR_FEATURE_NAMES: tuple[str, ...] = (
    "pre_rr_s",
    "post_rr_s",
    "local_rr_s",
    "average_rr_s",
    "pre_over_local",
    "post_over_local",
    "pre_over_post",
    "pre_over_average",
)
BEAT_CHANNEL_NAMES: tuple[str, ...] = ("beat", "beat_minus_wearer_template")
"""The model's beat input, channel by channel: the z-scored window, and that window minus the
wearer's typical beat around it (``wearer_template``). Morphology relative to the wearer's own
beat is what a cardiologist reads and what transfers between people whose electrodes, leads and
QRS shapes differ (benchmarks/results/ablation.json measures it on validation people)."""


@dataclasses.dataclass(frozen=True)
class BeatSpec:
    """How a beat is cut from an ECG lead.

    The default rate, 125 Hz, is a watch-like rate that still carries the 0.5-40 Hz
    monitoring bandwidth (AHA/IEC 60601-2-47 ambulatory ECG) with margin below its 62.5 Hz
    Nyquist; watches record at 250-512 Hz and downsample cheaply, and a 125 Hz window keeps
    the model and on-device training small. The window, 0.256 s before the R peak and
    0.448 s after, covers the P wave, a wide ventricular QRS and most of the T wave, and is
    88 samples at 125 Hz (divisible by 8, so three 2x poolings stay exact).

    The wearer's context (the RR baseline, ``rr_average_beats`` on each side, and the
    template, ``template_beats`` centred) is 15 beats either way: about what one 30 s strip
    holds, so the model trains on the context a watch has, not on a 30-minute record's.
    """

    fs_hz: float = 125.0
    band_hz: tuple[float, float] = (0.5, 40.0)
    filter_order: int = 2
    before_s: float = 0.256
    after_s: float = 0.448
    rr_context_beats: int = 5
    rr_average_beats: int = 15
    template_beats: int = 31

    def __post_init__(self) -> None:
        low, high = self.band_hz
        if self.fs_hz <= 0:
            raise ValueError(f"fs_hz must be positive, got {self.fs_hz}")
        if not 0 <= low < high < self.fs_hz / 2:
            raise ValueError(f"band_hz must satisfy 0 <= low < high < fs_hz/2 = {self.fs_hz / 2}, got {self.band_hz}")
        if self.filter_order < 1:
            raise ValueError(f"filter_order must be >= 1, got {self.filter_order}")
        if self.before_s <= 0 or self.after_s <= 0:
            raise ValueError(f"before_s and after_s must be positive, got {self.before_s}, {self.after_s}")
        if self.template_beats < 1:
            raise ValueError(f"template_beats must be >= 1, got {self.template_beats}")
        if not 1 <= self.rr_context_beats <= self.rr_average_beats:
            raise ValueError(
                f"need 1 <= rr_context_beats <= rr_average_beats, got {self.rr_context_beats} and {self.rr_average_beats}"
            )

    @property
    def before(self) -> int:
        """Samples before the R peak."""
        return int(round(self.before_s * self.fs_hz))

    @property
    def after(self) -> int:
        """Samples from the R peak (included) onwards."""
        return int(round(self.after_s * self.fs_hz))

    @property
    def window(self) -> int:
        return self.before + self.after

    @property
    def beat_shape(self) -> tuple[int, int]:
        """The model's beat input per beat: (window, channels)."""
        return self.window, len(BEAT_CHANNEL_NAMES)

    def fingerprint(self) -> str:
        """Stable hash of the spec: changes whenever any beat would change."""
        payload = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


def condition(signal: np.ndarray, fs_in: float, spec: BeatSpec) -> np.ndarray:
    """Raw lead (float[n], mV, fs_in Hz) -> filtered lead at spec.fs_hz (float32, mV)."""
    return bandpass_resample(signal, fs_in, spec.fs_hz, band_hz=spec.band_hz, order=spec.filter_order)


def to_spec_samples(r_peaks: np.ndarray, fs_in: float, spec: BeatSpec) -> np.ndarray:
    """R-peak sample indices at fs_in -> nearest sample indices at spec.fs_hz."""
    return np.rint(np.asarray(r_peaks, dtype=np.float64) * (spec.fs_hz / fs_in)).astype(np.int64)


def beat_windows(conditioned: np.ndarray, r_peaks: np.ndarray, spec: BeatSpec) -> tuple[np.ndarray, np.ndarray]:
    """Cut and normalise one window per R peak.

    conditioned: float32[n] at spec.fs_hz; r_peaks: int[m] sample indices at spec.fs_hz.
    Returns (windows float32[k, spec.window], kept bool[m]) where peaks whose window would
    run off either end are dropped. Each window is z-scored so that amplitude differences
    between electrodes, watches and people do not dominate morphology.
    """
    r = np.asarray(r_peaks, dtype=np.int64)
    kept = (r - spec.before >= 0) & (r + spec.after <= conditioned.shape[0])
    index = r[kept, None] + np.arange(-spec.before, spec.after)[None, :]
    windows = conditioned[index].astype(np.float32)
    windows -= windows.mean(axis=1, keepdims=True)
    windows /= np.maximum(windows.std(axis=1, keepdims=True), 1e-6)
    return windows, kept


def wearer_template(windows: np.ndarray, beats: int) -> np.ndarray:
    """The wearer's typical beat around each beat: the per-sample median of ``beats`` consecutive
    windows (float32[k, window], in time order) centred on it, shifted inward at the ends so each
    beat sees the same number of neighbours, or all k when fewer. The median ignores ectopic beats
    while they are fewer than half, and a watch computes it from the strip it holds."""
    k = windows.shape[0]
    width = min(beats, k)
    if width == 0:
        return windows.copy()
    view = np.lib.stride_tricks.sliding_window_view(windows, width, axis=0)  # [k - width + 1, window, width]
    starts = np.clip(np.arange(k) - width // 2, 0, k - width)
    template = np.empty_like(windows)
    for chunk in range(0, k, 2048):  # bounded memory: 2048 x window x width floats at a time
        template[chunk:chunk + 2048] = np.median(view[starts[chunk:chunk + 2048]], axis=-1)
    return template


def rr_features(r_times_s: np.ndarray, spec: BeatSpec) -> tuple[np.ndarray, np.ndarray]:
    """RR-interval features of each beat from R-peak times alone (what a device can detect).

    r_times_s: float[m], seconds, increasing. Returns (features float32[m, 8] in the order
    of RR_FEATURE_NAMES, valid bool[m]). The first and last beats have no previous or next
    RR interval and are marked invalid. The local RR is the mean of up to
    ``rr_context_beats`` intervals on each side (the rhythm around the beat); the average
    RR uses up to ``rr_average_beats`` (the wearer's baseline: about a 30 s strip, the
    same on a watch as in training). A supraventricular beat is premature against the
    baseline even when the local rhythm is irregular, which is why inter-patient S
    detection leans on these ratios (de Chazal et al. 2004).
    """
    t = np.asarray(r_times_s, dtype=np.float64)
    m = t.shape[0]
    features = np.zeros((m, len(RR_FEATURE_NAMES)), dtype=np.float32)
    valid = np.zeros(m, dtype=bool)
    if m < 3:
        return features, valid
    intervals = np.diff(t)
    if np.any(intervals <= 0):
        raise ValueError("R-peak times must be strictly increasing")
    k = np.arange(1, m - 1)
    pre, post = intervals[k - 1], intervals[k]
    cumulative = np.concatenate([[0.0], np.cumsum(intervals)])

    def mean_interval(context: int) -> np.ndarray:
        lo, hi = np.maximum(k - context, 0), np.minimum(k + context, m - 1)
        return (cumulative[hi] - cumulative[lo]) / (hi - lo)

    local, average = mean_interval(spec.rr_context_beats), mean_interval(spec.rr_average_beats)
    features[k] = np.stack([pre, post, local, average, pre / local, post / local, pre / post, pre / average], axis=1)
    valid[k] = True
    return features, valid


def rr_model_input(rr: np.ndarray) -> np.ndarray:
    """RR features (seconds and ratios, float[n, 8]) -> the model's log_rr input (float32[n, 8]).

    Logarithms put early (<1) and late (>1) ratios symmetric about 0 and intervals near 0.
    """
    return np.log(np.maximum(np.asarray(rr, dtype=np.float32), 1e-3))


def cut_beats(signal: np.ndarray, fs_hz: float, r_samples: np.ndarray, spec: BeatSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every beat of a lead with a complete window and RR features.

    signal: float[n], mV, at fs_hz; r_samples: int[m] R peaks at fs_hz, increasing, from
    annotations (training data) or the device's detector. Returns (beats
    float32[k, *spec.beat_shape] with the channels of BEAT_CHANNEL_NAMES, rr float32[k, 8],
    index int64[k] into r_samples). The first and last beats (no RR on one side) and beats
    whose window crosses the ends are dropped.
    """
    peaks = np.asarray(r_samples, dtype=np.int64)
    rr, rr_valid = rr_features(peaks / fs_hz, spec)
    windows, in_bounds = beat_windows(condition(signal, fs_hz, spec), to_spec_samples(peaks, fs_hz, spec), spec)
    beats = np.stack([windows, windows - wearer_template(windows, spec.template_beats)], axis=-1)
    keep = in_bounds & rr_valid
    return beats[rr_valid[in_bounds]], rr[keep], np.flatnonzero(keep)
