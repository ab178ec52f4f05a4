"""Read one WFDB record (header, signal, beat annotations) and refuse anything suspicious.

A wrong dataset is worse than no dataset: a truncated download or an edited header would
otherwise give plausible-looking beats and wrong clinical numbers. Every check raises
``RecordFormatError`` naming the file and the problem. What real PhysioNet files contain is
accepted and counted, not refused: an annotation up to one second past the last sample
(svdb 860's last beat) is dropped and counted in ``dropped_annotations``.

The lead: a name given explicitly must exist; by default MLII, else the first ECG channel
(svdb's ECG1), by ``edge_runtime.signal_input.choose_lead``, the rule the device uses too. A
header whose base time or date wfdb refuses is read without them.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import wfdb

from edge_runtime.signal_input import check_sampling_rate, choose_lead, readable_record

_BITS_PER_SAMPLE = {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12}
_ANNOTATION_GRACE_S = 1.0
_INVALID_SAMPLE = {"8": -128, "16": -32768, "24": -(2**23), "32": -(2**31), "61": -32768, "80": -128, "160": -32768, "212": -2048}


class RecordFormatError(ValueError):
    """A WFDB record that cannot be trusted; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class EcgRecord:
    """One lead of a record with its beat annotations.

    signal: float64[n], mV, at fs_hz. ann_samples: int64[m] sample indices into signal;
    ann_symbols: the WFDB annotation symbol of each (beats and non-beats alike).
    """

    name: str
    signal: np.ndarray
    fs_hz: float
    lead: str
    ann_samples: np.ndarray
    ann_symbols: tuple[str, ...]
    dropped_annotations: int = 0

    @property
    def duration_s(self) -> float:
        return self.signal.shape[0] / self.fs_hz


def read_record(record_path: Path | str, *, lead: str | None = None) -> EcgRecord:
    """Read and validate ``record_path`` (.hea/.dat/.atr without extension); ``lead`` None: by preference."""
    base = Path(record_path)
    header_file = base.with_suffix(".hea")
    annotation_file = base.with_suffix(".atr")
    for required in (header_file, annotation_file):
        if not required.is_file():
            raise RecordFormatError(f"{required}: file missing")

    try:
        with readable_record(base) as readable:
            header = _read_header(header_file, Path(readable))
            channel = choose_lead(list(header.sig_name), lead, str(header_file))
            _check_data_size(base, header, header_file)
            digital = _read_digital(base, Path(readable), header, channel)
    except RecordFormatError:
        raise
    except ValueError as error:
        raise RecordFormatError(str(error)) from error
    lead = header.sig_name[channel]
    _check_checksum(digital, header, channel, header_file)

    fmt = str(header.fmt[channel])
    invalid = digital == _INVALID_SAMPLE.get(fmt, None)
    signal = (digital.astype(np.float64) - header.baseline[channel]) / header.adc_gain[channel]
    if invalid.any():
        raise RecordFormatError(
            f"{base.with_suffix('.dat')}: lead {lead} has {int(invalid.sum())} NaN (invalid) samples, first at sample {int(np.argmax(invalid))}"
        )

    samples, symbols, dropped = _read_annotations(base, annotation_file, header.sig_len, float(header.fs))
    return EcgRecord(
        name=base.name,
        signal=signal,
        fs_hz=float(header.fs),
        lead=lead,
        ann_samples=samples,
        ann_symbols=symbols,
        dropped_annotations=dropped,
    )


def _read_header(header_file: Path, readable: Path) -> wfdb.Record:
    first_line = next((line for line in header_file.read_text(errors="replace").splitlines() if line and not line.startswith("#")), "")
    fields = first_line.split()
    if len(fields) < 4:
        raise RecordFormatError(
            f"{header_file}: record line {first_line!r} lacks the sampling frequency and length (need 'name nsig fs length')"
        )
    try:
        header = wfdb.rdheader(str(readable))
    except Exception as error:  # wfdb raises bare ValueError/IndexError on bad headers
        raise RecordFormatError(f"{header_file}: unreadable header ({error})") from error
    check_sampling_rate(float(fields[2].split("/")[0]), str(header_file))
    if not header.sig_len:
        raise RecordFormatError(f"{header_file}: header gives no signal length")
    return header


