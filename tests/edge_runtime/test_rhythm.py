"""The irregular-rhythm gate: S calls inside atrial fibrillation read N, premature beats in a
regular rhythm and runs of SVT keep their S; one threshold, chosen on validation people."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datasets.loading import load_record_beats
from datasets.splits import DS2
from edge_runtime.aami import CLASS_NAMES
from edge_runtime.beats import BeatSpec
from edge_runtime.rhythm import IRREGULAR_NRMSSD, irregular_rhythm, rr_irregularity, without_s_in_irregular_rhythm
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
    fibrillation = np.cumsum(np.random.default_rng(0).uniform(0.35, 1.0, 40))
    assert not irregular_rhythm(sinus).any()
    assert irregular_rhythm(fibrillation).mean() > 0.9


def test_only_s_calls_in_an_irregular_rhythm_change_and_they_read_n():
    n, s, v = (CLASS_NAMES.index(c) for c in "NSV")
    calls = np.array([s, s, v, n, s])
    irregular = np.array([True, False, True, True, True])
    assert without_s_in_irregular_rhythm(calls, irregular).tolist() == [n, s, v, n, n]


def test_on_real_recordings_af_is_irregular_and_svt_runs_are_not(mitdb: Path):
    """203 (DS1): atrial fibrillation and flutter throughout; 209 (DS1): 383 S beats, runs of SVT."""
    fibrillation, svt = (load_record_beats(mitdb / name, BeatSpec()) for name in ("203", "209"))
    assert irregular_rhythm(np.sort(fibrillation.time_s)).mean() > 0.95
    order = np.argsort(svt.time_s)
    flagged = irregular_rhythm(svt.time_s[order]) & (svt.labels[order] == CLASS_NAMES.index("S"))
    assert (svt.labels == CLASS_NAMES.index("S")).sum() > 350 and flagged.sum() == 0


def test_the_threshold_is_the_one_validation_people_chose():
    chosen = json.loads((REPO_ROOT / "benchmarks" / "results" / "rhythm_gate.json").read_text())
    assert float(chosen["chosen"]) == IRREGULAR_NRMSSD
    assert chosen["candidates"][chosen["chosen"]]["pooled_S"]["f1"] > chosen["candidates"]["none"]["pooled_S"]["f1"]
    assert not {p for fold in chosen["folds"].values() for p in fold} & set(DS2)
