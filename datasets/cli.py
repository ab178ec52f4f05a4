"""`fedbeat data ...`: inspect, partition and synthesise ECG datasets."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from datasets.loading import load_people, load_split
from datasets.partition import SCHEMES, PartitionConfig, partition, population_summary
from datasets.splits import SPLITS, resolve_data_dir, split_records
from datasets.synthetic import write_synthetic_dataset
from simulation.config import ConfigError
from edge_runtime.aami import CLASS_NAMES, class_counts


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect, partition and synthesise ECG datasets")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="{summary,partition,synth}")

    summary = commands.add_parser("summary", help="AAMI class counts of the DS1 (train) and DS2 (test) splits and of further training databases")
    _add_source_arguments(summary)
    summary.add_argument("--extra-data-dir", action="append", default=[], help="a further WFDB database whose people join training (repeatable)")
    summary.set_defaults(handler=run_summary)

    deal = commands.add_parser("partition", help="deal DS1 into smartwatch clients and audit the result")
    _add_source_arguments(deal)
    deal.add_argument("--scheme", choices=SCHEMES, default="patient")
    deal.add_argument("--clients", type=int, default=PartitionConfig.clients)
    deal.add_argument("--strips-per-client", type=int, default=PartitionConfig.strips_per_client, help="30 s strips per watch (mean for --scheme quantity)")
    deal.add_argument("--sigma", type=float, default=PartitionConfig.quantity_sigma, help="log-normal sigma of strip counts (--scheme quantity)")
    deal.add_argument("--alpha", type=float, default=PartitionConfig.alpha, help="Dirichlet concentration (--scheme dirichlet)")
    deal.add_argument("--seed", type=int, default=0)
    deal.set_defaults(handler=run_partition)

    synth = commands.add_parser("synth", help="write synthetic ECGSYN-style WFDB records with beat annotations")
    synth.add_argument("--out", type=Path, required=True, help="directory to write records into")
    synth.add_argument("--subjects", type=int, default=24)
    synth.add_argument("--minutes", type=float, default=10.0)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=run_synth)


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="WFDB directory (MIT-BIH mitdb or synthetic); default $FEDBEAT_DATA")
    parser.add_argument("--lead", help="signal name of the lead to use (default: the first of MLII, ECG1, II, ECG present)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON only")


def run_summary(args: argparse.Namespace) -> int:
    tables = {split: load_split(args.data_dir, split, lead=args.lead) for split in SPLITS}
    tables.update({Path(extra).name: load_people(extra, lead=args.lead) for extra in args.extra_data_dir})
    counts = {name: class_counts(table.labels) for name, table in tables.items()}
    counts["people"] = {name: len(table.patients) for name, table in tables.items()}
    counts["dropped"] = {name: int(sum(table.dropped)) for name, table in tables.items()}
    if args.json:
        print(json.dumps(counts))
        return 0
    print(f"{'source':<8}{'people':>7}" + "".join(f"{name:>9}" for name in CLASS_NAMES) + f"{'total':>9}{'dropped':>9}")
    for name in tables:
        row = counts[name]
        print(f"{name:<8}{counts['people'][name]:>7}" + "".join(f"{row[c]:>9,}" for c in CLASS_NAMES) + f"{sum(row.values()):>9,}{counts['dropped'][name]:>9,}")
    print("dropped: annotations without a complete window and RR context at a record's edges, or past its end", file=sys.stderr)
    return 0


def run_partition(args: argparse.Namespace) -> int:
    try:
        config = PartitionConfig(
            scheme=args.scheme, clients=args.clients, strips_per_client=args.strips_per_client,
            quantity_sigma=args.sigma, alpha=args.alpha, seed=args.seed,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from error
    table = load_split(args.data_dir, "DS1", lead=args.lead)
    test_patients = split_records(resolve_data_dir(args.data_dir))["DS2"]
    summary = population_summary(partition(table, config), table, test_patients)
    if args.json:
        print(json.dumps(summary))
        return 0
    sizes = summary["examples_per_client"]
    print(
        f"{summary['clients']:,} clients from {summary['patients']} patients ({config.scheme}); "
        f"beats per client min {sizes['min']} / median {sizes['median']} / max {sizes['max']}; "
        f"max patients per client {summary['max_patients_per_client']}; test patients in train {summary['test_patients_in_train']}"
    )
    return 0


def run_synth(args: argparse.Namespace) -> int:
    if args.subjects < 1 or args.minutes <= 0:
        raise ConfigError(f"--subjects must be >= 1 and --minutes positive, got {args.subjects} and {args.minutes}")
    names = write_synthetic_dataset(args.out, subjects=args.subjects, minutes=args.minutes, seed=args.seed)
    print(f"wrote {len(names)} records ({args.minutes:g} min each) to {args.out}", file=sys.stderr)
    return 0
