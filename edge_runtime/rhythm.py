"""No S beats inside an irregularly irregular rhythm: the gate between the model's calls and what a wearer sees.

In atrial fibrillation every interval is "premature" against its neighbours, so a beat
classifier that leans on RR ratios calls S beat after beat (on validation people, 203's AF gave
697 false S calls against 20 true ones, and 208's PVC-torn rhythm 143 more). Clinicians report
the rhythm there, not supraventricular ectopy. So where the RR intervals around a beat (the
strip-sized context of ``BeatSpec.rr_average_beats`` on each side, what a watch holds) vary
with a normalised RMSSD above ``IRREGULAR_NRMSSD`` (0.25), an S call becomes N. Isolated premature
beats in a regular rhythm, runs of SVT and slow rhythms with pauses stay below it: the
threshold was chosen on validation people only (benchmarks/rhythm_gate.py).
"""
from __future__ import annotations

import numpy as np

from edge_runtime.aami import CLASS_NAMES
from edge_runtime.beats import BeatSpec

IRREGULAR_NRMSSD = 0.25
"""Chosen on validation people (benchmarks/results/rhythm_gate.json); DS2 played no part."""

_S, _N = CLASS_NAMES.index("S"), CLASS_NAMES.index("N")


def rr_irregularity(r_times_s: np.ndarray, context: int = BeatSpec().rr_average_beats) -> np.ndarray:
    """float[m]: per beat, the RMSSD of the RR intervals within ``context`` beats on each side over
    their mean (0 where fewer than three intervals)."""
    intervals = np.diff(np.asarray(r_times_s, np.float64))
    m = intervals.size + 1
    result = np.zeros(m)
    if intervals.size < 3:
        return result
    squared = np.concatenate([[0.0], np.cumsum(np.diff(intervals) ** 2)])
    summed = np.concatenate([[0.0], np.cumsum(intervals)])
    k = np.arange(m)
    lo, hi = np.clip(k - context, 0, m - 1), np.clip(k + context, 0, m - 1)  # intervals lo .. hi-1
    differences = np.maximum(hi - lo - 1, 0)  # successive differences among them: lo .. hi-2
    enough = differences >= 2
    rmssd = np.sqrt((squared[np.maximum(hi - 1, lo)] - squared[lo]) / np.maximum(differences, 1))
    mean = (summed[hi] - summed[lo]) / np.maximum(hi - lo, 1)
    result[enough] = rmssd[enough] / mean[enough]
    return result


def irregular_rhythm(r_times_s: np.ndarray, context: int = BeatSpec().rr_average_beats) -> np.ndarray:
    """bool[m]: which beats sit in an irregularly irregular stretch."""
    return rr_irregularity(r_times_s, context) > IRREGULAR_NRMSSD


def without_s_in_irregular_rhythm(classes: np.ndarray, irregular: np.ndarray) -> np.ndarray:
    """The calls a wearer sees: S inside an irregular rhythm reads N."""
    classes = np.asarray(classes)
    return np.where((classes == _S) & np.asarray(irregular, bool), _N, classes).astype(classes.dtype)