def _check_data_size(base: Path, header: wfdb.Record, header_file: Path) -> None:
    """Compare each signal file's size with what the header's length and format imply."""
    for file_name in sorted(set(header.file_name)):
        data_file = base.parent / file_name
        if not data_file.is_file():
            raise RecordFormatError(f"{data_file}: file missing")
        channels = [i for i, f in enumerate(header.file_name) if f == file_name]
        fmts = {str(header.fmt[i]) for i in channels}
        if len(fmts) != 1 or next(iter(fmts)) not in _BITS_PER_SAMPLE:
            continue  # exotic formats: wfdb's own reader is the only check
        bits = _BITS_PER_SAMPLE[fmts.pop()] * len(channels) * header.sig_len
        offset = int((header.byte_offset or [0] * header.n_sig)[channels[0]] or 0)
        expected = offset + math.ceil(bits / 8)
        actual = data_file.stat().st_size
        if actual < expected:
            raise RecordFormatError(
                f"{data_file}: truncated, {actual} bytes but header {header_file.name} implies {expected} ({header.sig_len} samples)"
            )
        if actual > expected + 1:
            raise RecordFormatError(
                f"{data_file}: {actual} bytes but header {header_file.name} length {header.sig_len} implies {expected}: header and signal disagree"
            )


def _read_digital(base: Path, readable: Path, header: wfdb.Record, channel: int) -> np.ndarray:
    try:
        record = wfdb.rdrecord(str(readable), channels=[channel], physical=False, return_res=32)
    except Exception as error:
        raise RecordFormatError(f"{base.with_suffix('.dat')}: unreadable signal ({error})") from error
    digital = np.asarray(record.d_signal[:, 0], dtype=np.int64)
    if digital.shape[0] != header.sig_len:
        raise RecordFormatError(f"{base.with_suffix('.dat')}: holds {digital.shape[0]} samples, header says {header.sig_len}")
    return digital


def _check_checksum(digital: np.ndarray, header: wfdb.Record, channel: int, header_file: Path) -> None:
    expected = (header.checksum or [None] * header.n_sig)[channel]
    if expected is None:
        return
    if (int(digital.sum()) - int(expected)) % 65536 != 0:
        actual = (int(digital.sum()) + 32768) % 65536 - 32768
        raise RecordFormatError(
            f"{header_file}: checksum {expected} of lead {header.sig_name[channel]} disagrees with the signal ({actual}): header or data corrupted"
        )


def _read_annotations(base: Path, annotation_file: Path, sig_len: int, fs: float) -> tuple[np.ndarray, tuple[str, ...], int]:
    """(samples, symbols, dropped): annotations just past the end are dropped and counted; others outside refuse the record."""
    try:
        annotation = wfdb.rdann(str(base), "atr")
    except Exception as error:
        raise RecordFormatError(f"{annotation_file}: unreadable annotations ({error})") from error
    samples = np.asarray(annotation.sample, dtype=np.int64)
    symbols = np.asarray(annotation.symbol, dtype=object)
    past_end = (samples >= sig_len) & (samples < sig_len + _ANNOTATION_GRACE_S * fs)
    outside = ((samples < 0) | (samples >= sig_len)) & ~past_end
    if outside.any():
        raise RecordFormatError(
            f"{annotation_file}: {int(outside.sum())} annotations lie outside the signal (0..{sig_len - 1}), e.g. sample {int(samples[outside][0])}"
        )
    return samples[~past_end], tuple(symbols[~past_end]), int(past_end.sum())
