"""The detection benchmark's noise stress test reproduces nstdb's own noisy records, and scoring follows EC57."""
from __future__ import annotations

import numpy as np
import pytest
import wfdb

from datasets.detection_benchmark import Strip, add_noise, gross, read_strip, score
from datasets.noise_stress import noisy_periods
from datasets.splits import shared_database_dir
from edge_runtime.detector import detect_r_peaks


@pytest.fixture(scope="module")
def nstdb():
    path = shared_database_dir("nstdb")
    if path is None or not (path / "118e12.hea").is_file():
        pytest.skip("nstdb (with 118e12) not found at ../shared/data/nstdb")
    return path


@pytest.mark.parametrize("record, snr", [("118e24", 24), ("118e12", 12), ("118e00", 0)])
def test_generated_noise_matches_nstdb_records(mitdb, nstdb, record, snr):
    clean = read_strip(mitdb / "118", None, "118")
    em = wfdb.rdrecord(str(nstdb / "em"), channels=[0]).p_signal[:, 0]
    ours = add_noise(clean, em, snr, "ours").signal - clean.signal
    theirs = read_strip(nstdb / record, None, record).signal - clean.signal  # plus a constant: nst removes the ADC zero
    first_five_minutes = theirs[: int(300 * clean.fs_hz)]
    assert np.ptp(first_five_minutes) < 1e-9 and not noisy_periods(clean.signal.size, clean.fs_hz)[: first_five_minutes.size].any()
    minute = int(60 * clean.fs_hz)
    their_rms = [theirs[a:a + minute].std() for a in range(5 * minute, clean.signal.size - minute, 4 * minute)]
    our_rms = [ours[a:a + minute].std() for a in range(5 * minute, clean.signal.size - minute, 4 * minute)]
    np.testing.assert_allclose(our_rms, their_rms, rtol=0.03)


def test_scoring_matches_within_150_ms_and_leaves_out_flutter():
    strip = Strip("s", np.zeros(10_000), 360.0, beats=np.array([1000, 2000, 3000, 8000]), excluded=[(7000, 9000)])
    counts = score(strip, np.array([1040, 2100, 5000, 8000, 8500]))  # 2100 is 278 ms late; 8000/8500 inside flutter
    assert counts == {"tp": 1, "fn": 2, "fp": 2, "beats": 3}


def test_usable_scoring_leaves_out_what_the_quality_gate_calls_unreadable(mitdb):
    record = read_strip(mitdb / "100", None, "100")
    n = int(60 * record.fs_hz)
    signal = record.signal[:n].copy()
    signal[n // 2:] = signal[n // 2]  # the second half: a flat line (lead off), its annotated beats unseen
    strip = Strip("100 half flat", signal, record.fs_hz, record.beats[record.beats < n], [])
    detected = detect_r_peaks(signal, record.fs_hz)
    everything, usable = score(strip, detected), score(strip, detected, usable_only=True)
    in_first_half = int((strip.beats < n // 2).sum())
    assert everything["beats"] == strip.beats.size and everything["fn"] >= strip.beats.size - in_first_half
    assert usable["beats"] == in_first_half and usable["fn"] == 0 and usable["fp"] == 0
    assert gross([usable], everything["beats"])["coverage"] == round(100.0 * in_first_half / strip.beats.size, 3)


def test_fedbeat_bench_detect_quick_reports_every_row(mitdb, nstdb):
    import json
    import subprocess
    import sys
    from pathlib import Path

    fedbeat = Path(sys.executable).with_name("fedbeat")
    result = subprocess.run([str(fedbeat), "bench", "detect", "--quick", "--json", "--data-dir", str(mitdb), "--nstdb", str(nstdb)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"mitdb lead 1", "mitdb lead 2", "nst em 12 dB", "nst ma 0 dB", "nstdb 118e12 (ready-made)"} <= set(report["rows"])
    assert all(len(row["records"]) == (2 if name.startswith("nst ") else 1 if "ready" in name else 4) for name, row in report["rows"].items())
    clean = report["rows"]["mitdb lead 1"]["fedbeat"]
    assert clean["se"] >= 99.0 and clean["ppv"] >= 99.0  # records 100, 101, 102, 103
    assert report["rows"]["nst em 0 dB"]["fedbeat"]["ppv"] < report["rows"]["nst em 24 dB"]["fedbeat"]["ppv"]
