"""From a raw ECG strip to labelled beats on the device, with the shared definitions."""
from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from edge_runtime.aami import CLASS_NAMES
from edge_runtime.beats import BeatSpec, cut_beats, rr_model_input
from edge_runtime.detector import detect_r_peaks, too_close
from edge_runtime.quality import MIN_STRIP_S, StripQuality, assess_quality
from edge_runtime.rhythm import atrial_activity, fibrillation_like, rr_irregularity, without_s_in_fibrillation


class BeatClassifier(Protocol):
    """The int8 export (interpreter.Int8Classifier) or a personal model (personal_model.PersonalClassifier)."""

    def classes(self, beat: np.ndarray, log_rr: np.ndarray) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class StripBeats:
    """Model inputs of the classifiable beats of one strip.

    r_samples: int64[m] R peaks at the input rate; beat: float32[k, window, 2];
    log_rr: float32[k, 8]; index: int64[k], which of the m peaks each row is.
    """

    r_samples: np.ndarray
    beat: np.ndarray
    log_rr: np.ndarray
    index: np.ndarray


def strip_beats(signal: np.ndarray, fs_hz: float, spec: BeatSpec, r_samples: np.ndarray | None = None) -> StripBeats:
    """Detect R peaks (unless given), then cut windows and RR features exactly as datasets/ does."""
    peaks = detect_r_peaks(signal, fs_hz) if r_samples is None else np.asarray(r_samples, np.int64)
    windows, rr, index = cut_beats(signal, fs_hz, peaks, spec)
    return StripBeats(r_samples=peaks, beat=windows, log_rr=rr_model_input(rr), index=index)


@dataclasses.dataclass(frozen=True)
class ClassifiedStrip:
    """What the watch concludes from a strip: its quality, every detected R peak (int64[m], input
    rate), which of them got a class (int64[k] into r_samples), the classes (int64[k]) and
    which of those beats are in an AF-like rhythm."""

    quality: StripQuality
    r_samples: np.ndarray
    classified: np.ndarray
    classes: np.ndarray
    af_like: np.ndarray  # bool[k]: the classified beat sits in an irregular rhythm without P waves


def classify_strip(signal: np.ndarray, fs_hz: float, spec: BeatSpec, classifier: BeatClassifier, *, quality_gate: bool = True) -> ClassifiedStrip:
    """Detect, judge quality, and classify the beats inside usable stretches (every beat with
    ``quality_gate=False``, which benchmarks use to measure what the gate prevents) except pairs
    too close to both be beats (detector.too_close); S inside an AF-like rhythm reads N
    (edge_runtime.rhythm)."""
    peaks = detect_r_peaks(signal, fs_hz) if signal.size >= MIN_STRIP_S * fs_hz else np.zeros(0, np.int64)
    quality = assess_quality(signal, fs_hz, peaks)
    none = np.zeros(0, np.int64)
    if (quality_gate and quality.unreadable) or peaks.size == 0:
        return ClassifiedStrip(quality, peaks, none, none, none.astype(bool))
    beats = strip_beats(signal, fs_hz, spec, r_samples=peaks)
    keep = ~too_close(peaks, fs_hz)[beats.index]
    if quality_gate:
        keep &= quality.usable_beats(peaks[beats.index], fs_hz)
    if not keep.any():
        return ClassifiedStrip(quality, peaks, none, none, none.astype(bool))
    af_like = fibrillation_like(rr_irregularity(peaks / fs_hz)[beats.index[keep]], atrial_activity(beats.beat[keep], spec))
    classes = without_s_in_fibrillation(classifier.classes(beats.beat[keep], beats.log_rr[keep]), af_like)
    return ClassifiedStrip(quality, peaks, beats.index[keep], classes, af_like)


def rhythm_summary(r_samples: np.ndarray, fs_hz: float, classes: np.ndarray, af_like: np.ndarray) -> dict:
    """Heart rate, ectopic burdens and the share of classified beats in an AF-like rhythm
    (irregular, no P wave: where S calls read N; a hint to record a 12-lead ECG, not a
    diagnosis): what a watch shows its wearer."""
    rr = np.diff(r_samples) / fs_hz
    counts = np.bincount(classes, minlength=len(CLASS_NAMES)) if classes.size else np.zeros(len(CLASS_NAMES), int)
    total = max(int(counts.sum()), 1)
    return {
        "beats_detected": int(r_samples.size),
        "beats_classified": int(classes.size),
        "heart_rate_bpm": round(60.0 / float(np.median(rr)), 1) if rr.size else None,
        "pvc_burden_percent": round(100.0 * counts[CLASS_NAMES.index("V")] / total, 2),
        "s_burden_percent": round(100.0 * counts[CLASS_NAMES.index("S")] / total, 2),
        "af_like_percent": round(100.0 * float(np.mean(af_like)), 2) if classes.size else 0.0,
        "counts": {name: int(counts[i]) for i, name in enumerate(CLASS_NAMES)},
    }
