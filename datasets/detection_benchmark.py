"""How well the device's R-peak detector finds beats, beside wfdb's XQRS, on clean and noisy leads.

Rows: MIT-BIH leads 1 and 2 (lead 1 by the shared lead rule: MLII, or V5 in the two records
without it; lead 2 the other channel, V1/V2/V4/V5: a weaker lead), svdb ECG1 and ECG2 (128 Hz),
and the noise stress test: MIT-BIH 118 and 119 (lead 1) with nstdb electrode-motion (em),
muscle (ma) and baseline-wander (bw) noise added at SNR 24 ... 0 dB by the nst protocol (5 clean
minutes, then 2-minute noisy and clean periods in turn; SNR from the QRS peak-to-peak amplitude
and the noise's RMS, as nst measures them), plus nstdb's own 118e* records as a cross-check.

Scoring follows ANSI/AAMI EC57: a detection within 150 ms of an annotated beat is a true
positive (each beat matched once); ventricular flutter episodes ('[' to ']') are left out.
Sensitivity and positive predictivity are gross (pooled over the records of a row). Beside
fedbeat's raw detector, "fedbeat usable" scores what `infer` reports: only the stretches the
signal-quality gate calls usable (their annotated beats and detections), with ``coverage``, the
share of annotated beats inside them.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import wfdb
import wfdb.processing
from tqdm import tqdm

from datasets.noise_stress import mix_noise, noisy_periods
from datasets.records import EcgRecord, read_record
from edge_runtime.aami import classes_of
from edge_runtime.detector import detect_r_peaks, match_beats
from edge_runtime.quality import assess_quality
from edge_runtime.signal_input import choose_lead

TOLERANCE_S = 0.150
SNRS_DB = (24, 18, 12, 6, 0)
NOISES = ("em", "ma", "bw")
NST_CLEAN_RECORDS = ("118", "119")
NSTDB_READY = {"118e24": 24, "118e12": 12, "118e00": 0, "118e_6": -6}
TARGETS = {"mitdb lead 1": 99.5, "mitdb lead 2": 99.0, "svdb ECG1": 99.0, "svdb ECG2": 99.0, "nst em 12 dB": 99.0}
"""Minimum Se and +P (%) of fedbeat's detector per row (issue 14)."""
USABLE = "fedbeat usable"
"""The row entry scoring fedbeat's detections on the quality gate's usable stretches only."""


@dataclasses.dataclass(frozen=True)
class DetectionBenchmarkConfig:
    mitdb: Path
    svdb: Path | None = None
    nstdb: Path | None = None
    records: int | None = None  # first N records of each database (None: all); the noise rows always use 118 and 119
    xqrs: bool = True

    @classmethod
    def quick(cls, mitdb: Path, svdb: Path | None, nstdb: Path | None) -> "DetectionBenchmarkConfig":
        """A few records per row and no XQRS: minutes on 2 cores, for CI."""
        return cls(mitdb=mitdb, svdb=svdb, nstdb=nstdb, records=4, xqrs=False)


@dataclasses.dataclass(frozen=True)
class Strip:
    """One lead to detect on, its rate, and the annotated beats to score against."""

    name: str
    signal: np.ndarray
    fs_hz: float
    beats: np.ndarray
    excluded: list[tuple[int, int]]


def flutter_episodes(record: EcgRecord) -> list[tuple[int, int]]:
    """Ventricular flutter episodes ('[' to ']') as (start, end) sample pairs."""
    starts = [s for s, sym in zip(record.ann_samples, record.ann_symbols) if sym == "["]
    ends = [s for s, sym in zip(record.ann_samples, record.ann_symbols) if sym == "]"]
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def mitdb_leads(base: Path) -> tuple[str, str]:
    """(lead 1, lead 2) of a MIT-BIH record: the shared lead rule's choice, then the other channel."""
    names = list(wfdb.rdheader(str(base)).sig_name)
    first = choose_lead(names, None, str(base))
    return names[first], names[1 - first]


def read_strip(base: Path, lead: str | None, name: str) -> Strip:
    """A record's lead (None: the shared lead rule's) read and checked as training records are."""
    record = read_record(base, lead=lead)
    beats = record.ann_samples[classes_of(record.ann_symbols) >= 0]
    return Strip(name, record.signal, record.fs_hz, beats, flutter_episodes(record))


def add_noise(clean: Strip, noise: np.ndarray, snr_db: float, name: str) -> Strip:
    """``clean`` with ``noise`` (same rate) scaled to ``snr_db`` in nst's noisy periods."""
    periods = noisy_periods(clean.signal.size, clean.fs_hz)
    return dataclasses.replace(clean, name=name, signal=mix_noise(clean.signal, clean.beats, clean.fs_hz, noise, snr_db, periods))


def xqrs_detect(signal: np.ndarray, fs_hz: float) -> np.ndarray:
    detector = wfdb.processing.XQRS(sig=signal, fs=fs_hz)
    detector.detect(verbose=False)
    return np.asarray(detector.qrs_inds, np.int64)


DETECTORS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {"fedbeat": detect_r_peaks, "xqrs": xqrs_detect}


