"""Choices made on validation people only: each variant trained on DS1 minus a fold of DS1 people
(plus any extra databases) and scored on that fold. DS2 is never opened (``--validation-fold``).

Usage: python benchmarks/selection.py [--data-dir DIR] [--svdb DIR] [--folds 5] [--use-folds 0,1,2] [--population ds1|all] [--rounds 100] [--only NAME] [--decide-only]
Writes benchmarks/results/selection.json: per variant, per fold S/V F1 and macro-F1, and their means;
then applies the selection rule (``simulation.model_selection.MarginRule``) against the
configuration in force and writes its decision to benchmarks/results/selection_decision.json.
``--population all`` deals every training-side person (DS1 and svdb, about 16 per fold) into the
folds instead of the DS1 people only (4-5 per fold): selection_all_people.json and
selection_decision_all_people.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasets.splits import default_mitdb_dir, shared_database_dir  # noqa: E402
from simulation.config import VALIDATION_POPULATIONS  # noqa: E402
from simulation.metrics import pooled_f1  # noqa: E402
from simulation.model_selection import MarginRule  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SUFFIX = {"ds1": "", "all": "_all_people"}
"""Per validation population (simulation.config.VALIDATION_POPULATIONS), the suffix of its result
files and run directories, here and in the device-side selections."""
IN_FORCE = "+ svdb people, FedAvgM (server momentum 0.9, server lr 0.1)"
"""The configuration ``benchmarks/mitdb_reference.py`` trains: 3 local epochs (chosen at stop 31,
replaced by 1 epoch at stop 33 on a +0.005 mean of 3 DS1 folds, back at stop 35 by the rule on
the all-people folds, +0.011 there and +0.011 on all five DS1 folds)."""
CENTRALIZED = "centralized training, the people and example budget of FedAvgM with 1 local epoch"
"""Scored beside the candidates (``fedbeat centralized``) to size federated learning's cost on
validation people; never a challenger (the product is federated)."""


def variants(svdb: str | None) -> dict[str, list[str]]:
    """name -> flags added to the common federated setup (each one change against the baseline)."""
    table = {"baseline (DS1 only)": []}
    if svdb:
        table["+ svdb people"] = ["--extra-data-dir", svdb]
        table["+ svdb people, client lr 0.1"] = ["--extra-data-dir", svdb, "--client-learning-rate", "0.1"]
        fedavgm = ["--extra-data-dir", svdb, "--server-momentum", "0.9", "--server-learning-rate", "0.1"]
        table["+ svdb people, FedAvgM (server momentum 0.9, server lr 0.1)"] = fedavgm
        table["+ svdb people, FedAvgM (server momentum 0.5, server lr 1)"] = ["--extra-data-dir", svdb, "--server-momentum", "0.5"]
        table["+ svdb people, FedAdam (server lr 0.003)"] = ["--extra-data-dir", svdb, "--algorithm", "fedadam", "--server-learning-rate", "0.003"]
        table["+ svdb people, FedAvgM, 1 local epoch"] = one_epoch = [*fedavgm, "--local-epochs", "1"]
        table["+ svdb people, FedAvgM, 5 local epochs"] = [*fedavgm, "--local-epochs", "5"]
        table["+ svdb people, FedAvgM, 1 local epoch, client lr 0.4"] = [*fedavgm, "--local-epochs", "1", "--client-learning-rate", "0.4"]
        table["+ svdb people, FedAvgM (server lr 0.2), 1 local epoch"] = [*fedavgm, "--local-epochs", "1", "--server-learning-rate", "0.2"]
        table["+ svdb people, FedAvgM, 1 local epoch, 200 rounds"] = [*fedavgm, "--local-epochs", "1", "--rounds", "200"]
        for decay in ("0.9", "0.95"):
            table[f"+ svdb people, FedAvgM, 1 local epoch, released average (decay {decay})"] = [*fedavgm, "--local-epochs", "1", "--release-decay", decay]
        table[CENTRALIZED] = one_epoch
        table["+ svdb people, FedAvgM, 1 local epoch, class weight power 1"] = [*one_epoch, "--class-weight-power", "1"]
        table["+ svdb people, FedAvgM, 1 local epoch, 200 watches per round"] = [*one_epoch, "--clients-per-round", "200"]
    return table


def score(summary: dict) -> dict:
    """The fold's pooled S / V F1 and macro-F1; on a fold that mixes databases, also its DS1 people's S / V F1."""
    per_class, per_record = summary["test"]["per_class"], summary["test"]["per_record"]
    scores = {"S_f1": per_class["S"]["f1"], "V_f1": per_class["V"]["f1"], "macro_f1": summary["test"]["macro_f1"], "S_support": per_class["S"]["support"]}
    ds1 = [person for person in per_record if "/" not in person]  # extra databases' people are named <database>/<record>
    if len(ds1) < len(per_record):
        scores |= {f"DS1_{name}_f1": pooled_f1(per_record, ds1, name) for name in ("S", "V")}
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_mitdb_dir())
    parser.add_argument("--svdb", default=shared_database_dir("svdb"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--use-folds", default="0,1,2", help="which folds to run; their scores join the variant's stored folds (all folds cost --folds runs per variant)")
    parser.add_argument("--population", choices=VALIDATION_POPULATIONS, default="ds1", help="whom the folds deal (fedbeat simulate --validation-population)")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--only", help="run only the variant with this name")
    parser.add_argument("--decide-only", action="store_true", help="train nothing: apply the selection rule to the stored results")
    args = parser.parse_args()
    suffix = SUFFIX[args.population]
    path = results_path(suffix)
    results = load_results(suffix)
    if args.decide_only:
        return decide(results, suffix)
    if args.data_dir is None:
        parser.error("MIT-BIH not found: pass --data-dir or set FEDBEAT_DATA")
    fedbeat = str(Path(sys.executable).with_name("fedbeat"))
    common = ["--dataset", "mitdb", "--data-dir", str(args.data_dir), "--clients", "1000", "--clients-per-round", "100", "--dropout", "0.2",
              "--rounds", str(args.rounds), "--partition", "patient", "--seed", "0", "--validation-folds", str(args.folds),
              "--validation-population", args.population, "--json"]
    folds = [int(f) for f in args.use_folds.split(",")]
    table = variants(str(args.svdb) if args.svdb else None)
    for index, (name, flags) in enumerate(table.items()):
        if args.only and name != args.only:
            continue
        runs = dict(results.get(name, {}).get("folds", {})) if results.get(name, {}).get("flags") == flags else {}
        for fold in folds:
            command = [fedbeat, "centralized" if name == CENTRALIZED else "simulate", *common, "--validation-fold", str(fold), "--out", f"runs/selection{suffix}/{index}-{fold}", *flags]
            completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                print(completed.stderr[-3000:], file=sys.stderr)
                return 1
            summary = json.loads(completed.stdout)
            assert summary["evaluated_on"].startswith("validation fold"), summary["evaluated_on"]
            runs[str(fold)] = score(summary)
            print(name, fold, runs[str(fold)], flush=True)
        scored = set.intersection(*(set(r) for r in runs.values())) - {"S_support"}
        means = {k: float(np.mean([r[k] for r in runs.values()])) for k in sorted(scored)}
        results[name] = {"flags": flags, "folds": dict(sorted(runs.items())), "mean": means}
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(name, "mean", {k: round(v, 3) for k, v in means.items()}, flush=True)
    return decide(results, suffix)


def rule_decision(results: dict, all_people: dict | None = None, rule: MarginRule = MarginRule()) -> tuple[str, list]:
    """The variant the rule keeps or chooses against IN_FORCE, and every challenger's paired gain.
    Declared at stop 35 before its all-people results: where all-people folds are scored
    (``all_people``), they decide and the DS1 folds (``results``) veto a winner that loses there."""
    def federated(scored: dict) -> dict:
        return {name: result["folds"] for name, result in scored.items() if name != CENTRALIZED}
    if all_people is None:
        return rule.decide(IN_FORCE, federated(results))
    return rule.decide_with_veto(IN_FORCE, federated(all_people), federated(results))


def results_path(suffix: str = "") -> Path:
    """selection.json (DS1 folds) or selection_all_people.json (``suffix`` "_all_people")."""
    return RESULTS / f"selection{suffix}.json"


def load_results(suffix: str = "") -> dict:
    path = results_path(suffix)
    return json.loads(path.read_text()) if path.is_file() else {}


def decide(results: dict, suffix: str = "") -> int:
    """Apply the rule to the stored scores; 1 (with the reason) when it cannot be applied."""
    rule = MarginRule()
    try:
        chosen, gains = rule_decision(load_results(), results, rule) if suffix else rule_decision(results, rule=rule)
    except ValueError as error:  # the configuration in force not yet scored, or scored on other folds
        print(f"selection rule not applied: {error}", file=sys.stderr)
        return 1
    for g in sorted(gains, key=lambda g: -g.mean):
        print(f"{g.challenger}: {rule.metric} gain {g.mean:+.4f} (se {g.standard_error:.4f}, needs {g.required:.4f}){' WINS' if g.wins else ''}")
    print(f"in force: {IN_FORCE}; rule keeps or chooses: {chosen}")
    decision = {"rule": dataclasses.asdict(rule), "in_force": IN_FORCE, "chosen": chosen, "gains": [dataclasses.asdict(g) | {"wins": g.wins} for g in gains]}
    (RESULTS / f"selection_decision{suffix}.json").write_text(json.dumps(decision, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
