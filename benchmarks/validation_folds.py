"""The global models the training-side selections score: one federated run per validation fold.

Each fold's run trains the reference configuration (the variant `benchmarks/selection.py` chose,
as `benchmarks/mitdb_reference.py` runs it) on every training person outside that fold and
evaluates on the fold (`fedbeat simulate --validation-fold K`: DS2 is never opened), then
`fedbeat export` writes the TFLite models the device-side selections need:
`benchmarks/rhythm_gate.py` (the AF gate's thresholds, on folds of DS1 people) and
`benchmarks/personalization.py select` (the personalisation recipe, on folds of every
training-side person: `--population all`). About 5 minutes per fold on 2 cores.

Usage: python benchmarks/validation_folds.py [--data-dir DIR] [--population ds1|all] [--folds 0,1,2,3,4] [--out DIR]
Writes OUT/foldK/ (the run) and OUT/foldK/export/ (OUT: runs/validation_folds, or
runs/validation_folds_all_people); a fold whose export exists is left as it is.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasets.splits import default_mitdb_dir  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from mitdb_reference import chosen_variant  # noqa: E402
from selection import SUFFIX  # noqa: E402

FOLDS = 5


def fold_models_dir(population: str) -> Path:
    """Where the fold models of a validation population live by default."""
    return ROOT / "runs" / f"validation_folds{SUFFIX[population]}"


def fold_exports(given: list[str], population: str = "ds1") -> dict[int, Path]:
    """Fold -> export directory: the selection scripts' ``--fold-export K=DIR`` items, else every
    fold export of ``population``'s fold models (empty when neither exists)."""
    if given:
        return {int(k): Path(d) for k, d in (item.split("=", 1) for item in given)}
    out = fold_models_dir(population)
    return {k: out / f"fold{k}" / "export" for k in range(FOLDS) if (out / f"fold{k}" / "export" / "manifest.json").is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_mitdb_dir())
    parser.add_argument("--folds", default=",".join(str(k) for k in range(FOLDS)))
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--population", choices=list(SUFFIX), default="ds1", help="whom the folds deal (fedbeat simulate --validation-population)")
    parser.add_argument("--out", type=Path, help="default: runs/validation_folds, or runs/validation_folds_all_people")
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("MIT-BIH not found: pass --data-dir or set FEDBEAT_DATA")
    out = args.out or fold_models_dir(args.population)
    _, flags, _ = chosen_variant()
    fedbeat = str(Path(sys.executable).with_name("fedbeat"))
    for fold in (int(k) for k in args.folds.split(",")):
        run = out / f"fold{fold}"
        if (run / "export" / "manifest.json").is_file():
            print(f"fold {fold}: {run / 'export'} exists", flush=True)
            continue
        simulate = [fedbeat, "simulate", "--dataset", "mitdb", "--data-dir", str(args.data_dir), "--clients", "1000", "--clients-per-round", "100",
                    "--dropout", "0.2", "--rounds", str(args.rounds), "--partition", "patient", "--algorithm", "fedavg", *flags,
                    "--seed", "0", "--validation-fold", str(fold), "--validation-folds", str(FOLDS),
                    "--validation-population", args.population, "--out", str(run), "--json"]
        export = [fedbeat, "export", "--model", str(run / "model.keras"), "--out", str(run / "export"), "--dataset", "mitdb", "--data-dir", str(args.data_dir)]
        for command in (simulate, export):
            completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                print(completed.stderr[-3000:], file=sys.stderr)
                return 1
        print(f"fold {fold}: {run / 'export'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