def score(strip: Strip, detected: np.ndarray, usable_only: bool = False) -> dict:
    """EC57 counts for one strip, flutter episodes left out (``usable_only``: and the stretches
    the quality gate calls unreadable; ``beats``: annotated beats scored)."""
    beats, found = strip.beats, np.asarray(detected, np.int64)
    if usable_only:
        quality = assess_quality(strip.signal, strip.fs_hz, found)
        beats, found = beats[quality.usable_beats(beats, strip.fs_hz)], found[quality.usable_beats(found, strip.fs_hz)]

    def outside(samples: np.ndarray) -> np.ndarray:
        keep = np.ones(samples.size, bool)
        for start, end in strip.excluded:
            keep &= ~((samples >= start) & (samples <= end))
        return samples[keep]

    beats = outside(beats)
    tp, fn, fp = match_beats(beats, outside(found), int(TOLERANCE_S * strip.fs_hz))
    return {"tp": tp, "fn": fn, "fp": fp, "beats": int(beats.size)}


def gross(counts: list[dict], all_beats: int | None = None) -> dict:
    tp, fn, fp = (sum(c[k] for c in counts) for k in ("tp", "fn", "fp"))
    result = {"se": round(100.0 * tp / max(tp + fn, 1), 3), "ppv": round(100.0 * tp / max(tp + fp, 1), 3), "tp": tp, "fn": fn, "fp": fp}
    if all_beats is not None:
        result["coverage"] = round(100.0 * sum(c["beats"] for c in counts) / max(all_beats, 1), 3)
    return result


def rows(config: DetectionBenchmarkConfig) -> dict[str, Callable[[], list[Strip]]]:
    """Row name -> loader of its strips (lazily, one row in memory at a time)."""
    def database(directory: Path, lead: int, label: str, leads: Callable[[Path], tuple[str, str]]) -> Callable[[], list[Strip]]:
        names = [n for n in sorted(p.stem for p in directory.glob("*.hea")) if (directory / f"{n}.atr").is_file()][: config.records]
        return lambda: [read_strip(directory / n, leads(directory / n)[lead], f"{label}/{n}") for n in names]

    table = {f"mitdb lead {k + 1}": database(config.mitdb, k, "mitdb", mitdb_leads) for k in (0, 1)}
    if config.svdb is not None:
        table |= {f"svdb ECG{k + 1}": database(config.svdb, k, "svdb", lambda _: ("ECG1", "ECG2")) for k in (0, 1)}
    if config.nstdb is not None:
        for noise_name in NOISES:
            for snr in SNRS_DB:
                table[f"nst {noise_name} {snr} dB"] = _nst_row(config, noise_name, snr)
        table |= {f"nstdb {name} (ready-made)": _ready_made(config.nstdb, name) for name in NSTDB_READY if (config.nstdb / f"{name}.hea").is_file()}
    return table


def _nst_row(config: DetectionBenchmarkConfig, noise_name: str, snr: float) -> Callable[[], list[Strip]]:
    def load() -> list[Strip]:
        noise = wfdb.rdrecord(str(config.nstdb / noise_name), channels=[0]).p_signal[:, 0]
        return [add_noise(read_strip(config.mitdb / r, None, r), noise, snr, f"{r}+{noise_name}{snr}") for r in NST_CLEAN_RECORDS]
    return load


def _ready_made(nstdb: Path, name: str) -> Callable[[], list[Strip]]:
    return lambda: [read_strip(nstdb / name, None, f"nstdb/{name}")]


def benchmark_detection(config: DetectionBenchmarkConfig, *, progress: bool = True) -> dict:
    """{"rows": {row: {detector: gross counts, "records": {...}}}, "seconds": {detector: total}, "targets": ...}."""
    detectors = {k: v for k, v in DETECTORS.items() if config.xqrs or k != "xqrs"}
    result: dict = {"rows": {}, "seconds": {name: 0.0 for name in detectors}, "tolerance_s": TOLERANCE_S, "targets": TARGETS}
    for row, load in tqdm(rows(config).items(), desc="detection", unit="row", disable=None if progress else True):
        strips = load()
        entry: dict = {"records": {}}
        for name, detect in detectors.items():
            counts, usable = [], []
            for strip in strips:
                started = time.perf_counter()
                detected = detect(strip.signal, strip.fs_hz)
                result["seconds"][name] += time.perf_counter() - started
                counts.append(score(strip, detected))
                entry["records"].setdefault(strip.name, {})[name] = gross([counts[-1]])
                if name == "fedbeat":
                    usable.append(score(strip, detected, usable_only=True))
                    entry["records"][strip.name][USABLE] = gross([usable[-1]], counts[-1]["beats"])
            entry[name] = gross(counts)
            if usable:
                entry[USABLE] = gross(usable, sum(c["beats"] for c in counts))
        result["rows"][row] = entry
    result["targets_met"] = {row: min(result["rows"][row]["fedbeat"]["se"], result["rows"][row]["fedbeat"]["ppv"]) >= target
                             for row, target in TARGETS.items() if row in result["rows"]}
    return result
