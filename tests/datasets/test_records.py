"""Reading WFDB records, and refusing corrupted copies of real ones with one clear line."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wfdb

from datasets.records import RecordFormatError, read_record
from simulation.cli import main
from tests.conftest import REPO_ROOT


def copy_record(source_dir: Path, name: str, target_dir: Path) -> Path:
    """Copy a real record's three files into a temp dir (real files, never edited in place)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    for suffix in (".hea", ".dat", ".atr"):
        shutil.copy(source_dir / f"{name}{suffix}", target_dir / f"{name}{suffix}")
    return target_dir / name


def test_reads_real_record_100(mitdb):
    record = read_record(mitdb / "100")
    assert (record.fs_hz, record.lead, record.signal.shape) == (360.0, "MLII", (650000,))
    assert record.ann_symbols.count("N") == 2239  # PhysioNet's published count for record 100
    assert record.ann_symbols.count("A") == 33
    assert -5 < record.signal.min() < record.signal.max() < 5  # mV


def test_selects_mlii_by_name_where_it_is_channel_1(mitdb):
    # Record 114 stores V5 first and MLII second.
    record = read_record(mitdb / "114")
    reference = wfdb.rdrecord(str(mitdb / "114"), channel_names=["MLII"])
    np.testing.assert_allclose(record.signal, reference.p_signal[:, 0])


def test_missing_lead_names_the_leads(mitdb):
    with pytest.raises(RecordFormatError, match=r"no lead 'MLII' \(leads: V5, V2\)"):
        read_record(mitdb / "102", lead="MLII")
    assert read_record(mitdb / "102").lead == "V5"  # no MLII: the first ECG channel


def test_a_header_with_a_date_wfdb_refuses_is_read_without_it(mitdb, tmp_path):
    for suffix in (".hea", ".dat", ".atr"):
        (tmp_path / f"100{suffix}").write_bytes((mitdb / f"100{suffix}").read_bytes())
    edit_header(tmp_path / "100", "100 2 360 650000", "100 2 360 650000 2000-05-01T05:05:15")
    with pytest.raises(ValueError, match="unconverted data remains"):
        wfdb.rdheader(str(tmp_path / "100"))
    record, reference = read_record(tmp_path / "100"), read_record(mitdb / "100")
    np.testing.assert_array_equal(record.signal, reference.signal)
    np.testing.assert_array_equal(record.ann_samples, reference.ann_samples)


def corrupt_missing_atr(record: Path) -> str:
    record.with_suffix(".atr").unlink()
    return r"100\.atr: file missing"


def corrupt_truncated_dat(record: Path) -> str:
    data = record.with_suffix(".dat")
    data.write_bytes(data.read_bytes()[: 100_000])
    return r"100\.dat: truncated, 100000 bytes"


def edit_header(record: Path, old: str, new: str) -> None:
    header = record.with_suffix(".hea")
    header.write_text(header.read_text().replace(old, new, 1))


def corrupt_header_length(record: Path) -> str:
    edit_header(record, "100 2 360 650000", "100 2 360 640000")
    return r"100\.dat: .*header 100\.hea length 640000 .*disagree"


def corrupt_checksum(record: Path) -> str:
    edit_header(record, "-22131", "-22130")
    return r"100\.hea: checksum -22130 of lead MLII disagrees"


def corrupt_signal_bytes(record: Path) -> str:
    data = record.with_suffix(".dat")
    raw = bytearray(data.read_bytes())
    raw[300_000] ^= 0x5A
    data.write_bytes(bytes(raw))
    return r"100\.hea: checksum .* disagrees with the signal"


def corrupt_sampling_rate(record: Path) -> str:
    edit_header(record, "100 2 360 650000", "100 2 36 650000")
    return r"100\.hea: sampling rate 36\.0 Hz is not supported"


def corrupt_missing_sampling_rate(record: Path) -> str:
    edit_header(record, "100 2 360 650000", "100 2")
    return r"100\.hea: record line '100 2' lacks the sampling frequency"


