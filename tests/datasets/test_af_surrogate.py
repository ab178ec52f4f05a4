"""AF surrogates keep the person's QRS complexes and take away what AF takes: P waves and a regular rhythm."""
from __future__ import annotations

import dataclasses

import numpy as np

from datasets.af_surrogate import SurrogateConfig, surrogate_af
from datasets.beat_table import extract_beats
from datasets.records import read_record
from edge_runtime.beats import BeatSpec
from edge_runtime.rhythm import atrial_activity, rr_irregularity


def test_af_surrogate_of_a_sinus_record_is_irregular_without_p_waves_and_keeps_the_qrs(mitdb):
    record = read_record(mitdb / "100")  # sinus rhythm with clear P waves
    spec = BeatSpec()
    real = extract_beats(record, spec)
    surrogate = surrogate_af(record, np.random.default_rng(0), SurrogateConfig(flutter_share=0.0))
    beats = extract_beats(surrogate, spec)
    assert len(beats) > 300 and set(np.unique(beats.labels)) == {0}
    assert np.median(rr_irregularity(real.time_s)) < 0.1 and np.median(rr_irregularity(beats.time_s)) > 0.15  # gamma RR, CV >= 0.15
    assert np.median(atrial_activity(beats.windows)) < 0.5 * np.median(atrial_activity(real.windows))  # the P wave gone, f waves averaged away
    qrs = slice(spec.before - 6, spec.before + 6)  # +-48 ms around R
    real_qrs, surrogate_qrs = np.median(real.windows[:, qrs, 0], axis=0), np.median(beats.windows[:, qrs, 0], axis=0)
    assert np.corrcoef(real_qrs, surrogate_qrs)[0, 1] > 0.95


def test_flutter_surrogate_beats_fall_on_whole_flutter_cycles(mitdb):
    record = read_record(mitdb / "100")
    surrogate = surrogate_af(record, np.random.default_rng(1), SurrogateConfig(flutter_share=1.0))
    rr = np.diff(surrogate.ann_samples) / surrogate.fs_hz
    cycle = np.median(rr[rr < 1.25 * rr.min()]) / 2  # the shortest block is 2:1
    blocks = rr / cycle
    assert 0.17 < cycle < 0.26 and np.all(np.abs(blocks - np.rint(blocks)) < 0.2) and set(np.rint(blocks).astype(int)) == {2, 3, 4}


def test_a_record_without_enough_normal_beats_gives_no_surrogate(mitdb):
    record = read_record(mitdb / "100")
    first_seconds = dataclasses.replace(record, ann_samples=record.ann_samples[:10], ann_symbols=record.ann_symbols[:10])
    assert surrogate_af(first_seconds, np.random.default_rng(0)) is None
