"""The AF gate: S calls inside an irregular rhythm without P waves read N; premature atrial beats,
SVT runs and pauses keep their S; thresholds chosen on the training side."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datasets.loading import load_record_beats
from datasets.splits import DS2
from edge_runtime.aami import CLASS_NAMES
from edge_runtime.beats import BeatSpec
from edge_runtime.rhythm import (IRREGULAR_NRMSSD, WEAK_ATRIAL_ACTIVITY, atrial_activity, fibrillation_like, rr_irregularity,
                                 without_s_in_fibrillation)
from tests.conftest import REPO_ROOT


def test_irregularity_is_the_normalised_rmssd_of_the_intervals_around_each_beat():
    times = np.cumsum(np.random.default_rng(1).uniform(0.4, 1.2, 60))
    intervals, m = np.diff(times), times.size
    expected = np.zeros(m)
    for k in range(m):
        around = intervals[max(k - 15, 0) : min(k + 15, m - 1)]
        expected[k] = np.sqrt(np.mean(np.diff(around) ** 2)) / around.mean()
    np.testing.assert_allclose(rr_irregularity(times, 15), expected, rtol=1e-9)
    assert rr_irregularity(times[:3]).tolist() == [0.0, 0.0, 0.0]  # two intervals: no rhythm to judge


def test_an_isolated_premature_beat_is_regular_and_fibrillation_is_not():
    sinus = np.arange(40) * 0.8
    sinus[20:] -= 0.3  # one premature beat, then the rhythm resumes
    fibrillation = np.cumsum(np.random.default_rng(0).uniform(0.3, 1.1, 40))
    assert (rr_irregularity(sinus) <= IRREGULAR_NRMSSD).all()
    assert (rr_irregularity(fibrillation) > IRREGULAR_NRMSSD).mean() > 0.9


def test_atrial_activity_sees_a_p_wave_in_the_wearers_median_beat_and_not_a_flat_baseline():
    spec = BeatSpec()
    t = (np.arange(spec.window) - spec.before) / spec.fs_hz
    p_wave = 0.8 * np.exp(-(((t + 0.15) / 0.03) ** 2))  # 150 ms before R, in z-scored units
    template = np.stack([p_wave + 0.3 * t, 0.3 * t])  # the same baseline slope with and without it
    beat = np.stack([template, np.zeros_like(template)], axis=-1).astype(np.float32)  # channel 1 = 0: window == template
    with_p, without_p = atrial_activity(beat, spec)
    assert with_p > 0.7 and without_p < 1e-6


def test_only_s_calls_in_an_af_like_rhythm_change_and_they_read_n():
    n, s, v = (CLASS_NAMES.index(c) for c in "NSV")
    af_like = fibrillation_like(np.array([0.5, 0.5, 0.5, 0.1, 0.5]), np.array([0.05, 0.5, 0.05, 0.05, 0.05]))
    assert af_like.tolist() == [True, False, True, False, True]
    assert without_s_in_fibrillation(np.array([s, s, v, s, n]), af_like).tolist() == [n, s, v, s, n]


def test_on_real_recordings_af_is_gated_and_svt_runs_and_atrial_premature_beats_are_not(mitdb: Path):
    """Training-side people: 203 in AF and flutter throughout; 209 with 383 S beats (SVT runs);
    220 with 94 atrial premature beats."""
    def af_like(table):
        order = np.argsort(table.time_s, kind="stable")
        return fibrillation_like(rr_irregularity(table.time_s[order]), atrial_activity(table.windows[order])), table.labels[order]

    gated, _ = af_like(load_record_beats(mitdb / "203", BeatSpec()))
    assert gated.mean() > 0.6  # its flutter stretches keep flutter waves where a P wave would sit
    for name in ("209", "220"):
        gated, labels = af_like(load_record_beats(mitdb / name, BeatSpec()))
        s_beats = labels == CLASS_NAMES.index("S")
        assert s_beats.sum() > 90 and (gated & s_beats).sum() <= 0.02 * s_beats.sum()


def test_the_thresholds_are_the_ones_the_training_side_chose():
    chosen = json.loads((REPO_ROOT / "benchmarks" / "results" / "rhythm_gate.json").read_text())
    row = chosen["candidates"][chosen["chosen"]]
    assert (row["irregularity"], row["atrial_activity"]) == (IRREGULAR_NRMSSD, WEAK_ATRIAL_ACTIVITY)
    assert row["svdb_S_hidden"] <= chosen["max_hidden_S"] and chosen["svdb_S_beats"] > 9000
    assert row["pooled_S"]["f1"] > chosen["candidates"]["irregularity > inf, atrial activity < inf"]["pooled_S"]["f1"]
    assert not {p for fold in chosen["folds"].values() for p in fold} & set(DS2)
