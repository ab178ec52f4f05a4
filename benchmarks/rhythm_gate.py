"""The irregular-rhythm gate's threshold, chosen on validation people (DS2 is not read).

Each validation fold of DS1 people is classified by the global model of a federated run that
never saw them (`fedbeat simulate ... --validation-fold K`, exported: the same fold models as
`benchmarks/personalization.py select`); for each candidate normalised-RMSSD threshold, S calls
inside an irregular rhythm read N, and the pooled S Se, +P and F1 over all folds' people are
scored. The chosen threshold (best pooled S F1) must be edge_runtime.rhythm.IRREGULAR_NRMSSD.

Usage: python benchmarks/rhythm_gate.py --fold-export 0=DIR ... --fold-export 4=DIR [--data-dir DIR]
Writes benchmarks/results/rhythm_gate.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasets.loading import load_split  # noqa: E402
from datasets.splits import default_mitdb_dir  # noqa: E402
from edge_runtime.interpreter import TrainableModel  # noqa: E402
from edge_runtime.rhythm import IRREGULAR_NRMSSD, rr_irregularity  # noqa: E402
from simulation.beat_data import model_inputs  # noqa: E402
from simulation.metrics import classification_report  # noqa: E402
from simulation.runner import validation_people  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FOLDS = 5
CANDIDATES = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, float("inf"))
S, N = 1, 0


def fold_predictions(ds1, people: tuple[str, ...], export: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, model calls, irregularity) of one fold's people, each person in time order."""
    table = ds1.of_patients(people)
    order = np.lexsort((table.time_s, table.patient))
    model = TrainableModel(export / "model_train.tflite")
    beat, log_rr = model_inputs(table, order)
    irregularity = np.concatenate([rr_irregularity(table.time_s[order][table.patient[order] == i]) for i in range(len(table.patients))])
    return table.labels[order], model.probabilities(beat, log_rr).argmax(axis=1), irregularity


def scores(labels: np.ndarray, predictions: np.ndarray) -> dict:
    s = classification_report(labels, predictions)["per_class"]["S"]
    return {k: s[k] for k in ("support", "sensitivity", "ppv", "f1")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_mitdb_dir())
    parser.add_argument("--fold-export", action="append", default=[], metavar="K=DIR", required=True)
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("MIT-BIH not found: pass --data-dir or set FEDBEAT_DATA")
    exports = {int(k): Path(d) for k, d in (item.split("=", 1) for item in args.fold_export)}
    ds1 = load_split(args.data_dir, "DS1")  # DS1 only: DS2 is not read here
    folds = validation_people(ds1, folds=FOLDS, seed=0)
    per_fold = {k: fold_predictions(ds1, folds[k], export) for k, export in sorted(exports.items())}
    candidates = {}
    for threshold in CANDIDATES:
        gated = {k: np.where((calls == S) & (irregularity > threshold), N, calls) for k, (_, calls, irregularity) in per_fold.items()}
        labels = np.concatenate([per_fold[k][0] for k in gated])
        candidates["none" if np.isinf(threshold) else str(threshold)] = {
            "pooled_S": scores(labels, np.concatenate(list(gated.values()))),
            "folds_S_f1": {str(k): scores(per_fold[k][0], gated[k])["f1"] for k in gated},
        }
    chosen = max(candidates, key=lambda name: candidates[name]["pooled_S"]["f1"])
    result = {"protocol": __doc__.split("\n\n")[1], "folds": {str(k): list(folds[k]) for k in exports}, "chosen": chosen, "candidates": candidates}
    (RESULTS / "rhythm_gate.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, row in candidates.items():
        pooled = row["pooled_S"]
        print(f"{name:>5}: S Se {pooled['sensitivity']:.3f} +P {pooled['ppv']:.3f} F1 {pooled['f1']:.3f}  per fold {[round(v, 2) for v in row['folds_S_f1'].values()]}")
    print("chosen:", chosen, "" if chosen == str(IRREGULAR_NRMSSD) else f"(edge_runtime.rhythm.IRREGULAR_NRMSSD is {IRREGULAR_NRMSSD}: update it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
