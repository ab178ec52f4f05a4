"""What the watch computes, scored on DS2: 30 s strips through `python -m edge_runtime infer`'s own
pipeline (its R-peak detector, signal-quality gate, strip-local features, the int8 model), each
classified beat matched to a reference annotation within 150 ms (EC57), beside the annotation-based
numbers; per record, how many S or V calls match no annotated beat (false detections that became
false arrhythmia), and how many strips quality calls usable.

Usage: python benchmarks/end_to_end.py --model EXPORT_DIR [--data-dir DIR] [--strip-s 30] [--no-quality-gate] [--out PATH]
Writes benchmarks/results/end_to_end.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasets.records import read_record  # noqa: E402
from datasets.splits import DS2, default_mitdb_dir  # noqa: E402
from edge_runtime.aami import CLASS_NAMES, classes_of  # noqa: E402
from edge_runtime.detector import nearest_reference  # noqa: E402
from edge_runtime.interpreter import Int8Classifier  # noqa: E402
from edge_runtime.manifest import Manifest  # noqa: E402
from edge_runtime.strip import classify_strip  # noqa: E402
from simulation.metrics import classification_report  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TOLERANCE_S = 0.15


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="a `fedbeat export` directory")
    parser.add_argument("--data-dir", type=Path, default=default_mitdb_dir())
    parser.add_argument("--strip-s", type=float, default=30.0)
    parser.add_argument("--records", default=",".join(DS2), help="comma-separated records (default: DS2, for the final report)")
    parser.add_argument("--no-quality-gate", action="store_true", help="classify every detected beat (to measure what the gate prevents)")
    parser.add_argument("--out", type=Path, default=RESULTS / "end_to_end.json")
    args = parser.parse_args()
    manifest = Manifest.read(args.model / "manifest.json")
    classifier = Int8Classifier(args.model / "model_int8.tflite")
    labels, predicted = [], []
    counts = {"strips": 0, "usable_strips": 0, "reference_beats": 0, "detected": 0, "classified": 0, "matched": 0, "unclassified_reference_beats": 0}
    per_record = {}
    for record_name in args.records.split(","):
        record = read_record(args.data_dir / record_name)
        classes = classes_of(record.ann_symbols)
        beats = classes >= 0
        reference, reference_class = record.ann_samples[beats], classes[beats]
        strip = int(args.strip_s * record.fs_hz)
        tolerance = int(TOLERANCE_S * record.fs_hz)
        calls = {"V_or_S_calls": 0, "unmatched_V_or_S_calls": 0}
        for start in range(0, record.signal.size - strip + 1, strip):
            in_strip = (reference >= start) & (reference < start + strip)
            counts["strips"] += 1
            counts["reference_beats"] += int(in_strip.sum())
            found = classify_strip(record.signal[start : start + strip], record.fs_hz, manifest.beat_spec, classifier, quality_gate=not args.no_quality_gate)
            counts["usable_strips"] += int(found.quality.unreadable is None)
            counts["detected"] += int(found.r_samples.size)
            counts["classified"] += int(found.classes.size)
            match = nearest_reference(found.r_samples[found.classified] + start, reference[in_strip], tolerance)
            ectopic = np.isin(found.classes, [CLASS_NAMES.index("S"), CLASS_NAMES.index("V")])
            calls["V_or_S_calls"] += int(ectopic.sum())
            calls["unmatched_V_or_S_calls"] += int((ectopic & (match < 0)).sum())
            counts["matched"] += int((match >= 0).sum())
            counts["unclassified_reference_beats"] += int(in_strip.sum() - np.unique(match[match >= 0]).size)
            labels.append(reference_class[in_strip][match[match >= 0]])
            predicted.append(found.classes[match >= 0])
        per_record[record_name] = {**calls, "unmatched_share": round(calls["unmatched_V_or_S_calls"] / max(calls["V_or_S_calls"], 1), 4)}
    report = classification_report(np.concatenate(labels), np.concatenate(predicted))
    result = {"strip_s": args.strip_s, "quality_gate": not args.no_quality_gate, "records": args.records.split(","), "counts": counts,
              "false_ectopic_calls": per_record, "end_to_end": report, "model": str(args.model)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    unmatched = sum(r["unmatched_V_or_S_calls"] for r in per_record.values())
    print(json.dumps({"counts": counts, "unmatched_V_or_S_calls": unmatched, "f1": {k: round(v["f1"], 3) for k, v in report["per_class"].items()},
                      "macro_f1": round(report["macro_f1"], 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
