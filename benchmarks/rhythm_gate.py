"""The AF gate's thresholds (edge_runtime.rhythm), chosen on the training side only (DS2 is not read).

Each validation fold of DS1 people is classified by the global model of a federated run that
never saw them (`fedbeat simulate ... --validation-fold K`, exported: the same fold models as
`benchmarks/personalization.py select`). For each pair of thresholds (RR irregularity,
atrial activity) an S call where the rhythm is irregular and the P wave weak reads N; scored:
the folds' pooled S Se, +P and F1, and the share of the svdb people's annotated S beats the
pair would hide (those people train every fold model, so only the gate's rule, not the model,
is judged on them). Chosen: the best pooled S F1 among pairs hiding at most MAX_HIDDEN_S of
the svdb S beats (an RR-only gate, the first version, hid 51 % of them: runs of premature
atrial beats and pauses are irregular too). It must be edge_runtime.rhythm's constants.

Usage: python benchmarks/rhythm_gate.py [--fold-export 0=DIR ... --fold-export 4=DIR] [--data-dir DIR] [--svdb DIR]
(default: the fold exports `benchmarks/validation_folds.py` writes)
Writes benchmarks/results/rhythm_gate.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasets.loading import load_people, load_split  # noqa: E402
from datasets.splits import default_mitdb_dir, shared_database_dir  # noqa: E402
from edge_runtime.interpreter import TrainableModel  # noqa: E402
from edge_runtime.aami import CLASS_NAMES  # noqa: E402
from edge_runtime.rhythm import IRREGULAR_NRMSSD, WEAK_ATRIAL_ACTIVITY, fibrillation_like, without_s_in_fibrillation  # noqa: E402
from simulation.beat_data import model_inputs, rhythm_features  # noqa: E402
from simulation.metrics import classification_report  # noqa: E402
from simulation.runner import validation_people  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from validation_folds import fold_exports  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FOLDS = 5
IRREGULARITY = (0.15, 0.2, 0.25, 0.3, 0.4, float("inf"))
ATRIAL = (0.08, 0.1, 0.12, 0.15, 0.2, 0.25, float("inf"))
MAX_HIDDEN_S = 0.05
S = CLASS_NAMES.index("S")


def s_scores(labels: np.ndarray, predictions: np.ndarray) -> dict:
    s = classification_report(labels, predictions)["per_class"]["S"]
    return {k: s[k] for k in ("support", "sensitivity", "ppv", "f1")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_mitdb_dir())
    parser.add_argument("--svdb", type=Path, default=shared_database_dir("svdb"))
    parser.add_argument("--fold-export", action="append", default=[], metavar="K=DIR", help="fold K's global model export (default: runs/validation_folds)")
    args = parser.parse_args()
    if args.data_dir is None or args.svdb is None:
        parser.error("needs MIT-BIH (--data-dir or FEDBEAT_DATA) and svdb (--svdb)")
    exports = fold_exports(args.fold_export)
    if not exports:
        parser.error("no fold models: build them with python benchmarks/validation_folds.py, or pass --fold-export K=DIR")
    ds1 = load_split(args.data_dir, "DS1")  # DS1 only: DS2 is not read here
    folds = validation_people(ds1, folds=FOLDS, seed=0)
    per_fold = {}
    for k, export in sorted(exports.items()):
        table = ds1.of_patients(folds[k])
        per_fold[k] = (table.labels, TrainableModel(export / "model_train.tflite").probabilities(*model_inputs(table)).argmax(axis=1), *rhythm_features(table))
    svdb = load_people(args.svdb)
    svdb_irregularity, svdb_atrial = rhythm_features(svdb)
    svdb_s = svdb.labels == S
    labels = np.concatenate([f[0] for f in per_fold.values()])
    candidates = {}
    for irregular, weak in itertools.product(IRREGULARITY, ATRIAL):
        thresholds = {"irregular": irregular, "weak": weak}
        gated = {k: without_s_in_fibrillation(calls, fibrillation_like(irr, atr, **thresholds)) for k, (_, calls, irr, atr) in per_fold.items()}
        candidates[f"irregularity > {irregular}, atrial activity < {weak}"] = {
            "irregularity": irregular, "atrial_activity": weak,
            "svdb_S_hidden": float(np.mean(fibrillation_like(svdb_irregularity, svdb_atrial, **thresholds)[svdb_s])),
            "pooled_S": s_scores(labels, np.concatenate(list(gated.values()))),
            "folds_S_f1": {str(k): s_scores(per_fold[k][0], gated[k])["f1"] for k in gated},
        }
    safe = [name for name, row in candidates.items() if row["svdb_S_hidden"] <= MAX_HIDDEN_S]
    chosen = max(safe, key=lambda name: candidates[name]["pooled_S"]["f1"])
    result = {"protocol": __doc__.split("\n\n")[1], "folds": {str(k): list(folds[k]) for k in exports},
              "svdb_S_beats": int(svdb_s.sum()), "max_hidden_S": MAX_HIDDEN_S, "chosen": chosen, "candidates": candidates}
    (RESULTS / "rhythm_gate.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, row in sorted(candidates.items(), key=lambda item: -item[1]["pooled_S"]["f1"])[:12]:
        pooled = row["pooled_S"]
        print(f"{name}: svdb S hidden {row['svdb_S_hidden']:.3f}  validation S Se {pooled['sensitivity']:.3f} +P {pooled['ppv']:.3f} F1 {pooled['f1']:.3f}")
    row = candidates[chosen]
    print("chosen:", chosen, "" if (row["irregularity"], row["atrial_activity"]) == (IRREGULAR_NRMSSD, WEAK_ATRIAL_ACTIVITY) else "(not edge_runtime.rhythm's constants: update them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
