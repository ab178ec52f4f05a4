"""Beat extraction over whole splits: published counts, patient-disjoint splits, the cache."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import datasets.loading as loading
from datasets.loading import load_record_beats, load_split
from datasets.records import RecordFormatError
from datasets.splits import DS1, DS2, PACED, person_of, split_records
from edge_runtime.aami import class_counts
from edge_runtime.beats import RR_FEATURE_NAMES, BeatSpec
from simulation.cli import main

# de Chazal et al. (2004), Table I: beats per AAMI class in the inter-patient split.
PUBLISHED = {"DS1": {"N": 45866, "S": 944, "V": 3788, "F": 415}, "DS2": {"N": 44259, "S": 1837, "V": 3221, "F": 388}}


def test_split_lists_are_disjoint_and_exclude_paced():
    assert len(DS1) == len(DS2) == 22
    assert not set(DS1) & set(DS2)
    assert not set(PACED) & (set(DS1) | set(DS2))


def test_class_counts_match_the_published_table_within_1_percent(mitdb, capsys):
    assert main(["data", "summary", "--data-dir", str(mitdb), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    # Training DS1 leaves out 201 (the person of DS2's 202): with its beats added back it is de Chazal's DS1
    excluded = class_counts(load_record_beats(mitdb / "201", BeatSpec()).labels)
    assert excluded["S"] > 0 and excluded["V"] > 0
    for split, expected in PUBLISHED.items():
        for name, published in expected.items():
            measured = counts[split][name] + (excluded[name] if split == "DS1" else 0)
            assert measured == pytest.approx(published, rel=0.01), (split, name)
    assert set(counts["DS1"]) == {"N", "S", "V", "F", "Q"}


def test_train_and_test_never_share_a_patient(mitdb):
    train, test = load_split(mitdb, "DS1"), load_split(mitdb, "DS2")
    assert set(train.patients) == set(DS1) - {"201"} and set(test.patients) == set(DS2)
    assert not {person_of(p) for p in train.patients} & {person_of(p) for p in test.patients}
    assert train.windows.shape == (len(train), 88, 2) and train.rr.shape == (len(train), len(RR_FEATURE_NAMES))
    assert np.isfinite(train.windows).all() and np.isfinite(train.rr).all()


def test_premature_beats_have_short_rr_on_real_data(mitdb):
    # Inter-patient S detection rests on RR features: real S and V beats come early.
    table = load_split(mitdb, "DS1")
    pre_over_local = table.rr[:, RR_FEATURE_NAMES.index("pre_over_local")]
    normal = np.median(pre_over_local[table.labels == 0])
    # Training DS1 (without 201) has S beats mostly from 209 and 220, less premature than V: 0.87 x normal
    assert np.median(pre_over_local[table.labels == 1]) < 0.9 * normal
    assert np.median(pre_over_local[table.labels == 2]) < 0.85 * normal


def test_second_load_comes_from_the_cache(synthetic_dir, tmp_path, monkeypatch):
    first = load_split(synthetic_dir, "DS1", cache=tmp_path)
    monkeypatch.setattr(loading, "read_record", lambda *a, **k: pytest.fail("cache missed"))
    second = load_split(synthetic_dir, "DS1", cache=tmp_path)
    np.testing.assert_array_equal(first.windows, second.windows)
    np.testing.assert_array_equal(first.labels, second.labels)


def test_editing_a_record_invalidates_its_cache_entry(synthetic_dir, tmp_path):
    record = synthetic_dir / split_records(synthetic_dir)["DS1"][0]
    load_split(synthetic_dir, "DS1", cache=tmp_path)
    before = loading.record_cache_key(record, loading.BeatSpec(), "MLII")
    stat = record.with_suffix(".atr").stat()
    os.utime(record.with_suffix(".atr"), ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert loading.record_cache_key(record, loading.BeatSpec(), "MLII") != before


def test_a_partial_mitdb_directory_is_refused(mitdb, tmp_path):
    for name in DS1:
        for suffix in (".hea", ".dat", ".atr"):
            (tmp_path / f"{name}{suffix}").symlink_to(mitdb / f"{name}{suffix}")
    with pytest.raises(RecordFormatError, match="MIT-BIH directory lacks records 100 103"):
        load_split(tmp_path, "DS1")


def test_synthetic_split_alternates_subjects(synthetic_dir):
    splits = split_records(synthetic_dir)
    assert splits == {"DS1": ("syn000", "syn002", "syn004", "syn006"), "DS2": ("syn001", "syn003", "syn005", "syn007")}
    counts = class_counts(load_split(synthetic_dir, "DS2").labels)
    assert counts["N"] > 0 and counts["S"] > 0 and counts["V"] > 0


def test_all_svdb_records_load_with_their_drops_counted(svdb):
    # 128 Hz, leads ECG1/ECG2 (no MLII): all 59 records load, what is dropped is counted
    table = loading.load_people(svdb, progress=False)
    assert len(table.patients) == 59 and all(p.startswith("svdb/") for p in table.patients)
    counts = class_counts(table.labels)
    assert counts["S"] == pytest.approx(9672, rel=0.01) and counts["V"] == pytest.approx(7128, rel=0.01)
    assert all(d >= 2 for d in table.dropped)  # at least each record's first and last beat (no RR on one side)
    assert sum(table.dropped) < 0.01 * len(table)


def test_summary_reports_extra_databases_and_drops(mitdb, svdb, capsys):
    assert main(["data", "summary", "--data-dir", str(mitdb), "--extra-data-dir", str(svdb), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["people"] == {"DS1": 21, "DS2": 22, "svdb": 59}
    assert counts["svdb"]["S"] > 9000 and counts["dropped"]["svdb"] >= 1
