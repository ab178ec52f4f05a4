"""The committed MIT-BIH reference: federated (1,000 watches, 100 per round, 20 % dropout) over several
seeds, the same with rotated 1-bit compression, and centralized on the same people and budget.

The configuration is the one ``benchmarks/selection.py`` chose on validation people (best mean
macro-F1 over its folds; DS2 plays no part in it); DS2 is read here once per run, for the report.

Usage: python benchmarks/mitdb_reference.py [--data-dir DIR] [--rounds R] [--seeds 0,1,2] [--compression-seeds 0]
Writes benchmarks/results/mitdb_reference.json = {"federated" (seed 0), "centralized", "seeds", "validation",
"per_record", "commands"} and copies the seed-0 federated run's PNG plots beside it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from datasets.splits import default_mitdb_dir  # noqa: E402
from selection import load_results, rule_decision  # noqa: E402  (benchmarks/, this script's directory)

RESULTS = ROOT / "benchmarks" / "results"
SCORES = {"S_f1": ("S", "f1"), "S_se": ("S", "sensitivity"), "S_ppv": ("S", "ppv"), "V_f1": ("V", "f1"), "V_se": ("V", "sensitivity"), "V_ppv": ("V", "ppv")}


def chosen_variant() -> tuple[str, list[str], dict]:
    """The variant the selection rule keeps or chooses (simulation.model_selection.MarginRule against
    benchmarks/selection.py's configuration in force) from the validation scores: the all-people
    folds' (selection_all_people.json) with the DS1 folds' veto (selection.json)."""
    selection = load_results()
    name, _ = rule_decision(selection, load_results("_all_people") or None)
    return name, selection[name]["flags"], selection


def scores(summary: dict) -> dict:
    per_class = summary["test"]["per_class"]
    return {**{k: per_class[c][m] for k, (c, m) in SCORES.items()}, "macro_f1": summary["test"]["macro_f1"]}


def spread(runs: list[dict]) -> dict:
    return {k: {"mean": float(np.mean([r[k] for r in runs])), "std": float(np.std([r[k] for r in runs]))} for k in runs[0]}


def per_record_table(per_record: dict) -> str:
    """Markdown rows of DS2 people with S or V beats: where the model misses, person by person."""
    lines = ["| record | S beats | S Se | S +P | V beats | V Se | V +P |", "|---|---|---|---|---|---|---|"]
    for name, row in per_record.items():
        s, v = row["S"], row["V"]
        if s["support"] or v["support"]:
            lines.append(f"| {name} | {s['support']} | {s['sensitivity']:.2f} | {s['ppv']:.2f} | {v['support']} | {v['sensitivity']:.2f} | {v['ppv']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_mitdb_dir(), help="MIT-BIH mitdb (default $FEDBEAT_DATA or ../shared/data/mitdb)")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--compression-seeds", default="0", help="seeds of the rotated1bit runs")
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("MIT-BIH not found: pass --data-dir or set FEDBEAT_DATA")
    variant, flags, selection = chosen_variant()
    fedbeat = str(Path(sys.executable).with_name("fedbeat"))
    common = ["--dataset", "mitdb", "--data-dir", str(args.data_dir), "--clients", "1000", "--clients-per-round", "100",
              "--dropout", "0.2", "--rounds", str(args.rounds), "--partition", "patient", "--algorithm", "fedavg", *flags]
    commands = {f"federated-{s}": [fedbeat, "simulate", *common, "--seed", s, "--out", f"runs/mitdb_fedavg_{s}", "--json"] for s in args.seeds.split(",")}
    commands |= {f"rotated1bit-{s}": [fedbeat, "simulate", *common, "--seed", s, "--compression", "rotated1bit", "--out", f"runs/mitdb_rotated_{s}", "--json"]
                 for s in args.compression_seeds.split(",") if s}
    commands["centralized-0"] = [fedbeat, "centralized", *common, "--seed", "0", "--out", "runs/mitdb_centralized", "--json"]
    summaries = {}
    for name, command in commands.items():
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            print(completed.stderr[-3000:], file=sys.stderr)
            return 1
        summaries[name] = json.loads(completed.stdout)
        print(name, {k: round(v, 3) for k, v in scores(summaries[name]).items()}, flush=True)
    first = min(n for n in summaries if n.startswith("federated-"))
    result = {
        "federated": summaries[first],
        "centralized": summaries["centralized-0"],
        "seeds": {kind: spread([scores(s) for n, s in summaries.items() if n.startswith(kind + "-")]) for kind in ("federated", "rotated1bit", "centralized")
                  if any(n.startswith(kind + "-") for n in summaries)},
        "runs": {name: scores(s) for name, s in summaries.items()},
        "validation": {"chosen": variant, "flags": flags, "selection": selection},
        "per_record": summaries[first]["test"]["per_record"],
        "commands": [" ".join(["fedbeat", *c[1:]]) for c in commands.values()],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mitdb_reference.json").write_text(json.dumps(result, indent=2) + "\n")
    for png in ("rounds.png", "confusion.png"):
        shutil.copy(ROOT / "runs" / f"mitdb_fedavg_{first.split('-')[1]}" / png, RESULTS / f"mitdb_reference_{png}")
    for kind, table in result["seeds"].items():
        print(kind, {k: f"{v['mean']:.3f}±{v['std']:.3f}" for k, v in table.items()})
    print(per_record_table(result["per_record"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
