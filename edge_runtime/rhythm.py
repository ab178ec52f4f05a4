"""No S beats inside atrial fibrillation: the gate between the model's calls and what a wearer sees.

In atrial fibrillation every interval is "premature" against its neighbours, so a beat
classifier that leans on RR ratios calls S beat after beat (on validation people, record 203's
AF gave 697 of the 954 false S calls). Clinicians report that rhythm, not supraventricular
ectopy. An irregular rhythm alone does not mark it: runs of premature atrial beats and pauses
are irregular too (svdb people), so an S call reads N only where the rhythm is irregular *and*
the wearer's median beat shows no P wave (AF has none, only f waves that the median averages
away; atrial premature beats and SVT keep theirs):

- irregularity: the RMSSD of the RR intervals within ``BeatSpec.rr_average_beats`` beats on
  each side over their mean, above ``IRREGULAR_NRMSSD``;
- atrial activity: peak-to-peak of the detrended wearer template (the model's channel 0 minus
  channel 1: the median of the 31 beats around) ``P_WAVE_S`` before R, in the z-scored window's
  units, below ``WEAK_ATRIAL_ACTIVITY``.

Both come from the strip a watch holds. The thresholds were chosen on the training side only
(benchmarks/rhythm_gate.py): the best pooled S F1 of the validation folds among pairs that hide
at most 5 % of the svdb people's S beats.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.aami import CLASS_NAMES
from edge_runtime.beats import BeatSpec

IRREGULAR_NRMSSD = 0.3
WEAK_ATRIAL_ACTIVITY = 0.15
"""Chosen on the training side (benchmarks/results/rhythm_gate.json); DS2 played no part."""
P_WAVE_S = (-0.224, -0.064)
"""Where a P wave sits before the R peak (PR interval 120-200 ms, P wave about 100 ms)."""

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


def atrial_activity(beat: np.ndarray, spec: BeatSpec = BeatSpec()) -> np.ndarray:
    """float[n]: the P wave's size in the wearer's median beat around each beat, from the model's
    input (float[n, window, 2]: z-scored window, window minus the wearer template)."""
    lo, hi = (spec.before + int(round(s * spec.fs_hz)) for s in P_WAVE_S)
    segment = np.asarray(beat[:, lo:hi, 0], np.float64) - np.asarray(beat[:, lo:hi, 1], np.float64)  # the template there
    x = np.arange(hi - lo) - (hi - lo - 1) / 2.0
    centred = segment - segment.mean(axis=1, keepdims=True)
    residual = centred - np.outer(centred @ x / (x @ x), x)  # without the baseline's slope
    return residual.max(axis=1) - residual.min(axis=1)


def fibrillation_like(irregularity: np.ndarray, atrial: np.ndarray, *, irregular: float = IRREGULAR_NRMSSD, weak: float = WEAK_ATRIAL_ACTIVITY) -> np.ndarray:
    """bool: an irregular rhythm without a P wave (other thresholds: for their selection only)."""
    return (np.asarray(irregularity) > irregular) & (np.asarray(atrial) < weak)


def without_s_in_fibrillation(classes: np.ndarray, fibrillation: np.ndarray) -> np.ndarray:
    """The calls a wearer sees: S inside an AF-like rhythm reads N."""
    classes = np.asarray(classes)
    return np.where((classes == _S) & np.asarray(fibrillation, bool), _N, classes).astype(classes.dtype)
