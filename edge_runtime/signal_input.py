"""What ECG input fedbeat accepts, on the server and on the device: rates, leads and WFDB headers.

One rule for both sides, so a record the training loader reads is a record the watch reads.
"""
from __future__ import annotations

import math
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SUPPORTED_FS_HZ = (100.0, 5000.0)
"""Sampling rates we accept: below 100 Hz the 40 Hz band edge and the 5-15 Hz QRS band of the
detector do not fit with margin; above 5 kHz is not an ECG recorder."""

PREFERRED_LEAD = "MLII"
_ECG_LEAD = re.compile(r"^(lead\s*)?(ML)?(I{1,3}|AVR|AVL|AVF|V[1-6])$|ECG|EKG", re.IGNORECASE)


def check_sampling_rate(fs_hz: float, source: str) -> float:
    """``fs_hz`` as a float, or ValueError naming ``source`` when it is not a usable ECG rate."""
    if not math.isfinite(fs_hz) or not SUPPORTED_FS_HZ[0] <= fs_hz <= SUPPORTED_FS_HZ[1]:
        raise ValueError(f"{source}: sampling rate {fs_hz} Hz is not supported (need {SUPPORTED_FS_HZ[0]:g}-{SUPPORTED_FS_HZ[1]:g} Hz)")
    return float(fs_hz)


def is_ecg_lead(name: str) -> bool:
    """A channel named like an ECG lead: I-III, aVR/aVL/aVF, V1-V6 (with MIT-BIH's ML or a "lead " prefix), or *ECG*/*EKG*."""
    return bool(_ECG_LEAD.search(name.strip()))


def choose_lead(names: list[str], requested: str | None, source: str) -> int:
    """The channel to read: ``requested`` if given (it must exist), else MLII, else the first ECG
    channel (svdb's ECG1, a watch's lead I), else ValueError naming the channels."""
    if requested is not None:
        if requested not in names:
            raise ValueError(f"{source}: no lead {requested!r} (leads: {', '.join(names)})")
        return names.index(requested)
    if PREFERRED_LEAD in names:
        return names.index(PREFERRED_LEAD)
    for index, name in enumerate(names):
        if is_ecg_lead(name):
            return index
    raise ValueError(f"{source}: no ECG lead among the channels {', '.join(names) or '(none)'}; name one with --lead")


def _without_base_time(record_line: str) -> str:
    """The record line cut after 'name nsig fs length': base time and date are informational."""
    return " ".join(record_line.split()[:4])


@contextmanager
def readable_record(record_path: str | Path) -> Iterator[str]:
    """A path wfdb can read for ``record_path``: itself, or when wfdb refuses its header's base
    time/date (ISO dates, as some exporters write), a temporary copy of the header without them
    beside links to the record's other files."""
    import wfdb  # optional on devices: only WFDB input needs it

    base = Path(record_path)
    try:
        wfdb.rdheader(str(base))
    except Exception as error:  # wfdb raises bare ValueError/IndexError on headers it refuses
        refused = error
    else:
        yield str(base)
        return
    lines = base.with_suffix(".hea").read_text(errors="replace").splitlines()
    index = next((i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")), None)
    if index is None or len(lines[index].split()) <= 4:
        raise ValueError(f"{base.with_suffix('.hea')}: unreadable header ({refused})") from refused
    lines[index] = _without_base_time(lines[index])
    signal_files = {line.split()[0] for line in lines[index + 1:] if line.strip() and not line.startswith("#")}
    others = {f.name for f in base.parent.glob(base.name + ".*")} | signal_files
    with tempfile.TemporaryDirectory(prefix="fedbeat-hea-") as directory:
        for name in others - {base.with_suffix(".hea").name}:
            if (base.parent / name).is_file():
                (Path(directory) / name).symlink_to((base.parent / name).resolve())
        (Path(directory) / base.with_suffix(".hea").name).write_text("\n".join(lines) + "\n")
        yield str(Path(directory) / base.name)
