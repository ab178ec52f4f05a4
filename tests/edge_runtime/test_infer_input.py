"""`python -m edge_runtime infer` on what a watch really sends: no signal, noise, clipping, short strips,
bad rates, records without MLII, dated headers, and a reader that closes the pipe."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import wfdb

from datasets.records import read_record
from tests.conftest import REPO_ROOT, device

FS = 360.0


def infer_strip(model_dir, tmp_path, signal: np.ndarray, fs: float = FS) -> subprocess.CompletedProcess:
    np.save(tmp_path / "strip.npy", signal)
    return device("infer", "--model", str(model_dir), "--ecg", str(tmp_path / "strip.npy"), "--fs", str(fs))


def unreadable_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    n = int(30 * FS)
    inputs = {
        "flat zero": np.zeros(n),
        "DC 1 mV": np.ones(n),
        "open lead (DC + 1 uV noise)": 1.0 + 1e-3 * rng.normal(size=n),
    }
    for amplitude in (1e-12, 1e-6, 1e-3, 0.01, 0.3, 1.0):
        inputs[f"white noise {amplitude:g} mV"] = amplitude * rng.normal(size=n)
    return inputs


@pytest.mark.parametrize("name", list(unreadable_inputs()))
def test_no_cardiac_signal_is_unreadable_never_arrhythmia(exported, tmp_path, name):
    _, out, _ = exported
    result = infer_strip(out, tmp_path, unreadable_inputs()[name])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["unreadable"] and report["quality"]["usable"] is False
    assert report["summary"] is None and report["beats"] == []


def test_clipped_and_two_second_strips_are_unreadable_with_the_reason(exported, mitdb, tmp_path):
    _, out, _ = exported
    ecg = read_record(mitdb / "100").signal[: int(30 * FS)]
    clipped = json.loads(infer_strip(out, tmp_path, np.clip(ecg, -0.3, 0.3)).stdout)
    assert clipped["unreadable"].startswith("clipped") and clipped["summary"] is None
    short = json.loads(infer_strip(out, tmp_path, ecg[: int(2 * FS)]).stdout)
    assert short["unreadable"].startswith("strip too short (2.0 s") and short["beats"] == []
    clean = json.loads(infer_strip(out, tmp_path, ecg).stdout)
    assert clean["unreadable"] is None and 30 <= clean["summary"]["beats_detected"] <= 45 and clean["beats"]


def test_noise_inside_a_strip_takes_only_its_stretch(exported, mitdb, tmp_path):
    _, out, _ = exported
    ecg = read_record(mitdb / "100").signal[: int(30 * FS)].copy()
    ecg[int(10 * FS):int(20 * FS)] = 0.5 * np.random.default_rng(0).normal(size=int(10 * FS))
    report = json.loads(infer_strip(out, tmp_path, ecg).stdout)
    verdicts = [s["unreadable"] for s in report["quality"]["stretches"]]
    assert verdicts[0] is None and verdicts[2] is None and verdicts[1].startswith("noise")
    assert all(not 10 * FS <= b["r_sample"] < 20 * FS for b in report["beats"])


def test_atrial_fibrillation_is_reported_as_an_af_like_rhythm_not_as_s_beats(exported, mitdb, tmp_path):
    """Record 203 (DS1) is in atrial fibrillation throughout; 100 is sinus rhythm."""
    _, out, _ = exported
    fibrillation = json.loads(infer_strip(out, tmp_path, read_record(mitdb / "203").signal[: int(30 * FS)]).stdout)
    assert fibrillation["summary"]["af_like_percent"] > 40 and fibrillation["beats"]  # strip edges lack the template's context
    sinus = json.loads(infer_strip(out, tmp_path, read_record(mitdb / "100").signal[: int(30 * FS)]).stdout)
    assert sinus["summary"]["af_like_percent"] == 0


@pytest.mark.parametrize("fs, message", [("0", "not supported"), ("-300", "not supported"), ("nan", "not supported"), ("50", "not supported")])
def test_bad_sampling_rates_are_one_line_errors(exported, tmp_path, fs, message):
    _, out, _ = exported
    np.save(tmp_path / "strip.npy", np.zeros(3000))
    result = device("infer", "--model", str(out), "--ecg", str(tmp_path / "strip.npy"), "--fs", fs)
    assert result.returncode == 2 and message in result.stderr and result.stderr.strip().count("\n") == 0


def write_record(directory, name: str, channels: list[str], *, date_suffix: str = "") -> str:
    signal = read_record_signal()
    wfdb.wrsamp(name, fs=FS, units=["mV"] * len(channels), sig_name=channels, p_signal=np.repeat(signal[:, None], len(channels), axis=1),
                fmt=["16"] * len(channels), adc_gain=[200.0] * len(channels), baseline=[0] * len(channels), write_dir=str(directory))
    header = directory / f"{name}.hea"
    lines = header.read_text().splitlines()
    header.write_text("\n".join([lines[0] + date_suffix, *lines[1:]]) + "\n")
    return str(directory / name)


def read_record_signal() -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(int(20 * FS)) / FS
    return np.sum([np.exp(-((t - beat) ** 2) / (2 * 0.012**2)) for beat in np.arange(0.5, 20, 0.8)], axis=0) + 0.01 * rng.normal(size=t.size)


def test_record_lead_rule_and_dated_headers(exported, tmp_path):
    _, out, _ = exported
    lead_one = write_record(tmp_path, "watch", ["RESP", "lead I"], date_suffix=" 2017-03-01T10:00:00")
    result = device("infer", "--model", str(out), "--record", lead_one)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["beats_detected"] >= 20
    no_ecg = write_record(tmp_path, "other", ["RESP", "ABP"])
    result = device("infer", "--model", str(out), "--record", no_ecg)
    assert result.returncode == 2 and "no ECG lead among the channels RESP, ABP" in result.stderr
    result = device("infer", "--model", str(out), "--record", no_ecg, "--lead", "ABP")
    assert result.returncode == 0, result.stderr


def test_a_closed_pipe_ends_quietly(exported, mitdb):
    _, out, _ = exported
    pipeline = f"{sys.executable} -m edge_runtime infer --model {out} --record {mitdb / '100'} | head -c 10"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0 and "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
