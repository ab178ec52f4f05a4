"""Signal quality on real recordings: clean MIT-BIH strips are usable, recorded noise is not."""
from __future__ import annotations

import numpy as np
import pytest
import wfdb

from datasets.records import read_record
from datasets.splits import DS2, shared_database_dir
from edge_runtime.detector import detect_r_peaks
from edge_runtime.quality import assess_quality, stretch_bounds


def strip_verdicts(signal: np.ndarray, fs: float, strip_s: float = 30.0) -> list[str | None]:
    n = int(strip_s * fs)
    return [assess_quality(signal[a:a + n], fs, detect_r_peaks(signal[a:a + n], fs)).unreadable for a in range(0, signal.size - n + 1, n)]


@pytest.mark.slow
def test_clean_ds2_strips_are_usable(mitdb):
    verdicts = [v for name in DS2 for v in strip_verdicts(read_record(mitdb / name).signal, 360.0)]
    assert len(verdicts) == 1320
    assert sum(v is None for v in verdicts) >= 0.99 * len(verdicts)


def test_recorded_muscle_and_baseline_noise_is_unreadable():
    nstdb = shared_database_dir("nstdb")
    if nstdb is None:
        pytest.skip("nstdb not found at ../shared/data/nstdb")
    for noise in ("ma", "bw"):
        record = wfdb.rdrecord(str(nstdb / noise), channels=[0], sampto=int(600 * 360))
        verdicts = strip_verdicts(record.p_signal[:, 0], 360.0)
        assert sum(v is not None for v in verdicts) >= 0.95 * len(verdicts), (noise, verdicts)


def test_ventricular_bigeminy_is_a_heartbeat_not_noise(mitdb):
    # Record 200: long runs of bigeminy, every other beat a PVC. Half the QRS complexes differ from
    # the median one, yet each has its twins; judged by the median template (the first version)
    # 19 of its 10 s stretches were unreadable and their PVCs hidden.
    record = read_record(mitdb / "200")
    symbols = np.array(record.ann_symbols)
    bigeminy = []
    for a in range(0, record.signal.size - 3600, 3600):
        if np.mean(symbols[(record.ann_samples >= a) & (record.ann_samples < a + 3600)] == "V") >= 0.4:
            stretch = record.signal[a:a + 3600]
            bigeminy.append(assess_quality(stretch, 360.0, detect_r_peaks(stretch, 360.0)).unreadable)
    assert len(bigeminy) >= 19 and all(v is None for v in bigeminy), bigeminy


def test_stretches_cover_the_strip_and_a_short_tail_joins_the_last():
    assert stretch_bounds(30.0) == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    assert stretch_bounds(34.0) == [(0.0, 10.0), (10.0, 20.0), (20.0, 34.0)]
    assert stretch_bounds(12.0) == [(0.0, 12.0)]