CORRUPTIONS = [
    corrupt_missing_atr,
    corrupt_truncated_dat,
    corrupt_header_length,
    corrupt_checksum,
    corrupt_signal_bytes,
    corrupt_sampling_rate,
    corrupt_missing_sampling_rate,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_corrupted_copy_of_real_record_is_refused(mitdb, tmp_path, corrupt):
    # Prepare
    record = copy_record(mitdb, "100", tmp_path)
    message = corrupt(record)
    # Execute / Assert
    with pytest.raises(RecordFormatError, match=message):
        read_record(record)


def write_record(directory: Path, name: str, signal: np.ndarray, samples: list[int], fs: float = 360.0) -> Path:
    wfdb.wrsamp(name, fs=fs, units=["mV"], sig_name=["MLII"], p_signal=signal[:, None], fmt=["16"], adc_gain=[200.0], baseline=[0], write_dir=str(directory))
    wfdb.wrann(name, "atr", np.array(samples), symbol=["N"] * len(samples), write_dir=str(directory))
    return directory / name


def test_nan_samples_are_refused(tmp_path):
    signal = np.sin(np.arange(3600) / 20.0)
    signal[1234] = np.nan
    record = write_record(tmp_path, "nan", signal, [500, 1000, 1500])
    with pytest.raises(RecordFormatError, match=r"nan\.dat: lead MLII has 1 NaN \(invalid\) samples, first at sample 1234"):
        read_record(record)


def test_annotation_beyond_the_signal_is_refused(tmp_path):
    record = write_record(tmp_path, "late", np.zeros(3600), [500, 5000])  # 3.9 s past the end: a mismatched file
    with pytest.raises(RecordFormatError, match=r"late\.atr: 1 annotations lie outside the signal"):
        read_record(record)


def test_annotation_on_the_sample_after_the_end_is_dropped_and_counted(tmp_path):
    # As svdb record 860 is published: its last beat one sample past the signal
    record = read_record(write_record(tmp_path, "edge", np.zeros(3600), [500, 1000, 3600]))
    assert record.ann_samples.tolist() == [500, 1000] and record.dropped_annotations == 1


def test_the_lead_is_mlii_else_the_first_ecg_channel_or_by_name(tmp_path):
    signal = np.sin(np.arange(3600) / 20.0)
    wfdb.wrsamp("two", fs=128, units=["mV", "mV"], sig_name=["ECG2", "ECG1"], p_signal=np.stack([signal, -signal], axis=1), fmt=["16", "16"],
                adc_gain=[200.0, 200.0], baseline=[0, 0], write_dir=str(tmp_path))
    wfdb.wrann("two", "atr", np.array([500]), symbol=["N"], write_dir=str(tmp_path))
    assert read_record(tmp_path / "two").lead == "ECG2"  # no MLII: the first ECG channel
    assert read_record(tmp_path / "two", lead="ECG2").lead == "ECG2"
    with pytest.raises(RecordFormatError, match="no lead 'MLII'"):
        read_record(tmp_path / "two", lead="MLII")


def test_cli_turns_each_bad_record_into_one_line_and_exit_2(mitdb, tmp_path, capsys):
    # A full MIT-BIH directory with one truncated record: the whole run must stop, naming it.
    data = tmp_path / "mitdb"
    for name in {p.stem for p in mitdb.glob("*.hea")}:
        for suffix in (".hea", ".dat", ".atr"):
            (data / f"{name}{suffix}").parent.mkdir(exist_ok=True)
            (data / f"{name}{suffix}").symlink_to(mitdb / f"{name}{suffix}")
    (data / "101.dat").unlink()
    shutil.copy(mitdb / "101.dat", data / "101.dat")
    raw = (data / "101.dat").read_bytes()
    (data / "101.dat").write_bytes(raw[:-1000])

    code = main(["data", "summary", "--data-dir", str(data), "--json"])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "101.dat: truncated" in err[0], err


def test_cli_short_record_error_has_no_traceback(tmp_path):
    # Runs the installed console script: exit 2, one line, no "Traceback".
    for name in ("a", "b"):
        write_record(tmp_path, name, np.zeros(100), [50])
    result = subprocess.run(
        [str(Path(sys.executable).with_name("fedbeat")), "data", "summary", "--data-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "a: record is 0.278 s long, shorter than one beat window (0.704 s)" in result.stderr.strip().splitlines()[-1]
