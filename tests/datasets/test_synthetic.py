"""The embedded ECGSYN-style generator: readable WFDB, plausible rhythm and morphology."""
from __future__ import annotations

import numpy as np
import wfdb

from datasets.beat_table import extract_beats
from datasets.records import read_record
from datasets.synthetic import write_synthetic_dataset
from edge_runtime.beats import RR_FEATURE_NAMES, BeatSpec
from simulation.cli import main


def test_cli_writes_records_that_wfdb_reads_back(tmp_path):
    assert main(["data", "synth", "--out", str(tmp_path), "--subjects", "3", "--minutes", "2", "--seed", "5"]) == 0
    names = (tmp_path / "RECORDS").read_text().split()
    assert names == ["syn000", "syn001", "syn002"]
    for name in names:
        record = wfdb.rdrecord(str(tmp_path / name))
        annotation = wfdb.rdann(str(tmp_path / name), "atr")
        assert record.fs == 360 and record.sig_len == 2 * 60 * 360
        assert set(annotation.symbol) <= {"N", "V", "A"} and "N" in annotation.symbol


def test_all_three_beat_kinds_are_annotated(synthetic_dir):
    symbols = []
    for name in (synthetic_dir / "RECORDS").read_text().split():
        symbols += wfdb.rdann(str(synthetic_dir / name), "atr").symbol
    assert {"N", "V", "A"} <= set(symbols)


def test_rhythm_and_morphology_of_ectopic_beats(synthetic_dir):
    # PVCs: premature with a compensatory pause and a wide, large QRS; APCs: premature.
    record = read_record(synthetic_dir / "syn000")
    table = extract_beats(record, BeatSpec())
    column = {name: i for i, name in enumerate(RR_FEATURE_NAMES)}
    pre_over_local, post_over_local = table.rr[:, column["pre_over_local"]], table.rr[:, column["post_over_local"]]
    normal, pvc, apc = table.labels == 0, table.labels == 2, table.labels == 1
    assert pvc.sum() > 0 and apc.sum() > 0
    assert np.median(pre_over_local[pvc]) < 0.8 < np.median(pre_over_local[normal])
    assert np.median(post_over_local[pvc]) > 1.2
    assert np.median(pre_over_local[apc]) < 0.9
    # QRS width: samples above half the peak of |beat| around the R peak, wider in PVCs
    qrs = np.abs(table.windows[:, 24:40, 0])
    width = (qrs > 0.5 * qrs.max(axis=1, keepdims=True)).sum(axis=1)
    assert np.median(width[pvc]) > 1.5 * np.median(width[normal])


def test_heart_rate_is_physiological(synthetic_dir):
    record = read_record(synthetic_dir / "syn001")
    rate = 60 / np.diff(record.ann_samples / record.fs_hz)
    assert 40 < np.median(rate) < 110


def test_same_seed_same_bytes(tmp_path):
    write_synthetic_dataset(tmp_path / "a", subjects=2, minutes=1, seed=9)
    write_synthetic_dataset(tmp_path / "b", subjects=2, minutes=1, seed=9)
    write_synthetic_dataset(tmp_path / "c", subjects=2, minutes=1, seed=10)
    for suffix in (".dat", ".atr"):
        assert (tmp_path / "a" / f"syn001{suffix}").read_bytes() == (tmp_path / "b" / f"syn001{suffix}").read_bytes()
    assert (tmp_path / "a" / "syn001.dat").read_bytes() != (tmp_path / "c" / "syn001.dat").read_bytes()
