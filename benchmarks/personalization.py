"""On-watch personalisation (patient-adaptable protocol): the recipe chosen on validation people, then DS2.

  select: each recipe of the grid personalises the people of every validation fold (all five by default; first 5 minutes
          labelled, the rest scored), each fold with the global model of a federated run that
          never saw them (`fedbeat simulate ... --validation-fold K`, exported). DS2 is not read.
          The folds of every training-side person (--population all: DS1 and svdb, 80 wearers)
          choose the recipe; the folds of DS1 people (--population ds1, 21 wearers) are scored beside.
  report: the chosen recipe (PersonalizationRecipe's defaults, checked against the selection) on
          every DS2 wearer with the reference run's global model, 3 seeds, per wearer and pooled;
          the device cost of one personalisation in the device-only venv.

Usage:
  python benchmarks/personalization.py select [--population all|ds1] [--fold-export K=DIR ...] [--data-dir DIR] [--svdb DIR]
      (default: benchmarks/validation_folds.py's exports of that population)
  python benchmarks/personalization.py report --model EXPORT [--data-dir DIR] [--seeds 0,1,2] [--device-python .venv-device/bin/python]
Writes benchmarks/results/personalization_selection_all_people.json (or personalization_selection.json
for ds1), or personalization.json and personalization_per_wearer.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasets.beat_table import BeatTable  # noqa: E402
from datasets.loading import load_split  # noqa: E402
from datasets.splits import default_mitdb_dir, shared_database_dir  # noqa: E402
from edge_runtime.manifest import Manifest  # noqa: E402
from edge_runtime.personalization import PersonalizationRecipe  # noqa: E402
from models.personalization_benchmark import format_table, plot_per_wearer, report, select_recipe  # noqa: E402
from simulation.runner import training_side, validation_fold_people  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from selection import SUFFIX  # noqa: E402
from validation_folds import fold_exports  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DECIDING_POPULATION = "all"
"""The folds whose wearers choose the recipe: every training-side person (80 wearers, not DS1's 21)."""
FOLDS = 5


def selection_path(population: str) -> Path:
    return RESULTS / f"personalization_selection{SUFFIX[population]}.json"


def chosen_recipe() -> PersonalizationRecipe:
    """The recipe selection chose; the report refuses to run when the defaults are not it."""
    chosen = json.loads(selection_path(DECIDING_POPULATION).read_text())
    return PersonalizationRecipe(**chosen["recipes"][chosen["chosen"]]["recipe"])


def validation_wearers(data_dir: Path, population: str = "ds1", svdb: Path | None = None) -> tuple[BeatTable, list[tuple[str, ...]]]:
    """The training side's people and their validation folds (as `fedbeat simulate
    --validation-population` deals them): all selection ever reads."""
    ds1, everyone = training_side(data_dir, [str(svdb)] if population == "all" else [])
    return everyone, validation_fold_people(ds1, everyone, population=population, folds=FOLDS, seed=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["select", "report"])
    parser.add_argument("--data-dir", type=Path, default=default_mitdb_dir())
    parser.add_argument("--fold-export", action="append", default=[], metavar="K=DIR", help="select: fold K's global model export")
    parser.add_argument("--population", choices=list(SUFFIX), default=DECIDING_POPULATION, help="select: whose validation folds")
    parser.add_argument("--svdb", type=Path, default=shared_database_dir("svdb"), help="select --population all: the svdb records")
    parser.add_argument("--model", type=Path, help="report: the reference run's export")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--device-python", help="report: the device-only venv's python, for the cost of one personalisation")
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("MIT-BIH not found: pass --data-dir or set FEDBEAT_DATA")
    if args.mode == "select":
        exports = fold_exports(args.fold_export, args.population)
        if not exports:
            parser.error(f"no fold models: build them with python benchmarks/validation_folds.py --population {args.population}, or pass --fold-export K=DIR")
        if args.population == "all" and args.svdb is None:
            parser.error("--population all needs the svdb records: pass --svdb DIR")
        people, folds = validation_wearers(args.data_dir, args.population, args.svdb)
        setup = {"folds": {str(k): list(folds[k]) for k in exports}, "fold_models": {str(k): Manifest.read(d / "manifest.json").model_version for k, d in exports.items()}}
        earlier = json.loads(selection_path(args.population).read_text()) if selection_path(args.population).is_file() else {}
        scored = earlier.get("recipes") if all(earlier.get(k) == v for k, v in setup.items()) else None  # same people, same fold models
        result = select_recipe(people, exports, folds, scored=scored)
        result = {"protocol": __doc__.split("\n\n")[1].split("report:")[0].strip(), "population": args.population, **setup, **result}
        selection_path(args.population).write_text(json.dumps(result, indent=2) + "\n")
        print("chosen:", result["chosen"])
        return 0
    if args.model is None:
        parser.error("report needs --model EXPORT (the reference run's global model)")
    if chosen_recipe() != PersonalizationRecipe():
        print(f"PersonalizationRecipe's defaults are not the selected recipe {dataclasses.asdict(chosen_recipe())}", file=sys.stderr)
        return 1
    result = report(args.model, load_split(args.data_dir, "DS2"), seeds=tuple(int(s) for s in args.seeds.split(",")), device_python=args.device_python)
    (RESULTS / "personalization.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_per_wearer(result, RESULTS / "personalization_per_wearer.png", "DS2 wearers, last 25 minutes: global vs personal model")
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
